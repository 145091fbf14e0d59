"""Compute per decision: measured time, parameters and FLOPs of students and network teachers.

Times are wall-clock medians over repeated calls at one batch size, after warm-up calls,
on random float32 observations. They depend on the machine, its load and torch's thread
count, which the caller sets.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from policies.networks import count_params, flops_per_decision
from policies.neural import NeuralTeacher
from policies.student import Student
from policies.teacher import LabelRequest


@dataclasses.dataclass(frozen=True)
class DecisionCost:
    """The cost of one decision (a student's action or a teacher's label) at a batch size."""

    name: str
    """Name of the measured policy, such as ``"student"`` or a teacher id."""
    batch_size: int
    """Decisions per call."""
    us_per_decision: float
    """Median wall-clock microseconds of one call, divided by ``batch_size``."""
    params: int
    """Network parameters."""
    flops_per_decision: int
    """Floating-point operations of one decision, counted analytically."""
    repeats: int
    """Timed calls behind the median."""

    @property
    def flops_per_second(self) -> float:
        """Achieved floating-point operations per second: FLOPs per decision over its time."""
        return self.flops_per_decision / (self.us_per_decision * 1e-6) if self.us_per_decision > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and ``flops_per_second`` as plain data."""
        return dataclasses.asdict(self) | {"flops_per_second": self.flops_per_second}


def median_seconds(call: Callable[[], object], *, repeats: int, warmup: int = 2) -> float:
    """Return the median wall-clock seconds of ``call()`` over ``repeats`` runs after ``warmup`` runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_student(
    student: Student, *, batch_size: int = 1024, repeats: int = 20, warmup: int = 2, seed: int = 0
) -> DecisionCost:
    """Time ``student.act`` on ``batch_size`` random observations, every row alive, no mask."""
    obs = np.random.default_rng(seed).standard_normal((batch_size, *student.config.input_shape), np.float32)
    alive = np.ones(batch_size, dtype=bool)
    seconds = median_seconds(lambda: student.act(obs, alive, None), repeats=repeats, warmup=warmup)
    return DecisionCost(
        name="student",
        batch_size=batch_size,
        us_per_decision=seconds / batch_size * 1e6,
        params=count_params(student.module),
        flops_per_decision=student.flops_per_decision(),
        repeats=repeats,
    )


def measure_neural_teacher(
    teacher: NeuralTeacher,
    *,
    batch_size: int = 1024,
    repeats: int = 20,
    warmup: int = 2,
    seed: int = 0,
    requests: Sequence[LabelRequest] | None = None,
) -> DecisionCost:
    """Time ``teacher.label_many`` on ``batch_size`` states and return the cost per label.

    Args:
        requests: what to label in each call. ``None`` labels one request of random
            observations, which only a teacher without privileged input accepts.
            ``batch_size`` is then taken from the requests.
    """
    if requests is None:
        if teacher.requires_state:
            raise ValueError(
                f"{teacher.teacher_id} reads privileged state, so random observations cannot be labelled; "
                "pass requests recorded from a world"
            )
        obs = np.random.default_rng(seed).standard_normal((batch_size, *teacher.config.input_shape), np.float32)
        requests = [LabelRequest(obs=obs)]
    else:
        batch_size = sum(request.size for request in requests)
    requests = list(requests)
    seconds = median_seconds(lambda: teacher.label_many(requests), repeats=repeats, warmup=warmup)
    return DecisionCost(
        name=teacher.teacher_id,
        batch_size=batch_size,
        us_per_decision=seconds / batch_size * 1e6,
        params=teacher.param_count(),
        flops_per_decision=flops_per_decision(teacher.config),
        repeats=repeats,
    )


def matmul_flops_per_second(
    *, rows: int = 4096, inner: int = 2048, columns: int = 2048, repeats: int = 10, device: str = "cpu"
) -> float:
    """Measure float32 matrix-product throughput, ``2 * rows * inner * columns`` FLOPs per product.

    With the defaults, the product has the shape of one hidden layer of the default
    neural teacher on a batch of 4096 states, a ceiling for that teacher's label rate.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    left = torch.randn(rows, inner, generator=generator).to(device)
    right = torch.randn(inner, columns, generator=generator).to(device)
    out = torch.empty(rows, columns, device=device)

    def product() -> None:
        torch.matmul(left, right, out=out)
        if out.is_cuda:
            torch.cuda.synchronize()

    seconds = median_seconds(product, repeats=repeats)
    return 2.0 * rows * inner * columns / seconds
