"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

This is a test double, not a model. It takes the place of vLLM, Ollama or the llama.cpp
server so that tests of the LLM teacher, end-to-end runs and scenario tests never need a
real model or the network. It serves ``POST /v1/chat/completions`` and
``GET /v1/models`` on a free loopback port, replies deterministically to the prompt,
returns token log-probabilities when the request includes ``logprobs``, and injects faults on
request: slow replies, error statuses (with ``Retry-After``), malformed JSON, bodies cut
short, answers cut at ``max_tokens``, answers that are no action, and replies without
log-probabilities. It records every request, so tests can check headers, retries and
the number of requests in flight.

Example:
    >>> from policies.fake_openai import FakeOpenAIServer, Fault
    >>> with FakeOpenAIServer(faults=[Fault.error_status(500)]) as server:
    ...     url = server.base_url  # "http://127.0.0.1:<port>/v1"; the first request gets HTTP 500
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.server
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from policies.llm.prompts import LEGAL_ACTIONS_PREFIX
from sim.worlds import ACTION_NAMES

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "fake-model"
FILLER_TOKEN = " I"
"""A token that starts no action name; the scripted model gives it some probability."""


@dataclasses.dataclass(frozen=True)
class FakeReply:
    """The fake model's reply to one prompt."""

    content: str
    """The answer text."""
    tokens: list[tuple[str, list[tuple[str, float]]]]
    """Content tokens in order, each with its top alternatives as (token, logprob), best first."""
    action_probs: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """The scripted model's probability of each action name (all actions, legal or not).
    Empty for answers that a fault scripted."""


ReplyFunction = Callable[[list[dict[str, Any]], Sequence[str]], FakeReply]
"""Maps a request's messages and the server's action names to a reply."""


FAULT_KINDS = ("slow", "status", "malformed_json", "truncated_body", "length", "answer", "no_logprobs")


@dataclasses.dataclass(frozen=True)
class Fault:
    """A misbehaviour applied to one request; build it with the class methods."""

    kind: str
    """One of ``FAULT_KINDS``."""
    delay_s: float = 0.0
    """Seconds to wait before a ``"slow"`` reply."""
    status: int = 200
    """HTTP status of a ``"status"`` fault."""
    retry_after: str | None = None
    """``Retry-After`` header of a ``"status"`` fault."""
    text: str = ""
    """Answer text of an ``"answer"`` or ``"length"`` fault."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Wait ``delay_s`` seconds, then reply normally (if the client still waits)."""
        return cls("slow", delay_s=delay_s)

    @classmethod
    def error_status(cls, status: int, *, retry_after: str | None = None) -> Fault:
        """Reply with ``status`` and an OpenAI-style error body, and ``Retry-After`` if given."""
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Reply 200 with a body that is not JSON."""
        return cls("malformed_json")

    @classmethod
    def truncated_body(cls) -> Fault:
        """Declare the full body length, send half of the body, and close the connection."""
        return cls("truncated_body")

    @classmethod
    def length(cls, text: str = "") -> Fault:
        """Reply with ``text`` and ``finish_reason: "length"``, as if cut at ``max_tokens``."""
        return cls("length", text=text)

    @classmethod
    def answer(cls, text: str) -> Fault:
        """Reply with ``text`` as the answer, whatever the prompt."""
        return cls("answer", text=text)

    @classmethod
    def no_logprobs(cls) -> Fault:
        """Reply normally but without log-probabilities, as servers without them do."""
        return cls("no_logprobs")



@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: Any
    """The parsed JSON body, or ``None``."""
    received_at: float
    """``time.monotonic()`` when the request arrived."""
    fault: Fault | None
    """The fault applied to it, if any."""
    reply: FakeReply | None
    """The fake model's reply, or ``None`` when a fault or an error status replaced it."""


