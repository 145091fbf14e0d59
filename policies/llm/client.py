"""A client for OpenAI-compatible chat-completions endpoints, with timeouts and retries.

Servers such as vLLM, Ollama and the llama.cpp server expose ``POST {base_url}/chat/completions``
and ``GET {base_url}/models``, where ``base_url`` usually ends in ``/v1``.

Retry policy of ``ChatClient.complete``:

- Retried, up to ``max_retries`` times: timeouts, connection errors (refused, reset,
  a body cut short), HTTP 429, HTTP 5xx, and 200 replies that are not a chat completion
  (malformed JSON, missing ``choices``). Attempt ``k`` (from 0) waits
  ``min(max_backoff_s, backoff_s * 2**k)`` seconds scaled by a random factor in
  [0.5, 1] (jitter, so that concurrent requests do not retry in step). A ``Retry-After``
  header of a 429 or 503 raises the wait to its value, capped at ``max_backoff_s``.
- Raised at once: 401 and 403 as ``LLMAuthError`` (the key was rejected or is missing),
  other 4xx and 3xx as ``LLMRequestError`` (404: wrong ``base_url`` or model).
- After the last attempt: ``RetriesExhaustedError``, which the teacher turns into a
  fallback label or a stop.

The API key travels only in the ``Authorization`` header. It is never logged, never in
``repr``, and removed from any server text that an error message quotes.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from policies.llm.errors import LLMAuthError, LLMRequestError, LLMUnavailableError, RetriesExhaustedError

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
"""Header carrying the client's request id, so server logs can be matched to ours."""

COUNTER_NAMES = (
    "http_attempts",
    "retries",
    "timeouts",
    "connection_errors",
    "malformed_replies",
    "rate_limited",
    "http_4xx",
    "http_5xx",
)
"""Names of the counters that ``ChatClient.counters`` returns."""

_QUOTED_TEXT_CHARS = 300


@dataclasses.dataclass(frozen=True)
class ChatReply:
    """The parts of a chat completion that the teacher reads."""

    content: str | None
    """Text of ``choices[0].message``; ``None`` when the server sent none."""
    finish_reason: str | None
    """``"stop"``, ``"length"`` (cut at ``max_tokens``) or what the server sent."""
    logprob_content: list[Any] | None
    """``choices[0].logprobs.content``: per-token entries with ``top_logprobs``, or ``None``."""
    reply_id: str | None
    """The server's id of the completion."""
    attempts: int
    """HTTP attempts this reply took, 1 without retries."""


class _MalformedReplyError(Exception):
    """A 200 reply whose body is not a chat completion."""


