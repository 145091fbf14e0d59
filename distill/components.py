"""Build the run's components (world, shards, teacher, student) from a ``RunConfig``.

The same builders validate a scenario: ``check_config`` tries each one and returns every
failure as an error line that starts with the dotted path of the key to fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from distill.config import RunConfig, TeacherConfig
from policies.networks import NetworkConfig
from policies.teacher import TeacherSpec
from sim.rollout import ShardSpec, WorldSpec, split_population

# Scripted teachers by world name (the name the scenario gives an external env).
SCRIPTED_TEACHERS = {
    "battle_v4": "ScriptedBattleSpec",
    "pursuit_v5": "ScriptedPursuitSpec",
    "simple_spread_v3": "ScriptedSpreadSpec",
}


def world_template(config: RunConfig) -> WorldSpec:
    """Return the world every population copy repeats, seeded with the run's base seed."""
    world = config.world
    return WorldSpec(
        world.name,
        num_agents=world.agents_per_world,
        seed=config.seed,
        options=dict(world.options),
        entry_point=world.entry_point,
        max_steps=world.max_steps,
    )


def population_shards(config: RunConfig) -> tuple[ShardSpec, ...]:
    """Split the population into one shard of world copies per rollout worker."""
    return split_population(
        world_template(config),
        total_agents=config.population.agents,
        num_workers=config.population.workers,
    )


def evaluation_world(config: RunConfig, seed: int) -> WorldSpec:
    """Return the world of one evaluation episode: the training world at another seed and size."""
    agents = config.evaluation.agents or config.world.agents_per_world
    return world_template(config).replace(num_agents=agents, seed=seed)


def teacher_spec(config: RunConfig, teacher: TeacherConfig | None = None) -> TeacherSpec:
    """Return the spec of the scenario's teacher (or of ``teacher``, a mixture member)."""
    teacher = teacher or config.teacher
    options = dict(teacher.options)
    _check_teacher_options(teacher.kind, options, config.world.name)
    builders: dict[str, Callable[[RunConfig, dict[str, Any]], TeacherSpec]] = {
        "planner": _planner_spec,
        "scripted": _scripted_spec,
        "neural": _neural_spec,
        "llm": _llm_spec,
        "mixture": _mixture_spec,
    }
    return builders[teacher.kind](config, options)


def _teacher_spec_class(kind: str, world_name: str) -> type | None:
    if kind == "planner":
        from policies.planners import PlannerSpec

        return PlannerSpec
    if kind == "scripted":
        import policies.scripted

        name = SCRIPTED_TEACHERS.get(world_name)
        return None if name is None else getattr(policies.scripted, name)
    if kind == "neural":
        from policies.neural import NeuralTeacherSpec

        return NeuralTeacherSpec
    if kind == "llm":
        from policies.llm import LLMTeacherSpec

        return LLMTeacherSpec
    return None


def _check_teacher_options(kind: str, options: Mapping[str, Any], world_name: str = "") -> None:
    """Raise listing the valid options when ``options`` has a key the teacher kind does not take."""
    if kind == "mixture":
        from policies.mixture import MixtureSpec

        valid = {field.name for field in dataclasses.fields(MixtureSpec)} - {"teachers"} | {"members"}
    else:
        spec_class = _teacher_spec_class(kind, world_name)
        if spec_class is None:
            return
        # The planner's world, its options and agent count come from the scenario's [world].
        taken_from_world = {"world", "world_options", "num_agents"} if kind == "planner" else set()
        valid = {field.name for field in dataclasses.fields(spec_class)} - taken_from_world
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for a {kind} teacher; valid options: {', '.join(sorted(valid))}. "
            "When changing teacher.kind, replace the whole table: --set 'teacher.options={...}'"
        )


def _planner_spec(config: RunConfig, options: dict[str, Any]) -> TeacherSpec:
    from policies.planners import PlannerSpec

    return PlannerSpec.from_world_spec(world_template(config), **options)


def _scripted_spec(config: RunConfig, options: dict[str, Any]) -> TeacherSpec:
    name = config.world.name
    spec_class = _teacher_spec_class("scripted", name)
    if spec_class is None:
        raise ValueError(
            f"no scripted teacher for world {name!r}; scripted teachers exist for "
            f"{', '.join(sorted(SCRIPTED_TEACHERS))}"
        )
    if name == "simple_spread_v3":
        options.setdefault("num_agents", config.world.agents_per_world)
    return spec_class(**options)


def _neural_spec(config: RunConfig, options: dict[str, Any]) -> TeacherSpec:
    from policies.neural import NeuralTeacherSpec

    return NeuralTeacherSpec(**options)


def _llm_spec(config: RunConfig, options: dict[str, Any]) -> TeacherSpec:
    from policies.llm import LLMTeacherSpec

    options.setdefault("world", config.world.name)
    return LLMTeacherSpec(**options)


def _mixture_spec(config: RunConfig, options: dict[str, Any]) -> TeacherSpec:
    from policies.mixture import MixtureSpec

    members = options.pop("members", None)
    if not isinstance(members, list) or not members:
        raise ValueError("a mixture needs options.members: a non-empty array of {kind, options} tables")
    children = []
    for index, member in enumerate(members):
        if not isinstance(member, Mapping) or set(member) - {"kind", "options"} or "kind" not in member:
            raise ValueError(f"members[{index}] must be a table with 'kind' and optional 'options', got {member!r}")
        if member["kind"] == "mixture":
            raise ValueError(f"members[{index}]: a mixture cannot contain another mixture")
        child = TeacherConfig(kind=member["kind"], options=dict(member.get("options", {})))
        children.append(teacher_spec(config, child))
    if options.get("mode") == "group" and "team_names" not in options:
        options["team_names"] = tuple(world_template(config).replace(num_agents=config.world.agents_per_world).build().team_names)
    return MixtureSpec(teachers=tuple(children), **options)


