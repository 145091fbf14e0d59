"""Privileged planner teachers of the native worlds, and the local heuristic they must beat."""

from policies.planners.base import LookaheadPlanner
from policies.planners.foraging import ForagingPlanner
from policies.planners.local import LocalHeuristicPolicy, LocalHeuristicPolicySpec
from policies.planners.predator_prey import PredatorPreyPlanner
from policies.planners.spec import PlannerSpec
from policies.planners.spread import SpreadPlanner

__all__ = [
    "ForagingPlanner",
    "LocalHeuristicPolicy",
    "LocalHeuristicPolicySpec",
    "LookaheadPlanner",
    "PlannerSpec",
    "PredatorPreyPlanner",
    "SpreadPlanner",
]
