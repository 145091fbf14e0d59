"""Prompt templates: one observation as chat messages that ask for one action name.

A template renders one agent's observation as text and lists the actions the model may
choose. Native grid worlds get a character map of the agent's ``V x V`` window with a
legend and a list of what is in view. Any other observation gets the generic template,
which prints its numbers. Every template has a version, which goes into the teacher's
version, so labels made with different prompts never share a version.

Shape letters: V the side of a grid window, C observation channels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from policies.teacher import LabelInputError
from sim.worlds import ForagingWorld, PredatorPreyWorld, SpreadWorld

LEGAL_ACTIONS_PREFIX = "Legal actions:"
"""Start of the line of the user message that lists the actions the model may choose."""

GENERIC_TEMPLATE = "generic"
"""Name of the template for observations of worlds without their own template."""

GENERIC_MAX_VALUES = 4096
"""Maximum count of numbers the generic template prints; larger observations need their own template."""

MAX_LISTED_OBJECTS = 24
"""Maximum count of objects a grid prompt lists by position, nearest first; the map still shows all."""

SYSTEM_PROMPT = (
    "You choose the next action of one agent in a multi-agent simulation. "
    "Reply with exactly one action name from the list of legal actions, in lower case, "
    "and nothing else."
)


class PromptTemplate:
    """Renders one observation as chat messages that request one action name."""

    name: str
    """The world this template is for, or ``"generic"``."""
    version: int
    """Raised whenever the rendered text changes, because the labels may change with it."""

    def check_observation_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ``LabelInputError`` unless one observation of ``shape`` can be rendered."""

    def describe(self, obs: np.ndarray) -> str:
        """Return the text that describes one observation: the task and the agent's view."""
        raise NotImplementedError

    def messages(self, obs: np.ndarray, legal_actions: Sequence[str]) -> list[dict[str, str]]:
        """Return the system and user messages for one observation.

        Args:
            obs: one observation, of the shape ``check_observation_shape`` accepts.
            legal_actions: names of the actions the model may choose, in action order.
        """
        user = f"{self.describe(obs)}\n\n{LEGAL_ACTIONS_PREFIX} {', '.join(legal_actions)}\nAction:"
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ]


@dataclasses.dataclass(frozen=True)
class GridChannel:
    """Display settings of one observation channel in a grid prompt."""

    name: str
    """The world's name for the channel, from its ``channel_names``."""
    symbol: str
    """One character marking cells where the channel is non-zero."""
    noun: str
    """Noun for the content of a non-zero cell, used in the legend and the list of objects."""
    show_value: bool = False
    """True to print the channel's value in the list (food level), False to print a count."""


