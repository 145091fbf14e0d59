"""Teachers, students, the batched label service and cost accounting."""

from policies.mixture import MixtureSpec, MixtureTeacher
from policies.scripted import (
    ScriptedBattleSpec,
    ScriptedBattleTeacher,
    ScriptedPursuitSpec,
    ScriptedPursuitTeacher,
    ScriptedSpreadSpec,
    ScriptedSpreadTeacher,
)
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

__all__ = [
    "LabelError",
    "LabelInputError",
    "LabelRequest",
    "Labels",
    "MixtureSpec",
    "MixtureTeacher",
    "ScriptedBattleSpec",
    "ScriptedBattleTeacher",
    "ScriptedPursuitSpec",
    "ScriptedPursuitTeacher",
    "ScriptedSpreadSpec",
    "ScriptedSpreadTeacher",
    "Teacher",
    "TeacherCost",
    "TeacherError",
    "TeacherSpec",
]
