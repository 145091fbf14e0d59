"""The run orchestrator: one scenario, end to end, into one run directory.

``run(config)`` starts the components (rollout workers, the label service with its
teacher replicas, the learner), then loops: broadcast the student's weights, collect and
label states, store them, train, log. Afterwards it evaluates the student against the
teacher on fixed seeds and writes the summary and the report. With the Ray backend every
component is a Ray actor with declared CPUs. With the serial backend everything runs in
this process, which makes it the backend to debug with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.collector import CollectResult, Collector, LocalLabeler
from distill.components import (
    evaluation_world,
    population_shards,
    student_network_config,
    teacher_spec,
)
from distill.config import RunConfig, to_plain
from distill.dataset import DatasetWriter, LabelledBatch
from distill.evaluate import evaluate, kl_divergence
from distill.learner import Learner
from distill.provenance import code_version
from policies.checkpoint import write_atomic
from policies.student import Student

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The run directory of a finished run, and its summary."""

    run_dir: Path
    summary: dict[str, Any]


class _Pool:
    """Calls a method on every component, in this process or on Ray actors, with one interface."""

    def __init__(self, members: Sequence[Any], *, remote: bool) -> None:
        self.members = list(members)
        self.remote = remote

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        if not self.remote:
            return [getattr(member, method)(*args, **kwargs) for member in self.members]
        import ray

        return ray.get([getattr(member, method).remote(*args, **kwargs) for member in self.members])

    def call_each(self, method: str, arguments: Sequence[dict[str, Any]]) -> list[Any]:
        if not self.remote:
            return [getattr(member, method)(**kwargs) for member, kwargs in zip(self.members, arguments)]
        import ray

        return ray.get([getattr(member, method).remote(**kwargs) for member, kwargs in zip(self.members, arguments)])

    def kill(self) -> None:
        if self.remote:
            import ray

            for member in self.members:
                ray.kill(member)


def make_run_dir(config: RunConfig, out: str | os.PathLike[str] | None, *, root: str | os.PathLike[str] = "runs") -> Path:
    """Create and return the run directory: ``out``, or ``runs/<scenario>-<UTC timestamp>``."""
    if out is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{config.name}-{stamp}"
    else:
        path = Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"run directory {path} is a file; give --out a directory that is new or empty")
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"run directory {path} exists and is not empty; choose another --out or remove it")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(
    config: RunConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    address: str | None = None,
    progress: bool = True,
    runs_root: str | os.PathLike[str] = "runs",
) -> RunResult:
    """Run a scenario end to end and return its run directory and summary.

    Args:
        config: the resolved scenario.
        out: the run directory; ``None`` makes ``runs/<scenario>-<timestamp>``.
        address: a Ray cluster to join (``"auto"`` or ``"ray://host:port"``); ``None``
            starts a local Ray instance unless one is running. Ignored by the serial backend.
        progress: show a progress bar on stderr.
        runs_root: parent directory of default run directories.
    """
    from scenarios.loader import dump_toml

    created = out is None or not Path(out).exists()
    run_dir = make_run_dir(config, out, root=runs_root)
    (run_dir / "config.toml").write_text(dump_toml(config.to_dict()))
    try:
        summary = _run_in(run_dir, config, address=address, progress=progress)
    except BaseException:
        _remove_if_unstarted(run_dir, created=created)
        raise
    _build_report(run_dir)
    return RunResult(run_dir, summary)


def _remove_if_unstarted(run_dir: Path, *, created: bool) -> None:
    """Remove what a run that failed before its first iteration wrote, so --out can be reused.

    A directory the run created goes entirely; an empty one the caller gave keeps existing.
    """
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size > 0:
        return  # iterations finished: keep their data
    logger.warning("removing the files of %s: the run failed before its first iteration finished", run_dir)
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for child in run_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _run_in(run_dir: Path, config: RunConfig, *, address: str | None, progress: bool) -> dict[str, Any]:
    logger.info("run %s started in %s (backend %s)", config.name, run_dir, config.population.backend)
    started = time.perf_counter()

    ray_started_here = False
    if config.population.backend == "ray":
        ray_started_here = _init_ray(address)
    try:
        runtime = _Runtime(config, run_dir)
        try:
            runtime.train(progress=progress)
            summary = runtime.finish(started)
        finally:
            runtime.close()
    finally:
        if ray_started_here:
            import ray

            ray.shutdown()

    logger.info("run %s finished in %.1f s: %s", config.name, time.perf_counter() - started, run_dir)
    return summary


def _init_ray(address: str | None) -> bool:
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)
    return True


