"""shepherd's simulator: batched many-agent worlds, PettingZoo views and adapters, rollouts."""

from sim.registry import available_worlds, make_world
from sim.world import ActionError, EpisodeEndedError, Step, World, WorldError

__all__ = [
    "ActionError",
    "EpisodeEndedError",
    "Step",
    "World",
    "WorldError",
    "available_worlds",
    "make_world",
]
