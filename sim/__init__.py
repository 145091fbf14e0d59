"""shepherd's simulator: batched many-agent worlds, PettingZoo views and adapters, rollouts."""

from sim.adapter import (
    EnvOutputError,
    NonFiniteOutputError,
    PettingZooWorld,
    UnsupportedEnvError,
    from_pettingzoo,
)
from sim.pettingzoo_view import WorldParallelEnv, parallel_env, register_pettingzoo_envs
from sim.registry import available_worlds, make_world
from sim.rollout import (
    BatchedPolicy,
    PolicySpec,
    RandomPolicySpec,
    RayBackend,
    RolloutBackend,
    RolloutStats,
    RolloutWorker,
    SerialBackend,
    ShardSpec,
    Trajectory,
    WorldSpec,
    make_backend,
    split_population,
)
from sim.world import ActionError, EpisodeEndedError, Step, World, WorldError

__all__ = [
    "ActionError",
    "BatchedPolicy",
    "EnvOutputError",
    "EpisodeEndedError",
    "NonFiniteOutputError",
    "PettingZooWorld",
    "PolicySpec",
    "RandomPolicySpec",
    "RayBackend",
    "RolloutBackend",
    "RolloutStats",
    "RolloutWorker",
    "SerialBackend",
    "ShardSpec",
    "Step",
    "Trajectory",
    "UnsupportedEnvError",
    "World",
    "WorldError",
    "WorldParallelEnv",
    "WorldSpec",
    "available_worlds",
    "from_pettingzoo",
    "make_backend",
    "make_world",
    "parallel_env",
    "register_pettingzoo_envs",
    "split_population",
]