def _build_report(run_dir: Path) -> None:
    try:
        from dashboards import build_report
    except ImportError:
        logger.warning("dashboards are not available; run `shepherd report %s` later", run_dir)
        return
    try:
        build_report(run_dir)
    except Exception as error:  # a failed plot must not lose the run's data
        logger.error("building the report of %s failed: %s; the run's files are intact", run_dir, error)


class _Runtime:
    """The live components of one run and the collect-label-train loop."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.remote = config.population.backend == "ray"
        self.spec = teacher_spec(config)
        self.teacher = self.spec.build()  # the driver's copy: evaluation and metadata
        self.service = None
        self.workers: _Pool | None = None
        self.learner: _Pool | None = None
        torch.set_num_threads(config.training.torch_threads)

        shards = population_shards(config)
        offsets, start = [], 0
        for shard in shards:
            offsets.append([start + index * config.world.agents_per_world for index in range(len(shard.worlds))])
            start += len(shard.worlds) * config.world.agents_per_world
        self.visited_per_iteration = config.population.agents * config.training.steps_per_iteration

        if self.remote:
            _check_cluster_cpus(config)
        labeler = self._start_labeler()
        probe = shards[0].worlds[0].build()  # the driver's copy, for the observation shape and actions
        self.student_config = student_network_config(
            config, observation_shape=tuple(probe.observation_shape), num_actions=probe.num_actions,
            aux_shapes=self.teacher.aux_shapes,
        )
        self._start_workers(shards, offsets, labeler)
        self._start_learner()
        self.writer = DatasetWriter(run_dir / "dataset", scenario_hash=config.config_hash(), code_version=code_version())
        self.history: list[dict[str, Any]] = []
        self.totals = {"agent_steps": 0, "rollout_s": 0.0, "labels": 0, "requested": 0, "label_s": 0.0,
                       "visited": 0, "train_samples": 0, "train_s": 0.0}

    # Start-up.

    def _start_labeler(self) -> Any:
        if not self.remote:
            return LocalLabeler(self.spec.build())
        from policies.service import LabelService

        teacher = self.config.teacher
        self.service = LabelService.start(
            self.spec, backend="actor", num_replicas=teacher.replicas, max_batch_size=teacher.max_batch_size,
            max_wait_ms=teacher.max_wait_ms, num_cpus_per_replica=teacher.cpus_per_replica,
        )
        return self.service.handle

    def _start_workers(self, shards: Sequence[Any], offsets: Sequence[list[int]], labeler: Any) -> None:
        config = self.config
        arguments = [
            {
                "shard": shard, "world_offsets": offsets[index], "student_config": self.student_config.to_dict(),
                "labeler": labeler, "strategy": config.query.strategy, "seed": config.seed,
                "worker_index": index, "torch_threads": config.training.torch_threads,
            }
            for index, shard in enumerate(shards)
        ]
        if self.remote:
            import ray

            actor = ray.remote(Collector).options(num_cpus=config.population.cpus_per_worker)
            self.workers = _Pool([actor.remote(**kwargs) for kwargs in arguments], remote=True)
        else:
            self.workers = _Pool([Collector(**kwargs) for kwargs in arguments], remote=False)

    def _start_learner(self) -> None:
        config = self.config
        kwargs = {"student_config": self.student_config.to_dict(), "loss": config.loss, "training": config.training, "seed": config.seed}
        if self.remote:
            import ray

            actor = ray.remote(Learner).options(num_cpus=config.training.learner_cpus)
            self.learner = _Pool([actor.remote(**kwargs)], remote=True)
        else:
            self.learner = _Pool([Learner(**kwargs)], remote=False)

    # The loop.

    def train(self, *, progress: bool) -> None:
        from tqdm import tqdm

        config = self.config
        metrics_path = self.run_dir / "metrics.jsonl"
        weights = self.learner.call("get_weights")[0]
        bar = tqdm(total=config.training.iterations, desc=config.name, unit="it", disable=not progress, dynamic_ncols=True)
        run_start = time.perf_counter()
        with open(metrics_path, "w", encoding="utf-8") as metrics_file, bar:
            for iteration in range(config.training.iterations):
                record = self._iteration(iteration, weights, run_start)
                weights = record.pop("_weights")
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                self.history.append(record)
                bar.set_postfix({
                    "steps/s": f"{record['agent_steps_per_s']:,.0f}",
                    "labels/s": f"{record['labels_per_s']:,.0f}",
                    # Agreement on the states the query strategy picked, the hardest ones for uncertainty sampling.
                    "queried agree": f"{record['agreement']:.2f}" if record["agreement"] is not None else "-",
                })
                bar.update(1)
        self.final_weights = weights

    def _iteration(self, iteration: int, weights: dict[str, np.ndarray], run_start: float) -> dict[str, Any]:
        config = self.config
        beta = max(config.dagger.beta_min, config.dagger.beta_start * config.dagger.beta_decay**iteration)
        if config.training.mode == "offline":
            beta = 1.0
        fraction = config.query.label_fraction
        if config.query.labels_per_iteration is not None:
            fraction = min(1.0, config.query.labels_per_iteration / self.visited_per_iteration)
        phase: dict[str, float] = {}

        # Broadcast weights, then collect and label states.
        start = time.perf_counter()
        if self.remote:
            import ray

            weights_ref = ray.put(weights)
            self.workers.call("set_weights", weights_ref)
        else:
            self.workers.call("set_weights", weights)
        results: list[CollectResult] = self.workers.call(
            "collect", config.training.steps_per_iteration, beta=beta, label_fraction=fraction,
            iteration=iteration, mode=config.training.mode,
        )
        collect_s = time.perf_counter() - start
        label_s = max(result.label_s for result in results)
        phase["rollout"] = collect_s - label_s
        phase["label"] = label_s

        # Store the labelled states.
        start = time.perf_counter()
        batch = _merge(results, iteration)
        if batch.size:
            self.writer.append(batch)
            data = {"obs": batch.obs, "probs": batch.probs, "action_mask": batch.action_mask}
            data.update({f"aux/{name}": values for name, values in batch.aux.items()})
            self.learner.call("add", data)
        phase["write"] = time.perf_counter() - start

        # Train and fetch the new weights.
        start = time.perf_counter()
        stats = self.learner.call("train", config.training.updates_per_iteration)[0]
        new_weights = self.learner.call("get_weights")[0]
        phase["train"] = time.perf_counter() - start

        return self._record(iteration, beta, results, batch, stats, phase, run_start) | {"_weights": new_weights}

    def _record(
        self, iteration: int, beta: float, results: list[CollectResult], batch: LabelledBatch,
        stats: dict[str, Any], phase: dict[str, float], run_start: float,
    ) -> dict[str, Any]:
        agent_steps = sum(result.agent_steps for result in results)
        visited = sum(result.visited_states for result in results)
        requested = sum(result.labels_requested for result in results)
        episodes = sum(result.episodes for result in results)
        student_probs = np.concatenate([result.student_probs for result in results]) if batch.size else None
        agreement = kl = None
        if batch.size:
            agreement = float((student_probs.argmax(axis=1) == batch.probs.argmax(axis=1)).mean())
            kl = float(kl_divergence(batch.probs, student_probs).mean())

        totals = self.totals
        totals["agent_steps"] += agent_steps
        totals["rollout_s"] += phase["rollout"]
        totals["labels"] += batch.size
        totals["requested"] += requested
        totals["label_s"] += phase["label"]
        totals["visited"] += visited
        totals["train_samples"] += stats["samples"]
        totals["train_s"] += stats["seconds"]
        return {
            "iteration": iteration,
            "wall_s": time.perf_counter() - run_start,
            "beta": beta,
            "agent_steps": agent_steps,
            "agent_steps_per_s": agent_steps / max(phase["rollout"] + phase["label"], 1e-9),
            "visited_states": visited,
            "labels_requested": requested,
            "labels": batch.size,
            "label_fraction": batch.size / max(visited, 1),
            "labels_per_s": requested / max(phase["label"], 1e-9),
            "train_samples": stats["samples"],
            "train_samples_per_s": stats["samples"] / max(stats["seconds"], 1e-9),
            "dataset_states": self.writer.rows,
            "agreement": agreement,
            "kl_teacher_student": kl,
            "episode_return": sum(result.episode_return_sum for result in results) / episodes if episodes else None,
            "loss": stats["loss"],
            "phase_s": phase,
        }

    # Evaluation and summary.

    def finish(self, started: float) -> dict[str, Any]:
        config = self.config
        student = Student.from_weights(self.student_config, self.final_weights)
        student.save(self.run_dir / "student", metadata={"scenario": config.name, "teacher_id": self.teacher.teacher_id})

        worlds = [evaluation_world(config, seed) for seed in config.evaluation.seeds]
        logger.info("evaluating on %d seed(s) with %d agents", len(worlds), worlds[0].num_agents)
        result = evaluate(
            teacher=self.teacher, student=student, worlds=worlds,
            agreement_states=config.evaluation.agreement_states, seed=config.seed,
        )
        write_atomic(self.run_dir / "evaluation.json", (json.dumps(result["evaluation"]) + "\n").encode())
        summary = self._summary(result["headline"], student, time.perf_counter() - started)
        write_atomic(self.run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        return summary

    def _summary(self, headline: dict[str, Any], student: Student, wall_s: float) -> dict[str, Any]:
        config, totals = self.config, self.totals
        teacher_us, student_us = headline["teacher_us_per_decision"], headline["student_us_per_decision"]
        service_metrics = None
        if self.service is not None:
            service_metrics = to_plain(self.service.metrics(), non_finite_as_none=True)
        return {
            "scenario": config.name,
            "agents": config.population.agents,
            "workers": config.population.workers,
            "backend": config.population.backend,
            "teachers": [self.teacher.teacher_id],
            "teacher_versions": [self.teacher.version],
            "iterations": config.training.iterations,
            "wall_s": wall_s,
            "code_version": code_version(),
            "scenario_hash": config.config_hash(),
            "throughput": {
                "agent_steps_per_s": totals["agent_steps"] / max(totals["rollout_s"] + totals["label_s"], 1e-9),
                "labels_per_s": totals["requested"] / max(totals["label_s"], 1e-9),
                "train_samples_per_s": totals["train_samples"] / max(totals["train_s"], 1e-9),
                "teacher_driven_agent_steps_per_s": headline["teacher_driven_agent_steps_per_s"],
                "student_driven_agent_steps_per_s": headline["student_driven_agent_steps_per_s"],
                "student_vs_teacher_speedup": headline["student_driven_agent_steps_per_s"]
                / max(headline["teacher_driven_agent_steps_per_s"], 1e-9),
            },
            "consistency": {
                key: headline[key]
                for key in (
                    "action_agreement", "kl_teacher_student", "return_ratio", "normalized_return_ratio",
                    "teacher_return", "student_return", "random_return", "agreement_quantiles",
                    "head_to_head_ratio", "teams",
                )
            },
            "cost": {
                "teacher_params": self.teacher.param_count(),
                "student_params": student.param_count(),
                "teacher_us_per_decision": teacher_us,
                "student_us_per_decision": student_us,
                "compute_ratio": student_us / teacher_us if teacher_us else None,
                "teacher_flops_per_decision": self.teacher.flops_per_label(),
                "student_flops_per_decision": student.flops_per_decision(),
            },
            "labels": {
                "requested": totals["requested"],
                "labelled": totals["labels"],
                "visited": totals["visited"],
                "label_fraction": totals["labels"] / max(totals["visited"], 1),
                "requested_fraction": totals["requested"] / max(totals["visited"], 1),
            },
            "label_service": service_metrics,
        }

    def close(self) -> None:
        if self.workers is not None:
            self.workers.kill()
        if self.learner is not None:
            self.learner.kill()
        if self.service is not None:
            self.service.shutdown()


def _check_cluster_cpus(config: RunConfig) -> None:
    """Raise when the Ray cluster has fewer CPUs than the run's actors reserve; they would never start."""
    import ray

    needed = (
        config.population.workers * config.population.cpus_per_worker
        + config.teacher.replicas * config.teacher.cpus_per_replica
        + config.training.learner_cpus
    )
    available = ray.cluster_resources().get("CPU", 0.0)
    if needed > available + 1e-9:
        raise ValueError(
            f"the run's actors reserve {needed:g} CPUs but the Ray cluster has {available:g}: lower "
            "population.cpus_per_worker, teacher.cpus_per_replica or training.learner_cpus (fractions "
            "share a core), use fewer workers or replicas, or join a larger cluster with --address"
        )


def _merge(results: list[CollectResult], iteration: int) -> LabelledBatch:
    filled = [result for result in results if len(result.obs)]
    if not filled:
        first = results[0]
        return LabelledBatch(
            obs=first.obs, agent_ids=first.agent_ids, world_steps=first.world_steps, probs=first.probs,
            teacher_ids=[], teacher_versions=[], iteration=iteration, aux={}, action_mask=None,
        )
    masks = [result.action_mask for result in filled]
    return LabelledBatch(
        obs=np.concatenate([result.obs for result in filled]),
        agent_ids=np.concatenate([result.agent_ids for result in filled]),
        world_steps=np.concatenate([result.world_steps for result in filled]),
        probs=np.concatenate([result.probs for result in filled]),
        teacher_ids=[id_ for result in filled for id_ in result.teacher_ids],
        teacher_versions=[version for result in filled for version in result.teacher_versions],
        iteration=iteration,
        aux={name: np.concatenate([result.aux[name] for result in filled]) for name in filled[0].aux},
        action_mask=None if masks[0] is None else np.concatenate(masks),
    )
