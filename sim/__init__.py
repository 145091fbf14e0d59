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
from sim.world import ActionError, EpisodeEndedError, Step, World, WorldError

__all__ = [
    "ActionError",
    "EnvOutputError",
    "EpisodeEndedError",
    "NonFiniteOutputError",
    "PettingZooWorld",
    "Step",
    "UnsupportedEnvError",
    "World",
    "WorldError",
    "WorldParallelEnv",
    "available_worlds",
    "from_pettingzoo",
    "make_world",
    "parallel_env",
    "register_pettingzoo_envs",
]
