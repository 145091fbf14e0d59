"""The learner: trains the student on the labelled states in minibatches.

The learner keeps every labelled state it has received (or the most recent
``max_dataset_states``) in memory, samples minibatches uniformly from them and takes
Adam steps on the distillation loss. It never trains on one sample at a time. After each
``train`` call the driver broadcasts ``get_weights()`` to the rollout workers.

Shape letters: R stored states, M minibatch size, A actions, O the observation shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from distill.config import LossConfig, TrainingConfig
from distill.losses import LossWeights, distillation_loss
from policies.networks import NetworkConfig, build_network
from policies.student import Student

logger = logging.getLogger(__name__)


class Learner:
    """Holds the student network, its optimiser and the training data.

    Args:
        student_config: the student's architecture.
        loss: weights of the loss terms.
        training: minibatch size, learning rate, dataset cap and the learner's torch threads.
        seed: seeds the initial weights and minibatch sampling.
    """

    def __init__(
        self,
        student_config: NetworkConfig | Mapping[str, Any],
        *,
        loss: LossConfig,
        training: TrainingConfig,
        seed: int,
    ) -> None:
        torch.set_num_threads(training.learner_threads)
        torch.manual_seed(seed)
        if isinstance(student_config, Mapping):
            student_config = NetworkConfig.from_dict(student_config)
        self.config = student_config
        self.module = build_network(student_config)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=training.learning_rate)
        self.loss_weights = LossWeights(
            behaviour_cloning=loss.behaviour_cloning,
            soft_label=loss.soft_label,
            auxiliary=loss.auxiliary,
            temperature=loss.temperature,
        )
        self.training = training
        self._rng = np.random.default_rng(seed)
        self._parts: dict[str, list[np.ndarray]] = {}
        self._data: dict[str, torch.Tensor] = {}
        self._dirty = False

    @property
    def size(self) -> int:
        """R, labelled states stored."""
        self._consolidate()
        return int(self._data["obs"].shape[0]) if self._data else 0

    def add(self, data: Mapping[str, np.ndarray]) -> int:
        """Store labelled states: ``obs``, ``probs``, optional ``action_mask`` and ``aux/<name>`` arrays.

        Returns the number of stored states.
        """
        if len(data["obs"]) == 0:
            return self.size
        for key, values in data.items():
            if values is None:
                continue
            self._parts.setdefault(key, []).append(np.asarray(values))
        self._dirty = True
        return self.size

    def train(self, updates: int) -> dict[str, Any]:
        """Take ``updates`` Adam steps on minibatches; return mean loss terms, samples and seconds."""
        self._consolidate()
        if updates == 0 or not self._data:
            return {"loss": {}, "samples": 0, "seconds": 0.0}
        size = self._data["obs"].shape[0]
        batch_size = min(self.training.batch_size, size)
        totals: dict[str, float] = {}
        start = time.perf_counter()

        self.module.train()
        for _ in range(updates):
            index = torch.from_numpy(self._rng.integers(0, size, size=batch_size))  # (M,)
            logits, aux = self.module(self._data["obs"][index])
            mask = self._data["action_mask"][index] if "action_mask" in self._data else None
            teacher_aux = {name[4:]: values[index] for name, values in self._data.items() if name.startswith("aux/")}
            loss, terms = distillation_loss(
                logits, self._data["probs"][index], loss_weights=self.loss_weights,
                action_mask=mask, student_aux=aux, teacher_aux=teacher_aux,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value
        self.module.eval()

        seconds = time.perf_counter() - start
        return {
            "loss": {name: value / updates for name, value in totals.items()},
            "samples": updates * batch_size,
            "seconds": seconds,
        }

    def get_weights(self) -> dict[str, np.ndarray]:
        """Return a copy of the student's weights as float32 numpy arrays."""
        return Student(self.module).get_weights()

    def save(self, path: str, *, metadata: Mapping[str, Any] | None = None) -> None:
        """Save the student checkpoint (``<stem>.safetensors`` and ``<stem>.json``)."""
        Student(self.module).save(path, metadata=metadata)

    def _consolidate(self) -> None:
        if not self._dirty:
            return
        for key, parts in self._parts.items():
            joined = np.concatenate(parts)
            if key in self._data:
                joined = np.concatenate([self._data[key].numpy(), joined])
            cap = self.training.max_dataset_states
            if cap is not None and joined.shape[0] > cap:
                joined = joined[-cap:]
            self._data[key] = torch.from_numpy(np.ascontiguousarray(joined))
        self._parts = {}
        self._dirty = False
