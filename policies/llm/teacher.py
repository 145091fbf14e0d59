"""The LLM teacher: labels states by asking a chat model behind an OpenAI-compatible API.

Each state becomes one chat request, in which the world's prompt template renders the
observation and lists the legal actions. The reply becomes an action distribution: from
the token log-probabilities where the server returns them, else from the answer text
(see ``policies.llm.answers``). Identical prompts within one ``label_many`` call are sent once.

Failure policy, so that a broken endpoint never hides behind fallback labels:

- A request whose retries run out, or a reply that names no legal action (an invalid
  answer), gives its states the fallback distribution: uniform over the legal actions, or
  a fixed action where it is legal. ``stats()`` counts both, and the log says why.
- A request that fails before the endpoint has ever replied raises
  ``LLMUnavailableError``: a wrong URL or a stopped server stops the run at once.
- ``max_consecutive_fallbacks`` fallbacks in a row (failed requests and invalid answers,
  in the order they complete) raise ``LLMUnavailableError`` as well.
- HTTP 401/403 raise ``LLMAuthError`` and other 4xx ``LLMRequestError``, at once.

Concurrency: ``label_many`` sends up to ``max_concurrency`` requests at once from a
thread pool that shares one ``httpx.Client``. Threads, not asyncio, because the teacher
is synchronous and may run inside an event loop that it does not own (a Ray Serve
replica), and because the threads only wait on sockets.

Configuration: the endpoint and model come from the spec or, where the spec leaves them
``None``, from ``$SHEPHERD_LLM_BASE_URL`` and ``$SHEPHERD_LLM_MODEL``. The API key comes
only from the environment variable that ``api_key_env`` names, read by ``build()`` in the
process that runs the teacher; it never enters the spec, a log line or ``describe()``.
On a Ray cluster, set these variables on every node or in the job's ``runtime_env``.

Shape letters: B states in a request, A actions.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import threading
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from policies.llm.answers import SOURCE_LOGPROBS, check_action_names, decode_reply
from policies.llm.client import ChatClient
from policies.llm.errors import LLMUnavailableError, RetriesExhaustedError
from policies.llm.prompts import GENERIC_TEMPLATE, SYSTEM_PROMPT, PromptTemplate, make_template
from policies.teacher import LabelRequest, Teacher
from sim.worlds import ACTION_NAMES

logger = logging.getLogger(__name__)

BASE_URL_ENV = "SHEPHERD_LLM_BASE_URL"
"""Environment variable with the endpoint's base URL, used when the spec has none."""
MODEL_ENV = "SHEPHERD_LLM_MODEL"
"""Environment variable with the model name, used when the spec has none."""
DEFAULT_API_KEY_ENV = "SHEPHERD_LLM_API_KEY"
"""Default name of the environment variable that contains the API key."""

MAX_TOP_LOGPROBS = 20
"""Largest ``top_logprobs`` the OpenAI chat-completions API accepts."""

