"""Read and check the files of a run directory, as docs/runs.md specifies them.

Each ``read_*`` function parses one file into a typed value and raises ``RunFilesError``
naming the file, the key or line, and what was expected. ``read_run`` reads the whole
directory for a report: a run that stopped midway may lack ``evaluation.json`` or
``summary.json``, or end ``metrics.jsonl`` with a truncated line, so missing and invalid
files become notes (also logged as warnings) instead of errors. Only a directory that
does not exist, or has neither ``metrics.jsonl`` nor ``summary.json``, raises.

JSON ``null`` becomes NaN in float arrays, so plots and means can skip it.

Shape letters: I iterations in ``metrics.jsonl``, N agent rows of an evaluation world,
T episode steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
EVALUATION_FILE = "evaluation.json"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "dataset/manifest.json"
MANIFEST_FORMAT = "shepherd-dataset"

METRIC_KEYS = (
    "wall_s",
    "beta",
    "agent_steps",
    "agent_steps_per_s",
    "visited_states",
    "labels",
    "label_fraction",
    "labels_per_s",
    "train_samples",
    "train_samples_per_s",
    "dataset_states",
    "agreement",
    "kl_teacher_student",
    "episode_return",
)
"""Numeric per-iteration keys of ``metrics.jsonl``, besides ``iteration``, ``loss`` and ``phase_s``."""
LOSS_KEYS = ("total", "soft_label", "behaviour_cloning", "auxiliary")
PHASE_KEYS = ("rollout", "label", "train", "write")


class RunFilesError(ValueError):
    """A run file is invalid: malformed JSON or TOML, a wrong type, or arrays of the wrong length."""


class RunNotFoundError(RunFilesError, FileNotFoundError):
    """A run directory does not exist or contains neither ``metrics.jsonl`` nor ``summary.json``."""


# Typed contents of the files.


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The per-iteration rows of ``metrics.jsonl`` as columns, sorted by iteration.

    Every float column has shape (I,) and contains NaN where a line had ``null`` or lacked
    the key. Units are those of docs/runs.md: seconds, per-second rates, nats.
    """

    iteration: np.ndarray
    """(I,) int64 0-based iterations, increasing."""
    wall_s: np.ndarray
    beta: np.ndarray
    agent_steps: np.ndarray
    agent_steps_per_s: np.ndarray
    visited_states: np.ndarray
    labels: np.ndarray
    label_fraction: np.ndarray
    labels_per_s: np.ndarray
    train_samples: np.ndarray
    train_samples_per_s: np.ndarray
    dataset_states: np.ndarray
    agreement: np.ndarray
    kl_teacher_student: np.ndarray
    episode_return: np.ndarray
    loss: Mapping[str, np.ndarray]
    """(I,) mean loss term per iteration: the documented terms, then any others found."""
    phase_s: Mapping[str, np.ndarray]
    """(I,) seconds per phase: the documented phases, then any others found."""

    @property
    def size(self) -> int:
        """Iterations in the table."""
        return len(self.iteration)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The per-agent and per-step arrays of ``evaluation.json``; NaN where the file has ``null``."""

    seeds: tuple[int, ...]
    agents: int
    teacher_return_per_agent: np.ndarray
    """(N,) mean episode return of each agent row when the teacher drives the population."""
    student_return_per_agent: np.ndarray
    """(N,) the same when the student drives the population."""
    agreement_per_agent: np.ndarray
    """(N,) agreement on each agent's student-visited states; NaN for agents without labels."""
    kl_per_agent: np.ndarray
    """(N,) KL(teacher || student) in nats on the same states; NaN for agents without labels."""
    agreement_by_step: np.ndarray
    """(T,) agreement per episode step over all agents."""
    kl_by_step: np.ndarray
    """(T,) KL(teacher || student) in nats per episode step."""
    team_names: tuple[str, ...]
    team_ids: np.ndarray
    """(N,) int64 index into ``team_names`` of each agent row."""
    random_return_per_agent: np.ndarray | None = None
    """(N,) the same under uniformly random actions."""
    teams: Mapping[str, Mapping[str, float | None]] = dataclasses.field(default_factory=dict)
    """Per team with several teams: that team student-driven against teacher-driven opponents."""


