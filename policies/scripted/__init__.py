"""Scripted privileged teachers for external environments wrapped by ``sim.from_pettingzoo``.

Each reads ``World.state()``, privileged information that students do not get, to
script a strong policy for one environment, and labels with a softmax over its action
scores. One module per environment:

- ``battle``: MAgent2 ``battle_v4``, focus fire from every agent's position and hp.
- ``pursuit``: SISL ``pursuit_v5``, teams that surround evaders.
- ``spread``: MPE2 ``simple_spread_v3``, one agent per landmark.
"""

from policies.scripted.battle import ScriptedBattleSpec, ScriptedBattleTeacher
from policies.scripted.pursuit import ScriptedPursuitSpec, ScriptedPursuitTeacher
from policies.scripted.spread import ScriptedSpreadSpec, ScriptedSpreadTeacher

__all__ = [
    "ScriptedBattleSpec",
    "ScriptedBattleTeacher",
    "ScriptedPursuitSpec",
    "ScriptedPursuitTeacher",
    "ScriptedSpreadSpec",
    "ScriptedSpreadTeacher",
]
