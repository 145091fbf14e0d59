"""The learner trains in minibatches and reduces the distillation loss."""

from __future__ import annotations

import numpy as np
import pytest

from distill.config import LossConfig, TrainingConfig
from distill.learner import Learner
from policies.networks import NetworkConfig

CONFIG = NetworkConfig(input_shape=(6,), num_actions=3, hidden_sizes=(32,), aux_heads={"value": ()})


def labelled(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(rows, 6)).astype(np.float32)
    action = (obs[:, 0] > 0).astype(int) + (obs[:, 1] > 1).astype(int)
    probs = np.full((rows, 3), 0.05, dtype=np.float32)
    probs[np.arange(rows), action] = 0.9
    return {"obs": obs, "probs": probs, "aux/value": obs[:, 2].copy()}


def make_learner(**training) -> Learner:
    return Learner(
        CONFIG, loss=LossConfig(soft_label=1.0, auxiliary=0.5),
        training=TrainingConfig(batch_size=64, learning_rate=1e-2, **training), seed=0,
    )


def test_training_lowers_the_loss():
    learner = make_learner()
    learner.add(labelled(2000))
    first = learner.train(5)["loss"]["total"]
    for _ in range(10):
        last = learner.train(50)["loss"]["total"]
    assert last < first * 0.6
    assert learner.train(1)["samples"] == 64


def test_dataset_cap_keeps_the_newest_states():
    learner = make_learner(max_dataset_states=150)
    learner.add(labelled(100, seed=0))
    newest = labelled(100, seed=1)
    learner.add(newest)
    assert learner.size == 150
    np.testing.assert_array_equal(learner._data["obs"][-100:].numpy(), newest["obs"])


def test_weights_round_trip_to_a_student():
    from policies.student import Student

    learner = make_learner()
    learner.add(labelled(500))
    learner.train(20)
    student = Student.from_weights(CONFIG, learner.get_weights())
    obs = labelled(5, seed=3)["obs"]
    logits, _ = learner.module(__import__("torch").from_numpy(obs))
    np.testing.assert_allclose(student.logits(obs), logits.detach().numpy(), rtol=1e-5)


def test_train_without_data_is_a_no_op():
    assert make_learner().train(10) == {"loss": {}, "samples": 0, "seconds": 0.0}


def test_minibatch_never_exceeds_stored_states():
    learner = make_learner()
    learner.add(labelled(10))
    assert learner.train(3)["samples"] == pytest.approx(30)