def scripted_reply(messages: list[dict[str, Any]], action_names: Sequence[str]) -> FakeReply:
    """Return a deterministic reply: a distribution over actions derived from the prompt's hash.

    Every action name, legal or not, and the filler token ``" I"`` get a probability
    from the SHA-256 of the last user message. The answer is the most probable action
    among those the prompt's ``Legal actions:`` line lists (all actions without that
    line). Each action's first token is a leading space and its first three letters,
    capitalised (``" Rig"`` for ``right``), so clients must match tokens as prefixes.
    """
    prompt = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    legal = _legal_actions(prompt, action_names)
    digest = hashlib.sha256(prompt.encode()).digest()
    weights = [1.0 + digest[index % len(digest)] for index in range(len(action_names) + 1)]
    total = sum(weights)
    action_probs = {name: weight / total for name, weight in zip(action_names, weights)}
    filler_prob = weights[-1] / total

    chosen = max(legal, key=lambda name: (action_probs[name], -action_names.index(name)))
    first, rest = _first_token(chosen), chosen[3:]

    # Actions whose first tokens coincide share one entry, as they would in a real tokenizer.
    first_token_probs: dict[str, float] = collections.defaultdict(float)
    for name, prob in action_probs.items():
        first_token_probs[_first_token(name)] += prob
    first_token_probs[FILLER_TOKEN] += filler_prob
    alternatives = [(token, math.log(prob)) for token, prob in first_token_probs.items()]
    alternatives.sort(key=lambda item: -item[1])

    tokens = [(first, alternatives)]
    if rest:
        tokens.append((rest, [(rest, 0.0)]))
    return FakeReply(content=(first + rest).strip(), tokens=tokens, action_probs=action_probs)


