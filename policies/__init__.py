"""Teachers, students, the batched label service and cost accounting."""

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
    "Teacher",
    "TeacherCost",
    "TeacherError",
    "TeacherSpec",
]
