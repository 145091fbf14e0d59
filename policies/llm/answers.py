"""Turn a chat reply into an action distribution: from token log-probabilities, else from text.

Two paths, tried in order:

1. Log-probabilities. The first content token that is more than whitespace and
   punctuation should start an action name. Its top log-probabilities and the chosen
   token itself are matched to action names. A token matches an action when its
   lower-cased text, stripped of surrounding whitespace and punctuation, is a prefix of
   the name, because tokenizers split words (``" Ri"`` for ``right``). The probabilities of the
   tokens that match exactly one action are summed per action, restricted to the legal
   actions and renormalised. Tokens that match no action (``"I"``) carry no mass, and
   tokens that match several (``"move"`` for ``move_up`` and ``move_down``) carry none
   either. The path is skipped, in favour of the text, when the chosen token matches no
   single action, when no legal action has mass, or when ambiguous tokens hold more mass
   than the matched ones.
2. Text. The whole answer is matched to one action: the name itself, else the only
   action name among the answer's words, else the only name the answer is a prefix of
   (a reply cut by ``max_tokens``). The distribution is one-hot on that action, which
   reflects one sample of the model's choice rather than its full distribution.

An answer that neither path can map to a legal action is invalid; the teacher then uses
its fallback distribution and counts it.

Shape letters: A actions.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

SOURCE_LOGPROBS = "logprobs"
SOURCE_ANSWER = "answer"
SOURCE_INVALID = "invalid"

_EDGE_PUNCTUATION = re.compile(r"^[^0-9a-z]+|[^0-9a-z]+$")
_WORD = re.compile(r"[0-9a-z_\-]+")
_ACTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
# SentencePiece and byte-level BPE word-start markers, which some servers return raw.
_WORD_START_MARKERS = str.maketrans({"\u2581": " ", "\u0120": " "})


@dataclasses.dataclass(frozen=True)
class Decoded:
    """An action distribution read from one reply, or the reason there is none."""

    probs: np.ndarray | None
    """(A,) float32 probabilities over all actions, zero on illegal ones; ``None`` when invalid."""
    source: str
    """``"logprobs"``, ``"answer"`` or ``"invalid"``."""
    reason: str = ""
    """Reason the reply is invalid; empty for valid replies."""


def normalize_token(text: str) -> str:
    """Return ``text`` lower-cased, without surrounding whitespace and punctuation."""
    return _EDGE_PUNCTUATION.sub("", text.translate(_WORD_START_MARKERS).strip().lower())


def check_action_names(action_names: Sequence[str]) -> tuple[str, ...]:
    """Return ``action_names`` as a tuple, or raise if replies could not tell them apart.

    Names must be lower case, start with a letter or digit and contain only letters,
    digits, ``_`` and ``-``. No name may be a prefix of another, so a complete answer
    always names exactly one action.

    Raises:
        ValueError: fewer than two names, or a name that breaks the rules above.
    """
    names = tuple(action_names)
    if len(names) < 2:
        raise ValueError(f"action_names must name at least 2 actions, got {names!r}")
    for name in names:
        if not isinstance(name, str) or not _ACTION_NAME.match(name):
            raise ValueError(
                f"action name {name!r} is invalid: use lower-case letters, digits, '_' and '-', "
                "starting with a letter or digit"
            )
    for i, name in enumerate(names):
        for j, other in enumerate(names):
            if i != j and other.startswith(name):
                raise ValueError(
                    f"action name {name!r} is a prefix of {other!r} (or equal to it), so an answer "
                    "could not tell them apart; rename one of them"
                )
    return names


def parse_answer(text: str | None, action_names: Sequence[str]) -> int | None:
    """Return the index of the action that the answer text names, or ``None``.

    Matches, in order: the whole answer; the only action name among its words; the only
    name that the whole answer is a prefix of.
    """
    answer = normalize_token(text or "")
    if not answer:
        return None
    if answer in action_names:
        return action_names.index(answer)

    words = set(_WORD.findall(answer))
    named = [index for index, name in enumerate(action_names) if name in words]
    if len(named) == 1:
        return named[0]
    if named:
        return None

    prefixed = [index for index, name in enumerate(action_names) if name.startswith(answer)]
    return prefixed[0] if len(prefixed) == 1 else None


def match_token(token: str, action_names: Sequence[str]) -> list[int]:
    """Return the indices of the actions whose names start with the normalised ``token``."""
    text = normalize_token(token)
    if not text:
        return []
    return [index for index, name in enumerate(action_names) if name.startswith(text)]


def first_word_token(logprob_content: Sequence[Any]) -> Any | None:
    """Return the first token entry whose text is more than whitespace and punctuation."""
    for entry in logprob_content:
        if isinstance(entry, dict) and normalize_token(str(entry.get("token", ""))):
            return entry
    return None


def probs_from_logprobs(
    logprob_content: Sequence[Any] | None, action_names: Sequence[str], legal: np.ndarray
) -> np.ndarray | None:
    """Return (A,) probabilities from the top log-probabilities of the first word token.

    Returns ``None`` when the path does not apply; the module docstring lists the cases.
    """
    if not logprob_content:
        return None
    entry = first_word_token(logprob_content)
    if entry is None or len(match_token(str(entry.get("token", "")), action_names)) != 1:
        return None

    # The chosen token joins its alternatives, since sampling may pick one outside the top k.
    candidates: dict[str, float] = {}
    for alternative in [*(entry.get("top_logprobs") or []), entry]:
        if not isinstance(alternative, dict):
            continue
        token, logprob = alternative.get("token"), alternative.get("logprob")
        if isinstance(token, str) and isinstance(logprob, (int, float)) and math.isfinite(logprob):
            candidates.setdefault(token, float(logprob))

    mass = np.zeros(len(action_names), dtype=np.float64)  # (A,)
    ambiguous = 0.0
    for token, logprob in candidates.items():
        matches = match_token(token, action_names)
        if len(matches) == 1:
            mass[matches[0]] += math.exp(logprob)
        elif matches:
            ambiguous += math.exp(logprob)
    if ambiguous > mass.sum():
        return None

    mass[~legal] = 0.0
    total = mass.sum()
    if total <= 0.0:
        return None
    return (mass / total).astype(np.float32)


def decode_reply(
    *,
    content: str | None,
    finish_reason: str | None,
    logprob_content: Sequence[Any] | None,
    action_names: Sequence[str],
    legal: np.ndarray,
) -> Decoded:
    """Return the action distribution of one reply, or why it is invalid.

    Args:
        content: the message text; ``None`` when the server sent none.
        finish_reason: ``"length"`` marks an answer cut by ``max_tokens``.
        logprob_content: ``choices[0].logprobs.content`` of the reply, or ``None``.
        action_names: names of all actions, in action order.
        legal: (A,) bool legal actions.
    """
    probs = probs_from_logprobs(logprob_content, action_names, legal)
    if probs is not None:
        return Decoded(probs, SOURCE_LOGPROBS)

    index = parse_answer(content, action_names)
    if index is None:
        shown = (content or "")[:80]
        if finish_reason == "length":
            return Decoded(None, SOURCE_INVALID, f"answer cut at max_tokens without an action: {shown!r}")
        if not shown.strip():
            return Decoded(None, SOURCE_INVALID, "empty answer")
        return Decoded(None, SOURCE_INVALID, f"answer names no single action: {shown!r}")
    if not legal[index]:
        return Decoded(None, SOURCE_INVALID, f"answer {action_names[index]!r} is illegal here")

    probs = np.zeros(len(action_names), dtype=np.float32)  # (A,)
    probs[index] = 1.0
    return Decoded(probs, SOURCE_ANSWER)