FALLBACK_UNIFORM = "uniform"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class LLMTeacherSpec:
    """A picklable description of an LLM teacher; ``build()`` makes it where it runs.

    Example:
        >>> spec = LLMTeacherSpec(world="foraging_v0", base_url="http://127.0.0.1:8000/v1",
        ...                       model="qwen2.5-0.5b-instruct")
        >>> spec.teacher_id
        'llm/qwen2.5-0.5b-instruct/foraging_v0'
    """

    world: str
    """Prompt template: a native world name such as ``"foraging_v0"``, or ``"generic"``."""
    base_url: str | None = None
    """API root such as ``"http://127.0.0.1:8000/v1"``; ``None`` reads ``$SHEPHERD_LLM_BASE_URL``."""
    model: str | None = None
    """Model name sent with every request; ``None`` reads ``$SHEPHERD_LLM_MODEL``."""
    api_key_env: str = DEFAULT_API_KEY_ENV
    """Name of the environment variable that contains the API key (never the key itself).
    When the variable is unset or empty, requests carry no ``Authorization`` header."""
    action_names: tuple[str, ...] | None = None
    """Names of the actions in action order; ``None`` uses the native grid actions
    (stay, up, down, left, right). Required for the generic template."""
    task: str | None = None
    """Task description for the generic template; native templates have their own."""
    timeout_s: float = 30.0
    """Seconds allowed for connecting, sending and each read of a reply."""
    max_retries: int = 3
    """Retries of a request after its first attempt (timeouts, connection errors, 429, 5xx)."""
    backoff_s: float = 0.5
    """Seconds before the first retry; doubles with each retry, with jitter."""
    max_backoff_s: float = 10.0
    """Cap in seconds on the wait before a retry, ``Retry-After`` included."""
    max_concurrency: int = 8
    """Maximum number of chat requests in flight at once."""
    temperature: float = 0.0
    """Sampling temperature of the answer text. Whether the returned log-probabilities
    depend on it varies by server."""
    top_logprobs: int = 5
    """Alternatives per token to request, 0 to 20; 0 requests no log-probabilities."""
    max_tokens: int = 8
    """Maximum tokens of an answer; an action name is usually one to three tokens."""
    fallback: str | int = FALLBACK_UNIFORM
    """Distribution of a state without a valid answer: ``"uniform"`` over the legal
    actions, or the index of a fixed action (uniform where that action is illegal)."""
    max_consecutive_fallbacks: int | None = 16
    """Fallbacks in a row that stop the run with ``LLMUnavailableError``; ``None`` never stops."""
    deduplicate: bool = True
    """Send identical prompts of one ``label_many`` call once. With ``temperature > 0``
    and no log-probabilities, those states then share one sampled answer."""

    def __post_init__(self) -> None:
        if self.action_names is not None:
            object.__setattr__(self, "action_names", tuple(self.action_names))
        if _is_int(self.fallback):
            object.__setattr__(self, "fallback", int(self.fallback))
        if self.world == GENERIC_TEMPLATE and self.action_names is None:
            raise ValueError(
                f"the {GENERIC_TEMPLATE!r} prompt template needs action_names, the names of the "
                "world's actions in action order"
            )
        make_template(self.world, task=self.task)
        names = check_action_names(self.resolved_action_names())
        if not isinstance(self.api_key_env, str) or not _ENV_NAME.match(self.api_key_env):
            # The value is not echoed: a user who misread the field may have put the key here.
            raise ValueError(
                "api_key_env must be the name of an environment variable (letters, digits and '_', "
                "such as SHEPHERD_LLM_API_KEY), not the key itself; the value given is not shown"
            )
        if self.base_url is not None:
            check_base_url(self.base_url)

        self._check_settings(num_actions=len(names))

    def _check_settings(self, *, num_actions: int) -> None:
        number = _is_number
        checks = [
            ("timeout_s", number(self.timeout_s) and self.timeout_s > 0, "a positive number of seconds"),
            ("max_retries", _is_int(self.max_retries) and self.max_retries >= 0, "an integer >= 0"),
            ("backoff_s", number(self.backoff_s) and self.backoff_s >= 0, "a number of seconds >= 0"),
            (
                "max_backoff_s",
                number(self.max_backoff_s) and number(self.backoff_s) and self.max_backoff_s >= self.backoff_s,
                "a number of seconds >= backoff_s",
            ),
            ("max_concurrency", _is_int(self.max_concurrency) and self.max_concurrency >= 1, "an integer >= 1"),
            ("temperature", number(self.temperature) and self.temperature >= 0, "a number >= 0"),
            (
                "top_logprobs",
                _is_int(self.top_logprobs) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                f"an integer from 0 to {MAX_TOP_LOGPROBS}",
            ),
            ("max_tokens", _is_int(self.max_tokens) and self.max_tokens >= 1, "an integer >= 1"),
            (
                "max_consecutive_fallbacks",
                self.max_consecutive_fallbacks is None
                or (_is_int(self.max_consecutive_fallbacks) and self.max_consecutive_fallbacks >= 1),
                "an integer >= 1 or None",
            ),
            (
                "fallback",
                self.fallback == FALLBACK_UNIFORM or (_is_int(self.fallback) and 0 <= self.fallback < num_actions),
                f"'uniform' or an action index from 0 to {num_actions - 1}",
            ),
            ("deduplicate", isinstance(self.deduplicate, bool), "True or False"),
        ]
        for name, valid, expected in checks:
            if not valid:
                raise ValueError(f"LLM teacher setting {name} must be {expected}, got {getattr(self, name)!r}")

    def resolved_action_names(self) -> tuple[str, ...]:
        """Return the action names: ``action_names``, or the native grid actions."""
        return self.action_names if self.action_names is not None else tuple(ACTION_NAMES)

    def resolved_base_url(self) -> str:
        """Return ``base_url``, else ``$SHEPHERD_LLM_BASE_URL``.

        Raises:
            ValueError: neither is set, or the URL is invalid.
        """
        base_url = self.base_url or os.environ.get(BASE_URL_ENV, "").strip()
        if not base_url:
            raise ValueError(
                f"no LLM endpoint: set base_url in the teacher's settings or ${BASE_URL_ENV}, "
                "for example http://127.0.0.1:8000/v1"
            )
        check_base_url(base_url)
        return base_url

    def resolved_model(self) -> str:
        """Return ``model``, else ``$SHEPHERD_LLM_MODEL``.

        Raises:
            ValueError: neither is set.
        """
        model = self.model or os.environ.get(MODEL_ENV, "").strip()
        if not model:
            raise ValueError(
                f"no LLM model: set model in the teacher's settings or ${MODEL_ENV} to a name that "
                "the endpoint serves (GET <base_url>/models lists them)"
            )
        return model

    @property
    def teacher_id(self) -> str:
        """``"llm/<model>/<world>"``; reads ``$SHEPHERD_LLM_MODEL`` when ``model`` is ``None``."""
        return f"llm/{self.resolved_model()}/{self.world}"

    @property
    def version(self) -> str:
        """Prompt template version and a digest of everything else that shapes the labels."""
        template = make_template(self.world, task=self.task)
        settings = {
            "template": template.name,
            "template_version": template.version,
            "system_prompt": SYSTEM_PROMPT,
            "task": self.task,
            "action_names": self.resolved_action_names(),
            "temperature": self.temperature,
            "top_logprobs": self.top_logprobs,
            "max_tokens": self.max_tokens,
            "fallback": self.fallback,
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        return f"{template.name}.v{template.version}-{digest}"

    def build(self) -> LLMTeacher:
        """Build the teacher, reading the endpoint, model and key from the environment as needed."""
        return LLMTeacher(self)


@dataclasses.dataclass(frozen=True)
class LLMStats:
    """Counters of an LLM teacher since it was built."""

    states: int
    """States labelled."""
    chat_requests: int
    """Chat requests made (distinct prompts), each with one or more HTTP attempts."""
    deduplicated: int
    """States that reused the reply to an identical prompt in the same call."""
    http_attempts: int
    """HTTP requests sent, retries included."""
    retries: int
    """Attempts that were retries."""
    timeouts: int
    """Attempts that timed out."""
    connection_errors: int
    """Attempts that failed to connect or lost the connection."""
    malformed_replies: int
    """200 replies that were not a chat completion."""
    rate_limited: int
    """HTTP 429 replies."""
    http_errors: Mapping[str, int]
    """Error replies by status class, ``"4xx"`` and ``"5xx"``."""
    from_logprobs: int
    """Replies whose distribution came from token log-probabilities."""
    from_answer: int
    """Replies whose one-hot distribution came from the answer text."""
    invalid_answers: int
    """Replies that named no legal action."""
    failed_requests: int
    """Chat requests whose retries ran out."""
    fallbacks: int
    """States labelled with the fallback distribution (invalid answers and failed requests)."""


class _SkippedError(Exception):
    """A request that was not sent because another request of the same call raised."""


@dataclasses.dataclass(frozen=True)
class _Prompt:
    messages: list[dict[str, str]]
    legal: np.ndarray  # (A,) bool


class LLMTeacher(Teacher):
    """Labels states with an LLM behind an OpenAI-compatible chat-completions endpoint.

    Build it with ``LLMTeacherSpec.build()``. The module docstring gives the failure
    policy. Call ``close()`` (or use ``with``) to stop its threads and connections.
    """

    def __init__(self, spec: LLMTeacherSpec) -> None:
        super().__init__()
        self.spec = spec
        self.template: PromptTemplate = make_template(spec.world, task=spec.task)
        self.action_names = spec.resolved_action_names()
        self.num_actions = len(self.action_names)
        self.teacher_id = spec.teacher_id
        self.version = spec.version

        api_key = os.environ.get(spec.api_key_env, "").strip() or None
        self.client = ChatClient(
            base_url=spec.resolved_base_url(),
            model=spec.resolved_model(),
            api_key=api_key,
            api_key_env=spec.api_key_env,
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            backoff_s=spec.backoff_s,
            max_backoff_s=spec.max_backoff_s,
            max_connections=spec.max_concurrency,
        )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stats_lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("states", "chat_requests", "deduplicated", "from_logprobs", "from_answer",
             "invalid_answers", "failed_requests", "fallbacks"),
            0,
        )
        self._replies = 0
        self._consecutive_fallbacks = 0
        self._request_prefix = uuid.uuid4().hex[:8]
        self._request_numbers = itertools.count(1)
        logger.info(
            "LLM teacher %s (version %s) uses %s; API key from $%s: %s",
            self.teacher_id, self.version, self.client.chat_url, spec.api_key_env,
            "set" if api_key else "not set, so requests carry no Authorization header",
        )

    def __repr__(self) -> str:
        return f"LLMTeacher(teacher_id={self.teacher_id!r}, version={self.version!r}, client={self.client!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the request threads and close the connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.client.close()

    def stats(self) -> LLMStats:
        """Return the counters of requests, retries, errors, invalid answers and fallbacks."""
        client = self.client.counters()
        with self._stats_lock:
            counts = dict(self._counts)
        return LLMStats(
            http_attempts=client["http_attempts"],
            retries=client["retries"],
            timeouts=client["timeouts"],
            connection_errors=client["connection_errors"],
            malformed_replies=client["malformed_replies"],
            rate_limited=client["rate_limited"],
            http_errors={"4xx": client["http_4xx"], "5xx": client["http_5xx"]},
            **counts,
        )

    def describe(self) -> dict[str, Any]:
        """Return identity, cost, endpoint and counters as plain data; never the API key."""
        return {
            **super().describe(),
            "model": self.client.model,
            "base_url": self.client.base_url,
            "llm": dataclasses.asdict(self.stats()),
        }

    # Labelling.

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        return self._label_many([request])[0]

    def _label_many(self, requests: list[LabelRequest]) -> list[tuple[np.ndarray, Mapping[str, np.ndarray]]]:
        # Render one prompt per state; identical prompts share one key, so one request.
        prompts: dict[str, _Prompt] = {}
        keys_per_request: list[list[str]] = []
        for request in requests:
            self.template.check_observation_shape(tuple(request.obs.shape[1:]))
            legal_rows = request.action_mask
            if legal_rows is None:
                legal_rows = np.ones((request.size, self.num_actions), dtype=bool)  # (B, A)
            keys = []
            for row in range(request.size):
                legal = legal_rows[row]
                names = [self.action_names[index] for index in np.flatnonzero(legal)]
                messages = self.template.messages(request.obs[row], names)
                # The legal actions are part of the messages, so the key covers the mask too.
                key = json.dumps(messages) if self.spec.deduplicate else str(len(prompts))
                if key not in prompts:
                    prompts[key] = _Prompt(messages, legal.copy())
                keys.append(key)
            keys_per_request.append(keys)

        # Ask the model, up to max_concurrency requests at once.
        answers = dict(zip(prompts, self._ask_all(list(prompts.values())), strict=True))

        # Assemble one (B, A) array per request.
        results = []
        total_states = sum(len(keys) for keys in keys_per_request)
        fallback_states = 0
        for keys in keys_per_request:
            probs = np.zeros((len(keys), self.num_actions), dtype=np.float32)  # (B, A)
            for row, key in enumerate(keys):
                probs[row], is_fallback = answers[key]
                fallback_states += is_fallback
            results.append((probs, {}))
        with self._stats_lock:
            self._counts["states"] += total_states
            self._counts["chat_requests"] += len(prompts)
            self._counts["deduplicated"] += total_states - len(prompts)
            self._counts["fallbacks"] += fallback_states
        return results

    def _ask_all(self, prompts: list[_Prompt]) -> list[tuple[np.ndarray, bool]]:
        if len(prompts) <= 1 or self.spec.max_concurrency == 1:
            return [self._ask(prompt) for prompt in prompts]

        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.spec.max_concurrency, thread_name_prefix="llm-teacher"
            )
        stop = threading.Event()
        futures = [self._executor.submit(self._ask_unless_stopped, prompt, stop) for prompt in prompts]
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        if stop.is_set():
            # Requests that have not started yet are skipped; wait for the running ones, then raise.
            concurrent.futures.wait(futures)
            errors = [future.exception() for future in futures]
            raise next(error for error in errors if error is not None and not isinstance(error, _SkippedError))
        return [future.result() for future in futures]

    def _ask_unless_stopped(self, prompt: _Prompt, stop: threading.Event) -> tuple[np.ndarray, bool]:
        if stop.is_set():
            raise _SkippedError
        try:
            return self._ask(prompt)
        except BaseException:
            stop.set()
            raise

    def _ask(self, prompt: _Prompt) -> tuple[np.ndarray, bool]:
        """Return one prompt's (A,) distribution and whether it is the fallback."""
        request_id = f"{self._request_prefix}-{next(self._request_numbers)}"
        body: dict[str, Any] = {
            "messages": prompt.messages,
            "max_tokens": self.spec.max_tokens,
            "temperature": self.spec.temperature,
            "n": 1,
        }
        if self.spec.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.spec.top_logprobs

        try:
            reply = self.client.complete(body, request_id=request_id)
        except RetriesExhaustedError as error:
            self._on_failed_request(error, request_id)
            return self._fallback_probs(prompt.legal), True

        decoded = decode_reply(
            content=reply.content,
            finish_reason=reply.finish_reason,
            logprob_content=reply.logprob_content,
            action_names=self.action_names,
            legal=prompt.legal,
        )
        logger.debug("chat request %s (reply %s): %s", request_id, reply.reply_id, decoded.source)
        if decoded.probs is None:
            self._on_invalid_answer(decoded.reason, request_id)
            return self._fallback_probs(prompt.legal), True

        with self._stats_lock:
            self._replies += 1
            self._consecutive_fallbacks = 0
            self._counts["from_logprobs" if decoded.source == SOURCE_LOGPROBS else "from_answer"] += 1
        return decoded.probs, False

    # Failures.

    def _on_failed_request(self, error: RetriesExhaustedError, request_id: str) -> None:
        """Count a request whose retries ran out; raise if the endpoint never replied or fails too often."""
        with self._stats_lock:
            self._counts["failed_requests"] += 1
            failed = self._counts["failed_requests"]
            never_replied = self._replies == 0
        if never_replied:
            raise LLMUnavailableError(
                f"{self.teacher_id}: the LLM endpoint has not replied to any request yet, so the "
                f"teacher stops instead of making fallback labels: {error}. Check that the server "
                f"is running at base_url and serves the model"
            ) from error
        _log_repeated(
            failed,
            "%s: chat request %s failed, so its states get the fallback label (%d failed requests so far): %s",
            self.teacher_id, request_id, failed, error,
        )
        self._count_fallback(str(error))

    def _on_invalid_answer(self, reason: str, request_id: str) -> None:
        with self._stats_lock:
            self._replies += 1
            self._counts["invalid_answers"] += 1
            invalid = self._counts["invalid_answers"]
        _log_repeated(
            invalid,
            "%s: chat request %s returned an invalid answer, so its states get the fallback label "
            "(%d invalid answers so far): %s",
            self.teacher_id, request_id, invalid, reason,
        )
        self._count_fallback(reason)

    def _count_fallback(self, reason: str) -> None:
        limit = self.spec.max_consecutive_fallbacks
        with self._stats_lock:
            self._consecutive_fallbacks += 1
            in_a_row = self._consecutive_fallbacks
        if limit is not None and in_a_row >= limit:
            raise LLMUnavailableError(
                f"{self.teacher_id}: {in_a_row} chat requests in a row ended in fallback labels "
                f"(max_consecutive_fallbacks={limit}); last reason: {reason}. Check the server's "
                "logs and that the model follows the prompt, or raise max_consecutive_fallbacks"
            )

    def _fallback_probs(self, legal: np.ndarray) -> np.ndarray:
        probs = np.zeros(self.num_actions, dtype=np.float32)  # (A,)
        fixed = self.spec.fallback
        if isinstance(fixed, int) and legal[fixed]:
            probs[fixed] = 1.0
        else:
            probs[legal] = 1.0 / legal.sum()
        return probs


def check_base_url(base_url: str) -> None:
    """Raise ``ValueError`` unless ``base_url`` is an http(s) URL with a host and no credentials."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"base_url must be an http or https URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
        )
    if parts.username or parts.password:
        # The URL is not echoed, since it contains credentials.
        raise ValueError(
            "base_url must not contain credentials (user:password@); put the API key in the "
            "environment variable that api_key_env names"
        )


def _log_repeated(count: int, message: str, *args: object) -> None:
    """Log a repeated event at WARNING for its first 10 occurrences and every power of 10, else DEBUG."""
    level = logging.WARNING if count <= 10 or _is_power_of_ten(count) else logging.DEBUG
    logger.log(level, message, *args)


def _is_power_of_ten(count: int) -> bool:
    while count >= 10 and count % 10 == 0:
        count //= 10
    return count == 1


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value))
