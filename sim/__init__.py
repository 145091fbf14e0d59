"""shepherd's simulator: batched many-agent worlds, PettingZoo views and adapters, rollouts."""

from sim.pettingzoo_view import WorldParallelEnv, parallel_env, register_pettingzoo_envs
from sim.registry import available_worlds, make_world
from sim.world import ActionError, EpisodeEndedError, Step, World, WorldError

__all__ = [
    "ActionError",
    "EpisodeEndedError",
    "Step",
    "World",
    "WorldError",
    "WorldParallelEnv",
    "available_worlds",
    "make_world",
    "parallel_env",
    "register_pettingzoo_envs",
]