class GridPromptTemplate(PromptTemplate):
    """Renders a native world's egocentric (V, V, C) window as a character map.

    Row 1 of the map is the farthest up and column 1 the farthest left, as in the
    window: moving ``up`` decreases the row. The agent itself is ``@`` at the centre.
    ``channels`` are in map precedence: where several are non-zero in one cell, the map
    shows the symbol of the earliest, and the list of objects names them all. A channel
    with the symbol ``" "`` is neither drawn nor listed.
    """

    def __init__(
        self,
        *,
        name: str,
        version: int,
        task: str,
        channel_names: Sequence[str],
        channels: Sequence[GridChannel],
    ) -> None:
        known = {channel.name for channel in channels}
        missing = [channel for channel in channel_names if channel not in known]
        unknown = sorted(known - set(channel_names))
        if missing or unknown:
            raise ValueError(
                f"{name}: the prompt template's channels must match the world's; "
                f"missing {missing}, unknown {unknown}"
            )
        self.name = name
        self.version = version
        self.task = task
        self.channel_names = tuple(channel_names)
        self.channels = tuple(channels)  # in map precedence, not observation order
        self._channel_index = {channel.name: self.channel_names.index(channel.name) for channel in channels}

    def check_observation_shape(self, shape: tuple[int, ...]) -> None:
        num_channels = len(self.channel_names)
        if len(shape) != 3 or shape[0] != shape[1] or shape[0] % 2 != 1 or shape[2] != num_channels:
            raise LabelInputError(
                f"{self.name} prompt: observations must be (V, V, {num_channels}) windows with odd V "
                f"and channels {', '.join(self.channel_names)}, got shape {shape}; use the "
                f"{GENERIC_TEMPLATE!r} template for other observations"
            )

    def task_for(self, obs: np.ndarray) -> str:
        """Return the task text for the agent that made ``obs``."""
        return self.task

    def describe(self, obs: np.ndarray) -> str:
        side = obs.shape[0]
        return "\n".join(
            [
                self.task_for(obs),
                "",
                f"Your view ({side} x {side} cells; row 1 is the farthest up, column 1 the farthest left):",
                self.render_map(obs),
                f"Legend: {self.legend()}",
                self.list_objects(obs),
            ]
        )

    def legend(self) -> str:
        """Return the meaning of every map symbol."""
        entries = ["@ you", ". empty"]
        entries += [f"{channel.symbol} {channel.noun}" for channel in self.channels if channel.symbol != " "]
        return ", ".join(entries)

    def render_map(self, obs: np.ndarray) -> str:
        """Return the window as V lines of V symbols."""
        side = obs.shape[0]
        centre = side // 2
        cells = np.full((side, side), ".", dtype="<U1")  # (V, V)
        # Paint the later channels first, so the earliest non-zero channel ends up on top.
        for channel in reversed(self.channels):
            if channel.symbol != " ":
                cells[obs[:, :, self._channel_index[channel.name]] > 0] = channel.symbol
        cells[centre, centre] = "@"
        return "\n".join("".join(row) for row in cells)

    def list_objects(self, obs: np.ndarray) -> str:
        """Return the non-wall objects in view with their offsets from the agent, nearest first."""
        side = obs.shape[0]
        centre = side // 2
        found = []
        for channel in self.channels:
            if channel.name == "wall" or channel.symbol == " ":
                continue
            index = self._channel_index[channel.name]
            for row, column in np.argwhere(obs[:, :, index] > 0):
                dy, dx = int(row) - centre, int(column) - centre
                value = float(obs[row, column, index])
                found.append((max(abs(dy), abs(dx)), abs(dy) + abs(dx), dy, dx, channel, value))
        if not found:
            return "In view: nothing but walls and empty cells."

        found.sort(key=lambda item: item[:4])  # Chebyshev, then Manhattan distance, then position
        lines = ["In view:"]
        for _, _, dy, dx, channel, value in found[:MAX_LISTED_OBJECTS]:
            if channel.show_value:
                amount = f" (value {value:.2f})"
            elif value != 1:
                amount = f" x{value:g}"
            else:
                amount = ""
            lines.append(f"- {channel.noun}{amount} at {describe_offset(dy, dx)}")
        if len(found) > MAX_LISTED_OBJECTS:
            lines.append(f"- and {len(found) - MAX_LISTED_OBJECTS} more farther away")
        return "\n".join(lines)


class PredatorPreyPromptTemplate(GridPromptTemplate):
    """The predator_prey map, with a task that depends on the agent's team."""

    def __init__(self, *, predator_task: str, prey_task: str, **kwargs: object) -> None:
        super().__init__(task=predator_task, **kwargs)  # type: ignore[arg-type]
        self.predator_task = predator_task
        self.prey_task = prey_task
        self._role_channel = self.channel_names.index("is_predator")

    def task_for(self, obs: np.ndarray) -> str:
        is_predator = bool(obs[:, :, self._role_channel].max() > 0)
        return self.predator_task if is_predator else self.prey_task


class GenericPromptTemplate(PromptTemplate):
    """Prints any observation's numbers, row-major, with three significant digits."""

    name = GENERIC_TEMPLATE
    version = 1

    def __init__(self, *, task: str | None = None) -> None:
        self.task = task or "Choose the action that best serves your agent's goal."

    def check_observation_shape(self, shape: tuple[int, ...]) -> None:
        size = int(np.prod(shape))
        if size > GENERIC_MAX_VALUES:
            raise LabelInputError(
                f"{GENERIC_TEMPLATE} prompt: an observation of shape {shape} has {size} numbers, "
                f"more than the {GENERIC_MAX_VALUES} this template prints; write a prompt template "
                "for this world that summarises the observation"
            )

    def describe(self, obs: np.ndarray) -> str:
        values = " ".join(f"{value:.3g}" for value in np.asarray(obs, dtype=np.float64).ravel())
        return "\n".join(
            [
                self.task,
                "",
                f"Observation: an array of shape {tuple(obs.shape)}, row-major, three significant digits:",
                values,
            ]
        )


