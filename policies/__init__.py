"""Teachers, students, the batched label service and cost accounting."""

from policies.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointMetadata,
    load_checkpoint,
    save_checkpoint,
)
from policies.cost import (
    DecisionCost,
    matmul_flops_per_second,
    measure_neural_teacher,
    measure_student,
)
from policies.export import OnnxPolicy, OnnxPolicySpec, export_onnx
from policies.features import NearestOffsets
from policies.llm import (
    LLMAuthError,
    LLMError,
    LLMRequestError,
    LLMStats,
    LLMTeacher,
    LLMTeacherSpec,
    LLMUnavailableError,
)
from policies.mixture import MixtureSpec, MixtureTeacher
from policies.networks import (
    NetworkConfig,
    PolicyNetwork,
    build_network,
    count_params,
    default_student_config,
    default_teacher_config,
    flops_per_decision,
    mask_logits,
)
from policies.neural import NeuralTeacher, NeuralTeacherSpec
from policies.planners import (
    ForagingPlanner,
    LocalHeuristicPolicySpec,
    LookaheadPlanner,
    PlannerSpec,
    PredatorPreyPlanner,
    SpreadPlanner,
)
from policies.scripted import (
    ScriptedBattleSpec,
    ScriptedBattleTeacher,
    ScriptedPursuitSpec,
    ScriptedPursuitTeacher,
    ScriptedSpreadSpec,
    ScriptedSpreadTeacher,
)
from policies.student import Student, StudentPolicySpec
from policies.teacher import (
    LabelError,
    LabelInputError,
    LabelRequest,
    Labels,
    Teacher,
    TeacherCost,
    TeacherError,
    TeacherSpec,
)
from policies.teacher_policy import TeacherPolicy, TeacherPolicySpec
from policies.training import (
    LabelledData,
    TrainingConfig,
    TrainingReport,
    collect_teacher_labels,
    make_neural_teacher,
    train_network,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointMetadata",
    "DecisionCost",
    "ForagingPlanner",
    "LLMAuthError",
    "LLMError",
    "LLMRequestError",
    "LLMStats",
    "LLMTeacher",
    "LLMTeacherSpec",
    "LLMUnavailableError",
    "LabelError",
    "LabelInputError",
    "LabelRequest",
    "LabelledData",
    "Labels",
    "LocalHeuristicPolicySpec",
    "LookaheadPlanner",
    "MixtureSpec",
    "MixtureTeacher",
    "NearestOffsets",
    "NetworkConfig",
    "NeuralTeacher",
    "NeuralTeacherSpec",
    "OnnxPolicy",
    "OnnxPolicySpec",
    "PlannerSpec",
    "PolicyNetwork",
    "PredatorPreyPlanner",
    "ScriptedBattleSpec",
    "ScriptedBattleTeacher",
    "ScriptedPursuitSpec",
    "ScriptedPursuitTeacher",
    "ScriptedSpreadSpec",
    "ScriptedSpreadTeacher",
    "SpreadPlanner",
    "Student",
    "StudentPolicySpec",
    "Teacher",
    "TeacherCost",
    "TeacherError",
    "TeacherPolicy",
    "TeacherPolicySpec",
    "TeacherSpec",
    "TrainingConfig",
    "TrainingReport",
    "build_network",
    "collect_teacher_labels",
    "count_params",
    "default_student_config",
    "default_teacher_config",
    "export_onnx",
    "flops_per_decision",
    "load_checkpoint",
    "make_neural_teacher",
    "mask_logits",
    "matmul_flops_per_second",
    "measure_neural_teacher",
    "measure_student",
    "save_checkpoint",
    "train_network",
]