@dataclasses.dataclass(frozen=True)
class Throughput:
    """``summary.json`` ``throughput``: rates in agent-steps, labels or samples per second."""

    agent_steps_per_s: float | None = None
    labels_per_s: float | None = None
    train_samples_per_s: float | None = None
    teacher_driven_agent_steps_per_s: float | None = None
    student_driven_agent_steps_per_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Consistency:
    """``summary.json`` ``consistency``: how closely the student follows the teacher."""

    action_agreement: float | None = None
    kl_teacher_student: float | None = None
    teacher_return: float | None = None
    student_return: float | None = None
    return_ratio: float | None = None
    agreement_quantiles: tuple[float | None, float | None, float | None] | None = None
    """p10, p50 and p90 of per-agent agreement."""
    random_return: float | None = None
    """Mean per-agent return under random actions; optional, not listed in docs/runs.md."""
    normalized_return_ratio: float | None = None
    """``(student - random) / (teacher - random)`` return."""
    head_to_head_ratio: float | None = None
    """Equal-sized teams: the student team's return over its teacher-driven opponents', mean over teams."""


@dataclasses.dataclass(frozen=True)
class Cost:
    """``summary.json`` ``cost``: parameters, microseconds and FLOPs per decision."""

    teacher_params: float | None = None
    student_params: float | None = None
    teacher_us_per_decision: float | None = None
    student_us_per_decision: float | None = None
    compute_ratio: float | None = None
    teacher_flops_per_decision: float | None = None
    student_flops_per_decision: float | None = None


@dataclasses.dataclass(frozen=True)
class LabelCounts:
    """``summary.json`` ``labels``: states offered for labelling and states labelled."""

    requested: float | None = None
    labelled: float | None = None
    label_fraction: float | None = None