def describe_offset(dy: int, dx: int) -> str:
    """Return an offset in cells as words, such as ``"2 up, 1 left"`` or ``"your cell"``."""
    parts = []
    if dy:
        parts.append(f"{abs(dy)} {'up' if dy < 0 else 'down'}")
    if dx:
        parts.append(f"{abs(dx)} {'left' if dx < 0 else 'right'}")
    return ", ".join(parts) if parts else "your cell"


def _wall() -> GridChannel:
    return GridChannel("wall", "#", "wall (outside the map)")


# NOTE: these prompts have only been run against the fake server in policies/fake_openai.py,
# so the quality of their labels with real models is unmeasured.
NATIVE_TEMPLATES = {
    ForagingWorld.name: lambda: GridPromptTemplate(
        name=ForagingWorld.name,
        version=1,
        task=(
            "You are a forager on a grid. Food F is collected when enough agents stand within "
            "one cell of it at the same time: food of a higher value needs more agents. "
            "Move next to food, and join other agents at heavy food."
        ),
        channel_names=ForagingWorld.channel_names,
        channels=[
            _wall(),
            GridChannel("food", "F", "food", show_value=True),
            GridChannel("agents", "A", "other agent"),
        ],
    ),
    PredatorPreyWorld.name: lambda: PredatorPreyPromptTemplate(
        name=PredatorPreyWorld.name,
        version=1,
        predator_task=(
            "You are a predator on a grid. You catch a prey Y by standing within one cell of "
            "it. Move towards the nearest prey."
        ),
        prey_task=(
            "You are a prey on a grid. A predator P catches you when it stands within one cell "
            "of you. Move away from predators."
        ),
        channel_names=PredatorPreyWorld.channel_names,
        channels=[
            _wall(),
            GridChannel("predators", "P", "predator"),
            GridChannel("prey", "Y", "prey"),
            # Constant over the window: it marks the agent's team and is read by task_for.
            GridChannel("is_predator", " ", "team marker"),
        ],
    ),
    SpreadWorld.name: lambda: GridPromptTemplate(
        name=SpreadWorld.name,
        version=1,
        task=(
            "You are one of many agents on a grid. You earn a reward while you stand alone on "
            "a target T and pay a penalty while you share a cell with another agent. Cover a "
            "target that no other agent is heading for."
        ),
        channel_names=SpreadWorld.channel_names,
        channels=[
            _wall(),
            GridChannel("targets", "T", "target"),
            GridChannel("agents", "A", "other agent"),
        ],
    ),
}


def available_templates() -> list[str]:
    """Return the names of the prompt templates, sorted: native world names and ``"generic"``."""
    return sorted([*NATIVE_TEMPLATES, GENERIC_TEMPLATE])


def make_template(world: str, *, task: str | None = None) -> PromptTemplate:
    """Build the prompt template for ``world``.

    Args:
        world: a native world name such as ``"foraging_v0"``, or ``"generic"``.
        task: the generic template's task description; native templates have their own.

    Raises:
        ValueError: ``world`` has no template, or ``task`` is given for a native world.
    """
    if world == GENERIC_TEMPLATE:
        return GenericPromptTemplate(task=task)
    if world not in NATIVE_TEMPLATES:
        raise ValueError(
            f"no prompt template for world {world!r}; available: {', '.join(available_templates())} "
            f"(use {GENERIC_TEMPLATE!r} with action_names for other worlds)"
        )
    if task is not None:
        raise ValueError(
            f"task is only used by the {GENERIC_TEMPLATE!r} template; {world} has its own task text"
        )
    return NATIVE_TEMPLATES[world]()
