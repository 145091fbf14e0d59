"""Parallel rollouts: specs of a sharded population, rollout workers and their backends.

Typical use, with the serial backend (``"ray"`` needs ``ray.init()`` first):

    >>> from sim.rollout import RandomPolicySpec, WorldSpec, make_backend, split_population
    >>> shards = split_population(WorldSpec("foraging_v0", num_agents=50, seed=0),
    ...                           total_agents=100, num_workers=2)
    >>> with make_backend("serial", shards, RandomPolicySpec(seed=0)) as backend:
    ...     trajectories = backend.sample(4)
    >>> [trajectory.rewards.shape for trajectory in trajectories]
    [(4, 50), (4, 50)]
"""

from sim.rollout.backend import (
    BACKENDS,
    WORKER_ENV_VARS,
    RayBackend,
    RolloutBackend,
    SerialBackend,
    make_backend,
)
from sim.rollout.policy import NO_ACTION, BatchedPolicy, PolicySpec, RandomPolicy, RandomPolicySpec
from sim.rollout.spec import SEED_LIMIT, ShardSpec, WorldSpec, derive_seed, split_population
from sim.rollout.worker import RolloutStats, RolloutWorker, Trajectory, WorldInfo

__all__ = [
    "BACKENDS",
    "NO_ACTION",
    "SEED_LIMIT",
    "WORKER_ENV_VARS",
    "BatchedPolicy",
    "PolicySpec",
    "RandomPolicy",
    "RandomPolicySpec",
    "RayBackend",
    "RolloutBackend",
    "RolloutStats",
    "RolloutWorker",
    "SerialBackend",
    "ShardSpec",
    "Trajectory",
    "WorldInfo",
    "WorldSpec",
    "derive_seed",
    "make_backend",
    "split_population",
]
