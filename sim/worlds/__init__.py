"""The native worlds: foraging (cooperative), predator_prey (competitive), spread (coordination)."""

from sim.worlds.foraging import ForagingWorld
from sim.worlds.grid import ACTION_NAMES, GridWorld
from sim.worlds.predator_prey import PredatorPreyWorld
from sim.worlds.spread import SpreadWorld

__all__ = ["ACTION_NAMES", "ForagingWorld", "GridWorld", "PredatorPreyWorld", "SpreadWorld"]