def student_network_config(
    config: RunConfig, *, observation_shape: tuple[int, ...], num_actions: int, aux_shapes: Mapping[str, tuple[int, ...]]
) -> NetworkConfig:
    """Return the student network for this world and teacher."""
    student = config.student
    return NetworkConfig(
        input_shape=tuple(observation_shape),
        num_actions=num_actions,
        kind=student.kind,
        hidden_sizes=tuple(student.hidden_sizes),
        conv_channels=tuple(student.conv_channels),
        kernel_sizes=tuple(student.kernel_sizes),
        aux_heads=dict(aux_shapes) if student.aux_heads else {},
    )


# Validation of a whole scenario.


def check_config(config: RunConfig) -> list[str]:
    """Return every problem of ``config`` beyond its types, each prefixed with its dotted path."""
    errors = _check_ranges(config)
    if errors:
        return errors  # the builders below would repeat these in their own words

    template = _try(errors, "world", lambda: world_template(config))
    if template is None:
        return errors
    _try(errors, "population", lambda: population_shards(config))
    if config.world.entry_point is None and _try(errors, "world.options", template.build) is None:
        return errors
    _try(errors, "teacher.options", lambda: teacher_spec(config))
    return errors


def _try(errors: list[str], path: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except (TypeError, ValueError) as error:
        errors.append(f"{path}: {error}")
        return None


def _check_ranges(config: RunConfig) -> list[str]:
    errors = []

    def require(condition: bool, path: str, message: str) -> None:
        if not condition:
            errors.append(f"{path}: {message}, got {_lookup(config, path)!r}")

    require(config.seed >= 0, "seed", "must be >= 0")
    require(config.world.agents_per_world >= 1, "world.agents_per_world", "must be >= 1")
    require(config.population.agents >= 1, "population.agents", "must be >= 1")
    require(config.population.workers >= 1, "population.workers", "must be >= 1")
    require(config.population.cpus_per_worker > 0, "population.cpus_per_worker", "must be > 0")
    per_world = config.world.agents_per_world
    if per_world >= 1 and config.population.agents >= 1:
        copies, remainder = divmod(config.population.agents, per_world)
        if remainder:
            errors.append(
                f"population.agents: must be a multiple of world.agents_per_world={per_world}, got "
                f"{config.population.agents}; use {copies * per_world or per_world} or {(copies + 1) * per_world}"
            )
        elif config.population.workers > copies:
            errors.append(
                f"population.workers: must be at most the {copies} world copies (population.agents / "
                f"world.agents_per_world), got {config.population.workers}; use fewer workers or smaller worlds"
            )
    require(config.teacher.replicas >= 1, "teacher.replicas", "must be >= 1")
    require(config.teacher.cpus_per_replica > 0, "teacher.cpus_per_replica", "must be > 0")
    require(config.teacher.max_batch_size >= 1, "teacher.max_batch_size", "must be >= 1")
    require(config.teacher.max_wait_ms >= 0, "teacher.max_wait_ms", "must be >= 0")
    require(all(size >= 1 for size in config.student.hidden_sizes), "student.hidden_sizes", "must all be >= 1")
    require(0 < config.query.label_fraction <= 1, "query.label_fraction", "must be in (0, 1]")
    if config.query.labels_per_iteration is not None:
        require(config.query.labels_per_iteration >= 1, "query.labels_per_iteration", "must be >= 1")
    for name in ("beta_start", "beta_decay", "beta_min"):
        require(0 <= getattr(config.dagger, name) <= 1, f"dagger.{name}", "must be in [0, 1]")
    require(config.training.iterations >= 1, "training.iterations", "must be >= 1")
    require(config.training.steps_per_iteration >= 1, "training.steps_per_iteration", "must be >= 1")
    require(config.training.updates_per_iteration >= 0, "training.updates_per_iteration", "must be >= 0")
    require(config.training.batch_size >= 1, "training.batch_size", "must be >= 1")
    require(config.training.learning_rate > 0, "training.learning_rate", "must be > 0")
    require(config.training.torch_threads >= 1, "training.torch_threads", "must be >= 1")
    require(config.training.learner_cpus > 0, "training.learner_cpus", "must be > 0")
    require(config.training.learner_threads >= 1, "training.learner_threads", "must be >= 1")
    if config.training.max_dataset_states is not None:
        require(config.training.max_dataset_states >= 1, "training.max_dataset_states", "must be >= 1")
    require(len(config.evaluation.seeds) >= 1, "evaluation.seeds", "must list at least one seed")
    require(all(seed >= 0 for seed in config.evaluation.seeds), "evaluation.seeds", "must all be >= 0")
    if config.evaluation.agents is not None:
        require(config.evaluation.agents >= 1, "evaluation.agents", "must be >= 1")
    require(config.evaluation.agreement_states >= 1, "evaluation.agreement_states", "must be >= 1")
    for field in ("behaviour_cloning", "soft_label", "auxiliary"):
        require(getattr(config.loss, field) >= 0, f"loss.{field}", "must be >= 0")
    require(config.loss.temperature > 0, "loss.temperature", "must be > 0")
    if config.loss.behaviour_cloning == config.loss.soft_label == 0:
        errors.append(
            "loss: behaviour_cloning or soft_label must be > 0; the auxiliary term alone does not teach "
            "the student the teacher's actions"
        )
    return errors


def _lookup(config: RunConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value

