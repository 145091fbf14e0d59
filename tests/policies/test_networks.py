"""Tests of network configs, the networks they build, their costs and action masking."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from policies.networks import (
    NetworkConfig,
    PolicyNetwork,
    build_network,
    count_params,
    default_student_config,
    default_teacher_config,
    flops_per_decision,
    mask_logits,
)

CONFIGS = {
    "mlp": NetworkConfig(input_shape=(4,), num_actions=3, hidden_sizes=(8,)),
    "mlp_grid": NetworkConfig(input_shape=(5, 5, 2), num_actions=5, hidden_sizes=(16, 8)),
    "conv": NetworkConfig(
        input_shape=(5, 5, 2), num_actions=5, kind="conv", conv_channels=(4, 6), kernel_sizes=(3, 1), hidden_sizes=(8,)
    ),
    "aux_extra": NetworkConfig(
        input_shape=(3, 3, 2),
        num_actions=4,
        kind="conv",
        conv_channels=(4,),
        kernel_sizes=(3,),
        extra_input_size=6,
        aux_heads={"value": (1,), "goal": (2, 3)},
        activation="tanh",
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_json_round_trip(name):
    config = CONFIGS[name]
    restored = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_shapes(name):
    config = CONFIGS[name]
    network = build_network(config)
    obs = torch.randn(7, *config.input_shape)
    extra = torch.randn(7, config.extra_input_size) if config.extra_input_size else None
    logits, aux = network(obs, extra)
    assert logits.shape == (7, config.num_actions)
    assert {name: tuple(value.shape) for name, value in aux.items()} == {
        name: (7, *shape) for name, shape in config.aux_heads
    }


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_flops_match_torch_flop_counter(name):
    config = CONFIGS[name]
    network = build_network(config)
    obs = torch.randn(1, *config.input_shape)
    extra = torch.randn(1, config.extra_input_size) if config.extra_input_size else None
    with FlopCounterMode(display=False) as counter:
        network(obs, extra)
    assert flops_per_decision(config) == counter.get_total_flops()


def test_flops_and_params_by_hand():
    config = CONFIGS["mlp"]
    # Layers 4 -> 8 -> 3: weights plus biases, and two FLOPs per multiply-add.
    assert count_params(build_network(config)) == 4 * 8 + 8 + 8 * 3 + 3
    assert flops_per_decision(config) == 2 * (4 * 8 + 8 * 3)


def test_conv_flops_by_hand():
    config = NetworkConfig(
        input_shape=(5, 5, 2), num_actions=3, kind="conv", conv_channels=(4,), kernel_sizes=(3,), hidden_sizes=(8,)
    )
    conv = 2 * 2 * 3 * 3 * 4 * 25
    linear = 2 * (4 * 25 * 8 + 8 * 3)
    assert flops_per_decision(config) == conv + linear


def test_conv_reads_channels_last():
    config = NetworkConfig(
        input_shape=(3, 3, 2), num_actions=2, kind="conv", conv_channels=(1,), kernel_sizes=(1,), hidden_sizes=(1,)
    )
    network = build_network(config)
    with torch.no_grad():
        network.convs[0].weight.copy_(torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1))
        network.convs[0].bias.zero_()
    obs = torch.zeros(1, 3, 3, 2)
    obs[0, 1, 2, 0] = 5.0
    features = network.convs(obs.permute(0, 3, 1, 2))
    assert features[0, 0, 1, 2] == 5.0
    assert features.sum() == 5.0


def test_default_sizes():
    with torch.device("meta"):
        teacher = build_network(default_teacher_config((7, 7, 3), 5))
        student = build_network(default_student_config((7, 7, 3), 5))
    assert 8_000_000 <= count_params(teacher) <= 10_000_000
    assert count_params(student) < 20_000
    student_flops = flops_per_decision(default_student_config((7, 7, 3), 5))
    teacher_flops = flops_per_decision(default_teacher_config((7, 7, 3), 5))
    assert student_flops <= 0.05 * teacher_flops


def test_build_network_returns_float32_policy_network():
    network = build_network(CONFIGS["mlp"])
    assert isinstance(network, PolicyNetwork)
    assert all(parameter.dtype == torch.float32 for parameter in network.parameters())


def test_missing_extra_input_raises():
    config = CONFIGS["aux_extra"]
    with pytest.raises(ValueError, match="extra input of width 6; pass extra"):
        build_network(config)(torch.zeros(1, *config.input_shape))


def test_build_network_rejects_non_config():
    with pytest.raises(TypeError, match="config must be a NetworkConfig, got dict"):
        build_network({"input_shape": (4,), "num_actions": 2})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"kind": "rnn"}, ValueError, "kind must be one of mlp, conv, got 'rnn'"),
        ({"activation": "gelu"}, ValueError, "activation must be one of relu, tanh, got 'gelu'"),
        ({"num_actions": 0}, ValueError, "num_actions must be >= 1, got 0"),
        ({"num_actions": 2.0}, TypeError, "num_actions must be an integer, got 2.0"),
        ({"hidden_sizes": (64, 0)}, ValueError, r"hidden_sizes must contain integers >= 1, got \(64, 0\)"),
        ({"hidden_sizes": 64}, TypeError, "hidden_sizes must be a sequence of integers, got 64"),
        ({"input_shape": ()}, ValueError, r"input_shape must have at least one axis, got \(\)"),
        ({"extra_input_size": -1}, ValueError, "extra_input_size must be >= 0, got -1"),
        ({"conv_channels": (4,)}, ValueError, r"apply only to kind='conv'; remove them or set kind='conv'"),
        ({"kind": "conv", "input_shape": (12,)}, ValueError, r"needs a \(V, V, C\) channels-last input_shape"),
        ({"kind": "conv"}, ValueError, "kind='conv' needs at least one entry in conv_channels"),
        (
            {"kind": "conv", "conv_channels": (4, 4), "kernel_sizes": (3,)},
            ValueError,
            "kernel_sizes needs one entry per convolution: conv_channels has 2, kernel_sizes has 1",
        ),
        (
            {"kind": "conv", "conv_channels": (4,), "kernel_sizes": (2,)},
            ValueError,
            r"kernel_sizes must be odd so that padding keeps the view size, got \(2,\)",
        ),
        ({"aux_heads": {"bad name": (1,)}}, ValueError, "auxiliary head names must be Python identifiers"),
        ({"aux_heads": {"value": (0,)}}, ValueError, r"aux_heads\['value'\] must contain integers >= 1"),
        (
            {"aux_heads": [("value", (1,)), ("value", (2,))]},
            ValueError,
            r"auxiliary head names repeat, got \['value', 'value'\]",
        ),
    ],
)
def test_invalid_config_raises(options, error, message):
    arguments = {"input_shape": (3, 3, 2), "num_actions": 5} | options
    with pytest.raises(error, match=message):
        NetworkConfig(**arguments)


def test_from_dict_rejects_unknown_key():
    data = CONFIGS["mlp"].to_dict() | {"dropout": 0.1}
    with pytest.raises(ValueError, match="unknown network config key.s. dropout; valid keys: activation"):
        NetworkConfig.from_dict(data)


def test_from_dict_rejects_missing_key():
    with pytest.raises(ValueError, match="network config is missing required key.s. num_actions"):
        NetworkConfig.from_dict({"input_shape": [4]})


def test_from_dict_rejects_non_mapping():
    with pytest.raises(TypeError, match="a network config must be a mapping, got list"):
        NetworkConfig.from_dict([("input_shape", [4])])


def test_mask_logits_zeroes_illegal_probabilities():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    mask = torch.tensor([[False, True, True], [True, True, False]])
    masked = mask_logits(logits, mask)
    probs = torch.softmax(masked, dim=1)
    assert probs[0, 0] == 0.0
    assert probs[1, 2] == 0.0
    assert masked.argmax(dim=1).tolist() == [1, 0]
    assert torch.isfinite(torch.log_softmax(masked, dim=1)).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))


def test_mask_logits_soft_label_loss_is_finite():
    masked = mask_logits(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[True, True, False]]))
    target = torch.tensor([[0.5, 0.5, 0.0]])
    loss = -(target * torch.log_softmax(masked, dim=1)).sum()
    assert torch.isfinite(loss)


def test_mask_logits_without_mask_is_identity():
    logits = torch.randn(2, 3)
    assert mask_logits(logits, None) is logits


def test_acting_skips_auxiliary_heads():
    config = NetworkConfig(input_shape=(4,), num_actions=3, hidden_sizes=(8,), aux_heads={"goal": (2,)})
    module = build_network(config)
    full_logits, aux = module(torch.zeros(2, 4))
    logits, no_aux = module(torch.zeros(2, 4), with_aux=False)
    assert set(aux) == {"goal"}
    assert no_aux == {}
    assert torch.equal(logits, full_logits)
    assert flops_per_decision(config, include_aux=False) == 2 * (4 * 8 + 8 * 3)
    assert flops_per_decision(config) == 2 * (4 * 8 + 8 * 3 + 8 * 2)
