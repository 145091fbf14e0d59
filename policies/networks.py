"""Policy networks: a JSON-serialisable config, the torch module it builds, and its costs.

One ``NetworkConfig`` describes every network shepherd trains or loads: small students
and large neural teachers alike. ``build_network`` turns it into a ``PolicyNetwork``
whose forward pass maps a batch of observations (and optional extra input, such as a
teacher's privileged features) to action logits and auxiliary outputs.

Shape letters: B states in a batch, A actions, O the observation shape, F the width of
the extra input, and (V, V, C) a channels-last grid view.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

NETWORK_KINDS = ("mlp", "conv")
"""``"mlp"`` flattens the observation; ``"conv"`` runs 2-D convolutions over (V, V, C) views first."""

ACTIVATIONS = ("relu", "tanh")
"""Hidden-layer activations a config may name."""

DEFAULT_STUDENT_HIDDEN = (64, 64)
"""Hidden layer widths of the default student: two layers of 64 units."""

DEFAULT_TEACHER_HIDDEN = (2048, 2048, 2048)
"""Hidden layer widths of the default neural teacher: about 8.4M parameters in its three
2048-wide layers, so its forward pass is dominated by large matrix products."""


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """A policy network's architecture, validated on construction and stored as JSON.

    ``aux_heads`` may be given as a mapping of name to per-state shape. The config stores
    it as a tuple of ``(name, shape)`` pairs sorted by name, so it stays hashable.

    Example:
        >>> config = NetworkConfig(input_shape=(7, 7, 3), num_actions=5)
        >>> config.hidden_sizes
        (64, 64)
        >>> NetworkConfig.from_dict(config.to_dict()) == config
        True
    """

    input_shape: tuple[int, ...]
    """O, the shape of one observation; ``"conv"`` networks need (V, V, C), channels last."""
    num_actions: int
    """A, the number of logits the policy head returns."""
    kind: str = "mlp"
    """``"mlp"`` or ``"conv"``."""
    hidden_sizes: tuple[int, ...] = DEFAULT_STUDENT_HIDDEN
    """Widths of the fully connected hidden layers, after the convolutions of a ``"conv"`` network."""
    conv_channels: tuple[int, ...] = ()
    """Output channels of each convolution; required for ``"conv"``, empty for ``"mlp"``."""
    kernel_sizes: tuple[int, ...] = ()
    """Odd kernel side of each convolution, one per entry of ``conv_channels``. Padding keeps V."""
    extra_input_size: int = 0
    """F, the width of a flat extra input joined to the flattened observation features."""
    aux_heads: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Auxiliary outputs, such as a subgoal or a value, as (name, per-state shape) pairs."""
    activation: str = "relu"
    """Hidden-layer activation: ``"relu"`` or ``"tanh"``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", _int_tuple("input_shape", self.input_shape, minimum=1))
        object.__setattr__(self, "hidden_sizes", _int_tuple("hidden_sizes", self.hidden_sizes, minimum=1))
        object.__setattr__(self, "conv_channels", _int_tuple("conv_channels", self.conv_channels, minimum=1))
        object.__setattr__(self, "kernel_sizes", _int_tuple("kernel_sizes", self.kernel_sizes, minimum=1))
        object.__setattr__(self, "aux_heads", _aux_heads(self.aux_heads))
        _require_int("num_actions", self.num_actions, minimum=1)
        _require_int("extra_input_size", self.extra_input_size, minimum=0)

        if not self.input_shape:
            raise ValueError("input_shape must have at least one axis, got ()")
        if self.kind not in NETWORK_KINDS:
            raise ValueError(f"kind must be one of {', '.join(NETWORK_KINDS)}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.kind == "conv":
            self._validate_conv()
        elif self.conv_channels or self.kernel_sizes:
            raise ValueError(
                f"conv_channels={self.conv_channels} and kernel_sizes={self.kernel_sizes} apply only to "
                "kind='conv'; remove them or set kind='conv'"
            )

    def _validate_conv(self) -> None:
        if len(self.input_shape) != 3:
            raise ValueError(
                f"kind='conv' needs a (V, V, C) channels-last input_shape, got {self.input_shape}; "
                "use kind='mlp' for flat observations"
            )
        if not self.conv_channels:
            raise ValueError("kind='conv' needs at least one entry in conv_channels, got ()")
        if len(self.kernel_sizes) != len(self.conv_channels):
            raise ValueError(
                f"kernel_sizes needs one entry per convolution: conv_channels has {len(self.conv_channels)}, "
                f"kernel_sizes has {len(self.kernel_sizes)}"
            )
        even = [size for size in self.kernel_sizes if size % 2 == 0]
        if even:
            raise ValueError(
                f"kernel_sizes must be odd so that padding keeps the view size, got {self.kernel_sizes}"
            )

    # Derived sizes.

    @property
    def observation_size(self) -> int:
        """Number of floats in one observation, the product of ``input_shape``."""
        return math.prod(self.input_shape)

    @property
    def aux_shapes(self) -> dict[str, tuple[int, ...]]:
        """Auxiliary heads as a dict of name to per-state shape."""
        return dict(self.aux_heads)

    # Serialisation.

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready plain data."""
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_actions": self.num_actions,
            "hidden_sizes": list(self.hidden_sizes),
            "conv_channels": list(self.conv_channels),
            "kernel_sizes": list(self.kernel_sizes),
            "extra_input_size": self.extra_input_size,
            "aux_heads": {name: list(shape) for name, shape in self.aux_heads},
            "activation": self.activation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkConfig:
        """Build a config from ``to_dict`` output.

        Raises:
            ValueError: ``data`` has unknown or missing keys, or invalid values.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a network config must be a mapping, got {type(data).__name__}")
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown network config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
        missing = sorted(key for key in ("input_shape", "num_actions") if key not in data)
        if missing:
            raise ValueError(f"network config is missing required key(s) {', '.join(missing)}")
        return cls(**dict(data))


def default_student_config(observation_shape: tuple[int, ...], num_actions: int) -> NetworkConfig:
    """Return the default student: an MLP with two hidden layers of 64 units."""
    return NetworkConfig(input_shape=tuple(observation_shape), num_actions=num_actions)


def default_teacher_config(
    observation_shape: tuple[int, ...],
    num_actions: int,
    *,
    extra_input_size: int = 0,
    hidden_sizes: tuple[int, ...] = DEFAULT_TEACHER_HIDDEN,
    aux_heads: Mapping[str, tuple[int, ...]] | None = None,
) -> NetworkConfig:
    """Return the default neural teacher: a wide MLP, about 8M parameters with the default widths."""
    return NetworkConfig(
        input_shape=tuple(observation_shape),
        num_actions=num_actions,
        hidden_sizes=tuple(hidden_sizes),
        extra_input_size=extra_input_size,
        aux_heads=dict(aux_heads or {}),
    )


class PolicyNetwork(nn.Module):
    """The module that ``build_network`` makes from a ``NetworkConfig``.

    The forward pass returns (B, A) logits and a dict of auxiliary outputs, each
    (B, *shape). Call it under ``torch.inference_mode()`` for acting and labelling.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        # In-place ReLU saves one activation-sized copy per layer; Linear's backward needs
        # only its input, so training is unaffected.
        activation = functools.partial(nn.ReLU, inplace=True) if config.activation == "relu" else nn.Tanh

        # Convolutions over the channels-first view, padded to keep V x V.
        convs: list[nn.Module] = []
        in_channels = config.input_shape[-1]
        for out_channels, kernel in zip(config.conv_channels, config.kernel_sizes):
            convs += [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), activation()]
            in_channels = out_channels
        self.convs = nn.Sequential(*convs)

        layers: list[nn.Module] = []
        width = _trunk_size(config) + config.extra_input_size
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.policy_head = nn.Linear(width, config.num_actions)
        self.aux = nn.ModuleDict({name: nn.Linear(width, math.prod(shape)) for name, shape in config.aux_heads})

    def forward(
        self, obs: torch.Tensor, extra: torch.Tensor | None = None, *, with_aux: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (B, A) logits and the auxiliary outputs for (B, *O) ``obs`` and (B, F) ``extra``.

        ``with_aux=False`` skips the auxiliary heads and returns an empty dict: acting
        needs only the logits.
        """
        batch = obs.shape[0]
        if self.config.kind == "conv":
            features = self.convs(obs.permute(0, 3, 1, 2))  # (B, C', V, V)
            features = features.reshape(batch, -1)  # (B, C' * V * V)
        else:
            features = obs.reshape(batch, -1)  # (B, prod(O))
        if self.config.extra_input_size:
            if extra is None:
                raise ValueError(
                    f"this network takes an extra input of width {self.config.extra_input_size}; pass extra"
                )
            features = torch.cat([features, extra], dim=1)  # (B, prod(O) + F)

        hidden = self.body(features)
        logits = self.policy_head(hidden)  # (B, A)
        if not with_aux:
            return logits, {}
        aux = {
            name: self.aux[name](hidden).reshape(batch, *shape)
            for name, shape in self.config.aux_heads
        }
        return logits, aux


def build_network(config: NetworkConfig) -> PolicyNetwork:
    """Build the float32 network that ``config`` describes, with torch's default initialisation."""
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config must be a NetworkConfig, got {type(config).__name__}")
    return PolicyNetwork(config)


def count_params(module: nn.Module) -> int:
    """Return the number of parameters of ``module``."""
    return sum(parameter.numel() for parameter in module.parameters())


def flops_per_decision(config: NetworkConfig, *, include_aux: bool = True) -> int:
    """Count the floating-point operations of one forward pass for one state, analytically.

    ``include_aux=False`` leaves out the auxiliary heads, which acting skips.

    Each multiply-add of a linear layer or convolution counts as two operations, as in
    the usual FLOPs convention. Bias additions, activations, the final softmax and mask
    are left out: they are linear in the layer widths and below 1% for any network with
    a hidden layer of 16 units or more.
    """
    flops = 0
    side_area = math.prod(config.input_shape[:2]) if config.kind == "conv" else 0
    in_channels = config.input_shape[-1]
    for out_channels, kernel in zip(config.conv_channels, config.kernel_sizes):
        flops += 2 * in_channels * kernel * kernel * out_channels * side_area
        in_channels = out_channels

    width = _trunk_size(config) + config.extra_input_size
    for hidden in config.hidden_sizes:
        flops += 2 * width * hidden
        width = hidden
    flops += 2 * width * config.num_actions
    if include_aux:
        for _, shape in config.aux_heads:
            flops += 2 * width * math.prod(shape)
    return flops


def mask_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Return ``logits`` with illegal actions set to the dtype's most negative finite value.

    A finite value, unlike ``-inf``, gives illegal actions probability exactly zero under
    softmax, never wins argmax over a legal action, and keeps ``log_softmax`` finite, so a
    soft-label loss ``-(p * log q).sum()`` stays free of ``0 * inf`` NaNs. A row with no
    legal action comes back uniform, so callers reject such rows first.
    """
    if action_mask is None:
        return logits
    return logits.masked_fill(~action_mask, torch.finfo(logits.dtype).min)


def _trunk_size(config: NetworkConfig) -> int:
    if config.kind == "conv":
        return config.conv_channels[-1] * math.prod(config.input_shape[:2])
    return config.observation_size


def _require_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _int_tuple(name: str, values: Any, *, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers, got {values!r}")
    values = tuple(values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must contain integers >= {minimum}, got {values}")
    return values


def _aux_heads(heads: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    items = heads.items() if isinstance(heads, Mapping) else heads
    pairs = []
    for item in items:
        name, shape = item
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"auxiliary head names must be Python identifiers, got {name!r}")
        pairs.append((name, _int_tuple(f"aux_heads[{name!r}]", shape, minimum=1)))
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"auxiliary head names repeat, got {names}")
    return tuple(sorted(pairs))