class ChatClient:
    """Sends chat-completion requests to one endpoint from any number of threads.

    One ``httpx.Client`` with a pool of ``max_connections`` connections serves all
    threads, so concurrent requests reuse connections.

    Args:
        base_url: the API root, such as ``"http://127.0.0.1:8000/v1"``.
        model: the model name that every request names.
        api_key: sent as ``Authorization: Bearer <key>``; ``None`` sends no header.
        api_key_env: name of the environment variable the key came from, for messages.
        timeout_s: limit in seconds on connecting, on sending, and on each read of the
            reply (httpx applies it to each phase, so a server that trickles bytes can
            take longer in total).
        max_retries: retries after the first attempt of a request.
        backoff_s: wait before the first retry, in seconds; doubles with every retry.
        max_backoff_s: cap on any wait, in seconds, ``Retry-After`` included.
        max_connections: size of the connection pool.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        api_key_env: str,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        max_connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._api_key = api_key or None
        self._random = random.Random()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def __repr__(self) -> str:
        key = f"${self.api_key_env} (set)" if self._api_key else f"${self.api_key_env} (not set)"
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    @property
    def chat_url(self) -> str:
        """The chat-completions URL that requests go to."""
        return f"{self.base_url}/chat/completions"

    def counters(self) -> dict[str, int]:
        """Return a copy of the counters named in ``COUNTER_NAMES``."""
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # Requests.

    def complete(self, body: Mapping[str, Any], *, request_id: str) -> ChatReply:
        """Send one chat-completion request, retrying as the module docstring describes.

        Args:
            body: the request body without ``model``, which the client adds.
            request_id: sent in the ``X-Request-Id`` header and named in logs and errors.

        Raises:
            LLMAuthError: HTTP 401 or 403.
            LLMRequestError: another 4xx, or a 3xx.
            RetriesExhaustedError: every attempt failed in a retryable way.
        """
        payload = {**body, "model": self.model}
        headers = {REQUEST_ID_HEADER: request_id}
        reason = ""
        for attempt in range(self.max_retries + 1):
            self._count("http_attempts")
            retry_after = None
            start = time.perf_counter()
            try:
                response = self._http.post(self.chat_url, json=payload, headers=headers)
            except httpx.TimeoutException as error:
                self._count("timeouts")
                reason = f"timed out after {self.timeout_s:g} s ({type(error).__name__})"
            except httpx.TransportError as error:
                self._count("connection_errors")
                reason = f"connection failed ({type(error).__name__}: {self._redact(str(error))})"
            else:
                elapsed = time.perf_counter() - start
                logger.debug(
                    "chat request %s attempt %d: HTTP %d in %.3f s",
                    request_id, attempt + 1, response.status_code, elapsed,
                )
                if response.status_code == 200:
                    try:
                        return self._parse_reply(response, attempts=attempt + 1)
                    except _MalformedReplyError as error:
                        self._count("malformed_replies")
                        reason = f"malformed reply ({error})"
                else:
                    self._raise_for_status(response, request_id=request_id)
                    reason = f"HTTP {response.status_code}"
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))

            if attempt == self.max_retries:
                break
            delay = self._retry_delay(attempt, retry_after)
            self._count("retries")
            logger.warning(
                "chat request %s attempt %d of %d failed: %s; retrying in %.2f s",
                request_id, attempt + 1, self.max_retries + 1, reason, delay,
            )
            time.sleep(delay)

        raise RetriesExhaustedError(
            f"chat request {request_id} to {self.chat_url} failed after {self.max_retries + 1} "
            f"attempt(s); last error: {reason}"
        )

    def list_models(self) -> list[str]:
        """Return the model ids that ``GET {base_url}/models`` lists, in one attempt.

        Raises:
            LLMAuthError: HTTP 401 or 403.
            LLMRequestError: another error status, or a body without a ``data`` list.
            LLMUnavailableError: the endpoint could not be reached or timed out.
        """
        url = f"{self.base_url}/models"
        try:
            response = self._http.get(url)
        except httpx.TransportError as error:
            raise LLMUnavailableError(
                f"could not reach {url} ({type(error).__name__}: {self._redact(str(error))}); "
                "check that the server is running and that base_url is right"
            ) from error
        if response.status_code != 200:
            self._raise_for_status(response, request_id="models")
            raise LLMRequestError(f"GET {url} returned HTTP {response.status_code}")
        try:
            data = response.json()["data"]
            return [str(model["id"]) for model in data]
        except (ValueError, KeyError, TypeError) as error:
            raise LLMRequestError(f"GET {url} returned a body without a list of models in 'data'") from error

    # Helpers.

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return text

    def _quote(self, response: httpx.Response) -> str:
        text = self._redact(response.text[:_QUOTED_TEXT_CHARS]).strip()
        return f": {text!r}" if text else ""

    def _raise_for_status(self, response: httpx.Response, *, request_id: str) -> None:
        """Count an error status and raise unless a retry could help (429, 5xx)."""
        status = response.status_code
        if status == 429:
            self._count("rate_limited")
        self._count("http_5xx" if status >= 500 else "http_4xx")
        if status == 429 or status >= 500:
            return

        where = f"{response.request.method} {response.request.url} (request {request_id})"
        if status in (401, 403):
            if self._api_key:
                fix = f"the key in ${self.api_key_env} was rejected; set a valid key there"
            else:
                fix = f"no key was sent because ${self.api_key_env} is not set; set the endpoint's key there"
            raise LLMAuthError(f"{where} returned HTTP {status}: {fix}{self._quote(response)}")
        if status == 404:
            raise LLMRequestError(
                f"{where} returned HTTP 404: check base_url (it usually ends in /v1, for example "
                f"http://127.0.0.1:8000/v1) and that the server serves model {self.model!r}"
                f"{self._quote(response)}"
            )
        raise LLMRequestError(f"{where} returned HTTP {status}, which a retry cannot fix{self._quote(response)}")

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * self._random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay

    @staticmethod
    def _parse_reply(response: httpx.Response, *, attempts: int) -> ChatReply:
        try:
            body = json.loads(response.content)
        except ValueError as error:
            raise _MalformedReplyError(f"body is not JSON: {error}") from error
        try:
            choice = body["choices"][0]
            message = choice["message"]
            content = message.get("content")
            logprobs = choice.get("logprobs") or {}
            logprob_content = logprobs.get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise _MalformedReplyError(
                f"no choices[0].message in the body ({type(error).__name__}: {error})"
            ) from error
        if content is not None and not isinstance(content, str):
            raise _MalformedReplyError(f"message content is a {type(content).__name__}, not a string")
        if logprob_content is not None and not isinstance(logprob_content, list):
            raise _MalformedReplyError("logprobs.content is not a list")
        reply_id = body.get("id")
        return ChatReply(
            content=content,
            finish_reason=choice.get("finish_reason"),
            logprob_content=logprob_content,
            reply_id=str(reply_id) if reply_id is not None else None,
            attempts=attempts,
        )


def parse_retry_after(value: str | None) -> float | None:
    """Return the wait in seconds that a ``Retry-After`` header requests, or ``None``.

    Accepts delay-seconds (fractions too, which some servers send) and HTTP dates.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