class FakeOpenAIServer:
    """A fake OpenAI-compatible server on ``127.0.0.1``, started by ``with`` or ``start()``.

    Args:
        model: the only model name it serves; other names get HTTP 404.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get HTTP 401.
        action_names: action names the scripted model chooses from.
        reply_function: maps messages and action names to a reply; ``scripted_reply`` by default.
        faults: faults for the first requests, one each, in arrival order.
        default_fault: fault for every request after those.
        port: port to bind; 0 picks a free one.
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        action_names: Sequence[str] = ACTION_NAMES,
        reply_function: ReplyFunction = scripted_reply,
        faults: Iterable[Fault | None] = (),
        default_fault: Fault | None = None,
        port: int = 0,
    ) -> None:
        self.model = model
        self.action_names = tuple(action_names)
        self.reply_function = reply_function
        self._api_key = api_key
        self._port = port
        self._lock = threading.Lock()
        self._faults: collections.deque[Fault | None] = collections.deque(faults)
        self._default_fault = default_fault
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._reply_count = 0
        self._stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FakeOpenAIServer(model={self.model!r}, base_url={self.base_url if self._httpd else None!r})"

    # Lifecycle.

    def start(self) -> Self:
        """Bind the port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("the fake OpenAI server is already running; call stop() first")
        self._stopping.clear()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        logger.debug("fake OpenAI server started at %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving; slow replies in progress stop waiting."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        logger.debug("fake OpenAI server at port %d stopped", self.port)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("the fake OpenAI server is not running; use it in a with block or call start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, the value for a client's ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # Faults and records.

    def push_faults(self, *faults: Fault | None) -> None:
        """Apply ``faults`` to the next requests, one each; ``None`` leaves a request alone."""
        with self._lock:
            self._faults.extend(faults)

    def set_default_fault(self, fault: Fault | None) -> None:
        """Apply ``fault`` to every request once the pushed faults are used up."""
        with self._lock:
            self._default_fault = fault

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far, in arrival order."""
        return [request for request in self.requests if request.path.endswith("/chat/completions")]

    @property
    def max_concurrent(self) -> int:
        """Maximum number of chat-completion requests in progress at the same time."""
        with self._lock:
            return self._max_in_flight

    # Request handling, called from the handler threads.

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else self._default_fault

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return len(self._requests) - 1

    def _complete_record(self, index: int, fault: Fault | None, reply: FakeReply | None) -> None:
        with self._lock:
            self._requests[index] = dataclasses.replace(self._requests[index], fault=fault, reply=reply)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return self._api_key is None or headers.get("authorization") == f"Bearer {self._api_key}"

    def _completion(self, reply: FakeReply, body: Mapping[str, Any], *, finish_reason: str) -> dict[str, Any]:
        tokens = reply.tokens
        max_tokens = body.get("max_tokens")
        content = reply.content
        if isinstance(max_tokens, int) and len(tokens) > max_tokens:
            tokens = tokens[:max_tokens]
            content = "".join(token for token, _ in tokens).strip()
            finish_reason = "length"

        logprobs = None
        if body.get("logprobs"):
            top = int(body.get("top_logprobs") or 0)
            logprobs = {"content": [_token_entry(token, alternatives, top) for token, alternatives in tokens]}
        with self._lock:
            self._reply_count += 1
            number = self._reply_count
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": logprobs,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens), "total_tokens": len(tokens)},
        }


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves one connection of the fake server; HTTP/1.1, so connections are kept alive."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1"

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake OpenAI server: " + format, *args)

    def do_GET(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.fake._record(RecordedRequest("GET", self.path, headers, None, time.monotonic(), None, None))
        if not self.fake._authorized(headers):
            self._send_error(401, "Incorrect API key provided.", "invalid_api_key")
        elif self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})
        else:
            self._send_error(404, f"Unknown path {self.path}.", "not_found")

    def do_POST(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received_at = time.monotonic()

        if self.path.rstrip("/") != "/v1/chat/completions":
            self.fake._record(RecordedRequest("POST", self.path, headers, body, received_at, None, None))
            self._send_error(404, f"Unknown path {self.path}.", "not_found")
            return

        # The record is complete and the request no longer in flight before the client can
        # see the reply, so a test may read them as soon as its call returns.
        index = self.fake._record(RecordedRequest("POST", self.path, headers, body, received_at, None, None))
        self.fake._enter()
        try:
            fault = self.fake._next_fault()
            response, reply = self._plan_response(headers, body, fault)
            self.fake._complete_record(index, fault, reply)
        finally:
            self.fake._leave()
        if response is None:
            self.close_connection = True
        else:
            self._send_bytes(**response)

    def _plan_response(
        self, headers: Mapping[str, str], body: Any, fault: Fault | None
    ) -> tuple[dict[str, Any] | None, FakeReply | None]:
        """Return the arguments of ``_send_bytes`` for one chat request, with ``fault`` applied,
        and the model's reply; no response when the server stops during a slow reply."""
        if not self.fake._authorized(headers):
            return _error_response(401, "Incorrect API key provided.", "invalid_api_key"), None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            message = "The body must be a JSON object with a list of messages."
            return _error_response(400, message, "invalid_request"), None
        if body.get("model") != self.fake.model:
            return _error_response(404, f"The model {body.get('model')!r} does not exist.", "model_not_found"), None

        kind = fault.kind if fault else None
        if fault is not None and kind == "slow" and self.fake._stopping.wait(fault.delay_s):
            return None, None
        if fault is not None and kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return _error_response(fault.status, f"Fake error status {fault.status}.", "fake_fault", extra), None
        if kind == "malformed_json":
            return {"status": 200, "payload": b'{"id": "chatcmpl-broken", "choices": [{"message": '}, None

        finish_reason = "stop"
        if fault is not None and kind in ("answer", "length"):
            text = fault.text
            reply = FakeReply(content=text, tokens=[(text, [(text, -0.1)])] if text else [])
            finish_reason = "length" if kind == "length" else "stop"
        else:
            reply = self.fake.reply_function(body["messages"], self.fake.action_names)
        completion = self.fake._completion(reply, body, finish_reason=finish_reason)
        if kind == "no_logprobs":
            completion["choices"][0]["logprobs"] = None

        payload = json.dumps(completion).encode()
        if kind == "truncated_body":
            return {"status": 200, "payload": payload[: len(payload) // 2], "declared_length": len(payload)}, reply
        return {"status": 200, "payload": payload}, reply

    def _send_json(self, status: int, value: Any) -> None:
        self._send_bytes(status=status, payload=json.dumps(value).encode())

    def _send_error(self, status: int, message: str, code: str) -> None:
        self._send_bytes(**_error_response(status, message, code))

    def _send_bytes(
        self,
        *,
        status: int,
        payload: bytes,
        declared_length: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a JSON response; a ``declared_length`` above the payload's cuts the body short."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(declared_length if declared_length is not None else len(payload)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout) before the reply was sent.
            self.close_connection = True
        if declared_length is not None and declared_length != len(payload):
            self.close_connection = True


def _error_response(
    status: int, message: str, code: str, extra_headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    error = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return {"status": status, "payload": json.dumps(error).encode(), "extra_headers": extra_headers}


def _first_token(name: str) -> str:
    return " " + name[:3].capitalize()


def _legal_actions(prompt: str, action_names: Sequence[str]) -> list[str]:
    for line in prompt.splitlines():
        if line.startswith(LEGAL_ACTIONS_PREFIX):
            listed = [name.strip() for name in line[len(LEGAL_ACTIONS_PREFIX) :].split(",")]
            legal = [name for name in listed if name in action_names]
            if legal:
                return legal
    return list(action_names)


def _token_entry(token: str, alternatives: list[tuple[str, float]], top: int) -> dict[str, Any]:
    logprob = next((value for alternative, value in alternatives if alternative == token), -0.1)
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": alternative, "logprob": value, "bytes": list(alternative.encode())}
            for alternative, value in alternatives[:top]
        ],
    }