@dataclasses.dataclass(frozen=True)
class Summary:
    """The headline numbers of ``summary.json``; ``None`` where the file has ``null`` or lacks the key."""

    scenario: str | None = None
    agents: float | None = None
    workers: float | None = None
    teachers: tuple[str, ...] = ()
    iterations: float | None = None
    wall_s: float | None = None
    throughput: Throughput = Throughput()
    consistency: Consistency = Consistency()
    cost: Cost = Cost()
    labels: LabelCounts = LabelCounts()
    missing_keys: tuple[str, ...] = ()
    """Documented dotted keys the file lacks, such as ``"cost.compute_ratio"``."""


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    """Summary of the labelled states that ``dataset/manifest.json`` lists."""

    shards: int
    rows: int
    teachers: tuple[str, ...]
    """Teacher ids over all shards, sorted."""
    rows_per_iteration: Mapping[int, int]
    """Rows written by each iteration that wrote a shard."""
    scenario_hash: str | None
    code_version: str | None


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Everything ``read_run`` found in a run directory; ``None`` for each file missing or invalid."""

    run_dir: Path
    config_text: str | None
    """``config.toml`` as written, for display."""
    config: Mapping[str, Any] | None
    """``config.toml`` parsed; ``None`` if it is missing or is not valid TOML."""
    metrics: Metrics | None
    evaluation: Evaluation | None
    summary: Summary | None
    dataset: DatasetSummary | None
    notes: tuple[str, ...]
    """One sentence per missing, truncated or invalid file, for the report."""

    @property
    def scenario(self) -> str:
        """Scenario name from ``summary.json``, else ``config.toml``, else the directory name."""
        if self.summary is not None and self.summary.scenario:
            return self.summary.scenario
        if self.config is not None and isinstance(self.config.get("name"), str):
            return self.config["name"]
        return self.run_dir.name


# The whole directory.


def read_run(run_dir: str | os.PathLike[str]) -> RunFiles:
    """Read every file of a run directory that dashboards use.

    Missing or invalid files are logged as warnings and listed in ``RunFiles.notes``.

    Raises:
        RunNotFoundError: ``run_dir`` does not exist, is not a directory, or contains
            neither ``metrics.jsonl`` nor ``summary.json``.
    """
    run_dir = Path(run_dir)
    expected = "the directory that `shepherd run` wrote (runs/<scenario>-<timestamp>/ or its --out directory)"
    if not run_dir.exists():
        raise RunNotFoundError(f"run directory {run_dir} does not exist; pass {expected}")
    if not run_dir.is_dir():
        raise RunNotFoundError(f"run directory {run_dir} is not a directory; pass {expected}")
    if not (run_dir / METRICS_FILE).is_file() and not (run_dir / SUMMARY_FILE).is_file():
        raise RunNotFoundError(
            f"{run_dir} is not a run directory: it contains neither {METRICS_FILE} nor {SUMMARY_FILE}; pass {expected}"
        )

    notes: list[str] = []
    config_text, config = _read_config(run_dir, notes)
    metrics = _read_optional(run_dir, METRICS_FILE, lambda path: _read_metrics_and_notes(path, notes), notes)
    evaluation = _read_optional(run_dir, EVALUATION_FILE, read_evaluation, notes)
    summary = _read_optional(run_dir, SUMMARY_FILE, read_summary, notes)
    dataset = _read_optional(run_dir, MANIFEST_FILE, read_manifest, notes)
    if summary is not None and summary.missing_keys:
        notes.append(f"{SUMMARY_FILE} lacks the keys {', '.join(summary.missing_keys)}.")

    for note in notes:
        logger.warning("%s: %s", run_dir, note)
    return RunFiles(
        run_dir=run_dir,
        config_text=config_text,
        config=config,
        metrics=metrics,
        evaluation=evaluation,
        summary=summary,
        dataset=dataset,
        notes=tuple(notes),
    )


_MISSING_CONSEQUENCES = {
    CONFIG_FILE: "the resolved configuration is not shown",
    METRICS_FILE: "the learning curves and throughput over time are left out",
    EVALUATION_FILE: "the run may have stopped before its evaluation, so per-agent and per-step figures are left out",
    SUMMARY_FILE: "the run may have stopped before it finished, so the headline table is left out",
    MANIFEST_FILE: "the dataset summary is left out",
}


def _read_optional(run_dir: Path, name: str, reader: Callable[[Path], Any], notes: list[str]) -> Any:
    path = run_dir / name
    if not path.is_file():
        notes.append(f"{name} is missing: {_MISSING_CONSEQUENCES[name]}.")
        return None
    try:
        return reader(path)
    except RunFilesError as error:
        notes.append(f"{name} is invalid and is left out: {error}")
        return None


def _read_metrics_and_notes(path: Path, notes: list[str]) -> Metrics | None:
    # Notes of a file that turns out invalid are dropped, because the invalid note replaces them.
    metrics_notes: list[str] = []
    metrics = read_metrics(path, notes=metrics_notes)
    notes.extend(metrics_notes)
    return metrics


def _read_config(run_dir: Path, notes: list[str]) -> tuple[str | None, Mapping[str, Any] | None]:
    text = _read_optional(run_dir, CONFIG_FILE, _read_text, notes)
    if text is None:
        return None, None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # The text is still worth showing, so only the parsed form is dropped.
        notes.append(f"{CONFIG_FILE} is not valid TOML ({error}); it is shown as written.")
        return text, None


# One reader per file.


def read_metrics(path: str | os.PathLike[str], *, notes: list[str] | None = None) -> Metrics | None:
    """Parse ``metrics.jsonl`` into columns; return ``None`` if it has no complete line.

    An invalid last line is taken as cut off by a crash and skipped. Repeated
    iterations keep their last line. Both cases, and documented keys that some lines
    lack, are appended to ``notes`` when it is given.

    Raises:
        RunFilesError: a line before the last is not a JSON object, has no integer
            ``iteration``, or has a non-numeric value under a documented key.
    """
    path = Path(path)
    notes = notes if notes is not None else []
    records = _parse_metrics_lines(path, notes)
    if not records:
        notes.append(f"{METRICS_FILE} has no complete line: the learning curves and throughput are left out.")
        return None

    by_iteration: dict[int, tuple[int, Mapping[str, Any]]] = {}
    for line_number, record in records:
        iteration = record.get("iteration")
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise RunFilesError(
                f"{path}, line {line_number}: expected a non-negative integer 'iteration', got {iteration!r}"
            )
        by_iteration[iteration] = (line_number, record)
    if len(by_iteration) < len(records):
        notes.append(f"{METRICS_FILE} repeats some iterations; the last line of each is used.")
    rows = [by_iteration[iteration] for iteration in sorted(by_iteration)]

    columns = {key: _metric_column(path, rows, key, notes) for key in METRIC_KEYS}
    return Metrics(
        iteration=np.array(sorted(by_iteration), dtype=np.int64),  # (I,)
        loss=_nested_columns(path, rows, "loss", LOSS_KEYS),
        phase_s=_nested_columns(path, rows, "phase_s", PHASE_KEYS),
        **columns,
    )


def _parse_metrics_lines(path: Path, notes: list[str]) -> list[tuple[int, Mapping[str, Any]]]:
    lines = [(number, line) for number, line in enumerate(_read_text(path).splitlines(), start=1) if line.strip()]
    records = []
    for index, (line_number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if index == len(lines) - 1:
                notes.append(
                    f"{METRICS_FILE} line {line_number} is incomplete (the run may have stopped while writing it) "
                    "and is skipped."
                )
                break
            raise RunFilesError(
                f"{path}, line {line_number}: invalid JSON ({error.msg}); expected one JSON object per iteration"
            ) from error
        if not isinstance(record, dict):
            raise RunFilesError(
                f"{path}, line {line_number}: expected a JSON object per iteration, got {type(record).__name__}"
            )
        records.append((line_number, record))
    return records


def _metric_column(path: Path, rows: Sequence[tuple[int, Mapping[str, Any]]], key: str, notes: list[str]) -> np.ndarray:
    column = np.full(len(rows), np.nan)  # (I,)
    lacking = 0
    for row, (line_number, record) in enumerate(rows):
        if key not in record:
            lacking += 1
            continue
        column[row] = _number(record[key], where=f"{path}, line {line_number}, key {key!r}")
    if lacking:
        notes.append(f"{METRICS_FILE} lacks {key!r} in {lacking} of {len(rows)} iterations.")
    return column


def _nested_columns(
    path: Path, rows: Sequence[tuple[int, Mapping[str, Any]]], key: str, documented: Sequence[str]
) -> dict[str, np.ndarray]:
    names = list(documented)
    for line_number, record in rows:
        table = record.get(key)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise RunFilesError(
                f"{path}, line {line_number}: expected {key!r} to be an object of numbers, got {type(table).__name__}"
            )
        names.extend(name for name in table if name not in names)

    columns = {name: np.full(len(rows), np.nan) for name in names}  # each (I,)
    for row, (line_number, record) in enumerate(rows):
        for name, value in (record.get(key) or {}).items():
            columns[name][row] = _number(value, where=f"{path}, line {line_number}, key '{key}.{name}'")
    return columns


def read_evaluation(path: str | os.PathLike[str]) -> Evaluation:
    """Parse ``evaluation.json``.

    Raises:
        RunFilesError: the file is not a JSON object, lacks a documented key, or an
            array's length does not match ``agents`` (per-agent arrays and
            ``team_ids``) or ``agreement_by_step`` (``kl_by_step``).
    """
    path = Path(path)
    data = _read_json_object(path)
    required = (
        "seeds",
        "agents",
        "teacher_return_per_agent",
        "student_return_per_agent",
        "agreement_per_agent",
        "kl_per_agent",
        "agreement_by_step",
        "kl_by_step",
        "team_names",
        "team_ids",
    )
    missing = [key for key in required if key not in data]
    if missing:
        raise RunFilesError(f"{path} lacks the keys {', '.join(missing)}; docs/runs.md lists every key it must have")

    agents = data["agents"]
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise RunFilesError(f"{path}: expected 'agents' to be a positive integer, got {agents!r}")
    per_agent = {
        key: _float_array(path, data, key, length=agents, length_name="agents")
        for key in ("teacher_return_per_agent", "student_return_per_agent", "agreement_per_agent", "kl_per_agent")
    }
    agreement_by_step = _float_array(path, data, "agreement_by_step")
    kl_by_step = _float_array(path, data, "kl_by_step", length=len(agreement_by_step), length_name="agreement_by_step")
    team_names, team_ids = _teams(path, data, agents)
    random_return = None
    if data.get("random_return_per_agent") is not None:
        random_return = _float_array(path, data, "random_return_per_agent", length=agents, length_name="agents")
    teams = data.get("teams") or {}
    if not isinstance(teams, dict) or not all(isinstance(value, dict) for value in teams.values()):
        raise RunFilesError(f"{path}: expected 'teams' to map team names to objects, got {teams!r}")
    teams = {
        str(name): {key: _optional_number(value, where=f"{path}, key 'teams.{name}.{key}'") for key, value in record.items()}
        for name, record in teams.items()
    }

    return Evaluation(
        seeds=tuple(_integer_list(path, data, "seeds")),
        agents=agents,
        agreement_by_step=agreement_by_step,
        kl_by_step=kl_by_step,
        team_names=team_names,
        team_ids=team_ids,
        random_return_per_agent=random_return,
        teams=teams,
        **per_agent,
    )


def _teams(path: Path, data: Mapping[str, Any], agents: int) -> tuple[tuple[str, ...], np.ndarray]:
    team_names = data["team_names"]
    if not isinstance(team_names, list) or not team_names or not all(isinstance(name, str) for name in team_names):
        raise RunFilesError(f"{path}: expected 'team_names' to be a non-empty list of strings, got {team_names!r}")
    team_ids = np.array(_integer_list(path, data, "team_ids"), dtype=np.int64)  # (N,)
    if len(team_ids) != agents:
        raise RunFilesError(f"{path}: 'team_ids' has {len(team_ids)} entries, expected {agents} (agents)")
    bad = team_ids[(team_ids < 0) | (team_ids >= len(team_names))]
    if len(bad):
        raise RunFilesError(
            f"{path}: 'team_ids' contains {int(bad[0])}, expected indices 0 to {len(team_names) - 1} into 'team_names'"
        )
    return tuple(team_names), team_ids


def read_summary(path: str | os.PathLike[str]) -> Summary:
    """Parse ``summary.json``; documented keys it lacks are listed in ``Summary.missing_keys``.

    Raises:
        RunFilesError: the file is not a JSON object, a group such as ``throughput`` is
            not an object, or a documented value has the wrong type.
    """
    path = Path(path)
    data = _read_json_object(path)
    missing: list[str] = []

    scenario = data.get("scenario")
    if scenario is not None and not isinstance(scenario, str):
        raise RunFilesError(f"{path}: expected 'scenario' to be a string, got {scenario!r}")
    teachers = data.get("teachers", [])
    if not isinstance(teachers, list) or not all(isinstance(teacher, str) for teacher in teachers):
        raise RunFilesError(f"{path}: expected 'teachers' to be a list of teacher ids, got {teachers!r}")
    for key in ("scenario", "agents", "workers", "teachers", "iterations", "wall_s"):
        if key not in data:
            missing.append(key)

    groups = {
        name: _summary_group(path, data, name, cls, missing)
        for name, cls in (
            ("throughput", Throughput),
            ("consistency", Consistency),
            ("cost", Cost),
            ("labels", LabelCounts),
        )
    }
    return Summary(
        scenario=scenario,
        agents=_optional_number(data.get("agents"), where=f"{path}, key 'agents'"),
        workers=_optional_number(data.get("workers"), where=f"{path}, key 'workers'"),
        teachers=tuple(teachers),
        iterations=_optional_number(data.get("iterations"), where=f"{path}, key 'iterations'"),
        wall_s=_optional_number(data.get("wall_s"), where=f"{path}, key 'wall_s'"),
        missing_keys=tuple(missing),
        **groups,
    )


# Keys that a run may write but docs/runs.md does not list, so their absence is no gap.
_OPTIONAL_SUMMARY_KEYS = frozenset(
    {"consistency.random_return", "consistency.normalized_return_ratio", "consistency.head_to_head_ratio"}
)


def _summary_group(path: Path, data: Mapping[str, Any], name: str, cls: type, missing: list[str]) -> Any:
    group = data.get(name)
    if group is None:
        missing.append(name)
        return cls()
    if not isinstance(group, dict):
        raise RunFilesError(f"{path}: expected {name!r} to be an object, got {type(group).__name__}")

    values = {}
    for field in dataclasses.fields(cls):
        dotted = f"{name}.{field.name}"
        if field.name not in group:
            if dotted not in _OPTIONAL_SUMMARY_KEYS:
                missing.append(dotted)
        elif field.name == "agreement_quantiles":
            values[field.name] = _quantiles(path, group[field.name])
        else:
            values[field.name] = _optional_number(group[field.name], where=f"{path}, key {dotted!r}")
    return cls(**values)


def _quantiles(path: Path, value: Any) -> tuple[float | None, float | None, float | None] | None:
    # NOTE: docs/runs.md names "p10, p50 and p90" without fixing the JSON shape, so both a
    # list of three numbers and an object with keys p10, p50, p90 are read.
    where = f"{path}, key 'consistency.agreement_quantiles'"
    if value is None:
        return None
    if isinstance(value, dict) and {"p10", "p50", "p90"} <= set(value):
        numbers = [_number(value[key], where=where) for key in ("p10", "p50", "p90")]
    elif isinstance(value, list) and len(value) == 3:
        numbers = [_number(item, where=where) for item in value]
    else:
        raise RunFilesError(f"{where}: expected [p10, p50, p90] or {{'p10', 'p50', 'p90'}}, got {value!r}")
    p10, p50, p90 = (None if math.isnan(number) else number for number in numbers)
    return p10, p50, p90


def read_manifest(path: str | os.PathLike[str]) -> DatasetSummary:
    """Summarize ``dataset/manifest.json``: shards, rows, teachers and rows per iteration.

    Raises:
        RunFilesError: the file is not a shepherd dataset manifest or a shard entry
            lacks ``rows``, ``iteration`` or ``teachers``.
    """
    path = Path(path)
    data = _read_json_object(path)
    if data.get("format") != MANIFEST_FORMAT:
        raise RunFilesError(
            f"{path}: expected a shepherd dataset manifest (format {MANIFEST_FORMAT!r}), "
            f"got format {data.get('format')!r}"
        )
    if not isinstance(data.get("shards"), list):
        raise RunFilesError(f"{path}: expected 'shards' to be a list of shard entries, got {data.get('shards')!r:.200}")

    teachers: set[str] = set()
    rows_per_iteration: dict[int, int] = {}
    for index, shard in enumerate(data["shards"]):
        where = f"{path}, shards[{index}]"
        if not isinstance(shard, dict):
            raise RunFilesError(f"{where}: expected an object, got {type(shard).__name__}")
        rows = _require_int(shard, "rows", where)
        iteration = _require_int(shard, "iteration", where)
        shard_teachers = shard.get("teachers")
        if not isinstance(shard_teachers, list) or not all(isinstance(teacher, str) for teacher in shard_teachers):
            raise RunFilesError(f"{where}: expected 'teachers' to be a list of teacher ids, got {shard_teachers!r}")
        teachers.update(shard_teachers)
        rows_per_iteration[iteration] = rows_per_iteration.get(iteration, 0) + rows

    return DatasetSummary(
        shards=len(data["shards"]),
        rows=sum(rows_per_iteration.values()),
        teachers=tuple(sorted(teachers)),
        rows_per_iteration=dict(sorted(rows_per_iteration.items())),
        scenario_hash=data.get("scenario_hash") if isinstance(data.get("scenario_hash"), str) else None,
        code_version=data.get("code_version") if isinstance(data.get("code_version"), str) else None,
    )


# Values.


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunFilesError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise RunFilesError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            "the run may have stopped while writing it"
        ) from error
    if not isinstance(data, dict):
        raise RunFilesError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _number(value: Any, *, where: str) -> float:
    """Return ``value`` as a float, NaN for ``None``."""
    number = _optional_number(value, where=where)
    return math.nan if number is None else float(number)


def _optional_number(value: Any, *, where: str) -> float | None:
    """Return ``value`` unchanged (an int stays an int, for display) or ``None`` for null and NaN."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunFilesError(f"{where}: expected a number or null, got {value!r}")
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _require_int(data: Mapping[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunFilesError(f"{where}: expected an integer {key!r}, got {value!r}")
    return value


def _float_array(
    path: Path, data: Mapping[str, Any], key: str, *, length: int | None = None, length_name: str = ""
) -> np.ndarray:
    values = data[key]
    if not isinstance(values, list):
        raise RunFilesError(f"{path}: expected {key!r} to be a list of numbers or nulls, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise RunFilesError(f"{path}: {key!r} has {len(values)} entries, expected {length} ({length_name})")
    return np.array([_number(value, where=f"{path}, key {key!r}") for value in values], dtype=np.float64)


def _integer_list(path: Path, data: Mapping[str, Any], key: str) -> list[int]:
    values = data[key]
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise RunFilesError(f"{path}: expected {key!r} to be a list of integers, got {values!r:.200}")
    return values
