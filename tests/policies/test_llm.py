"""The LLM teacher against the fake OpenAI-compatible server: distributions, faults, secrets."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import socket

import numpy as np
import pytest

import sim
from policies.fake_openai import DEFAULT_MODEL, FakeOpenAIServer, Fault, scripted_reply
from policies.llm import (
    BASE_URL_ENV,
    DEFAULT_API_KEY_ENV,
    MODEL_ENV,
    ChatClient,
    LLMAuthError,
    LLMRequestError,
    LLMTeacher,
    LLMTeacherSpec,
    LLMUnavailableError,
    available_templates,
    make_template,
)
from policies.llm.answers import check_action_names, decode_reply, parse_answer, probs_from_logprobs
from policies.llm.client import REQUEST_ID_HEADER, parse_retry_after
from policies.llm.prompts import LEGAL_ACTIONS_PREFIX
from policies.teacher import LabelInputError, LabelRequest, TeacherError
from sim.worlds import ACTION_NAMES

NATIVE_WORLDS = ("foraging_v0", "predator_prey_v0", "spread_v0")
SECRET_KEY = "sk-test-7f3a9c1e5b2d4680aa11"
# Short enough to keep fault tests fast, long enough that the fake server replies in time on a loaded machine.
FAST_TIMEOUT_S = 0.3
SLOW_REPLY_S = 1.5


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (BASE_URL_ENV, MODEL_ENV, DEFAULT_API_KEY_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def make_teacher(server):
    """Build teachers pointed at ``server`` with short timeouts; close them after the test."""
    teachers = []

    def make(**overrides) -> LLMTeacher:
        settings = {
            "world": "foraging_v0",
            "base_url": server.base_url,
            "model": DEFAULT_MODEL,
            "timeout_s": 5.0,
            "max_retries": 2,
            "backoff_s": 0.01,
            "max_backoff_s": 0.05,
            "top_logprobs": 10,
            **overrides,
        }
        teacher = LLMTeacherSpec(**settings).build()
        teachers.append(teacher)
        return teacher

    yield make
    for teacher in teachers:
        teacher.close()


def native_obs(world_name: str, num_agents: int = 8, seed: int = 0) -> np.ndarray:
    world = sim.make_world(world_name, num_agents=num_agents, seed=seed)
    return world.reset()


def distinct_obs(count: int) -> np.ndarray:
    """(count, 3, 3, 3) foraging windows that all render to different prompts."""
    obs = np.zeros((count, 3, 3, 3), dtype=np.float32)
    for index in range(count):
        obs[index, index // 3 % 3, index % 3, 2] = (index + 1) / count
    return obs


def expected_probs(messages: list[dict], legal: np.ndarray) -> np.ndarray:
    """The fake model's action distribution for ``messages``, renormalised over ``legal``."""
    reply = scripted_reply(messages, ACTION_NAMES)
    mass = np.array([reply.action_probs[name] for name in ACTION_NAMES]) * legal
    return mass / mass.sum()


def scripted_answer(teacher: LLMTeacher, obs: np.ndarray) -> str:
    """The action the fake model chooses for one observation with every action legal."""
    return scripted_reply(teacher.template.messages(obs, ACTION_NAMES), ACTION_NAMES).content.lower()


def uniform(legal: np.ndarray) -> np.ndarray:
    return legal / legal.sum()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Distributions.


@pytest.mark.parametrize("world_name", NATIVE_WORLDS)
def test_logprobs_match_fake_model(make_teacher, server, world_name):
    teacher = make_teacher(world=world_name)
    obs = native_obs(world_name)

    labels = teacher.label(LabelRequest(obs=obs))

    all_legal = np.ones(len(ACTION_NAMES), dtype=bool)
    for row in range(obs.shape[0]):
        messages = teacher.template.messages(obs[row], ACTION_NAMES)
        np.testing.assert_allclose(labels.probs[row], expected_probs(messages, all_legal), rtol=1e-5)
    stats = teacher.stats()
    assert stats.from_logprobs == stats.chat_requests
    assert stats.fallbacks == 0
    assert labels.teacher_id == f"llm/{DEFAULT_MODEL}/{world_name}"
    body = server.chat_requests[0].body
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 10
    assert body["model"] == DEFAULT_MODEL


def test_logprobs_renormalised_over_legal(make_teacher, server):
    teacher = make_teacher(world="spread_v0")
    obs = native_obs("spread_v0")
    rng = np.random.default_rng(0)
    mask = rng.random((obs.shape[0], len(ACTION_NAMES))) < 0.6
    mask[:, 0] = True

    labels = teacher.label(LabelRequest(obs=obs, action_mask=mask))

    for row in range(obs.shape[0]):
        legal_names = [name for name, legal in zip(ACTION_NAMES, mask[row]) if legal]
        messages = teacher.template.messages(obs[row], legal_names)
        np.testing.assert_allclose(labels.probs[row], expected_probs(messages, mask[row]), rtol=1e-5)
        assert labels.probs[row][~mask[row]].max(initial=0.0) == 0.0
    prompt = server.chat_requests[0].body["messages"][1]["content"]
    listed = [line for line in prompt.splitlines() if line.startswith(LEGAL_ACTIONS_PREFIX)]
    assert len(listed) == 1


def test_prompt_lists_only_legal_actions(make_teacher, server):
    teacher = make_teacher()
    mask = np.array([[True, False, True, False, True]])

    teacher.label(LabelRequest(obs=distinct_obs(1), action_mask=mask))

    prompt = server.chat_requests[0].body["messages"][1]["content"]
    assert f"{LEGAL_ACTIONS_PREFIX} stay, down, right\n" in prompt


def test_answer_text_without_logprobs_is_one_hot(make_teacher, server):
    teacher = make_teacher(top_logprobs=0)
    obs = distinct_obs(4)

    labels = teacher.label(LabelRequest(obs=obs))

    assert all("logprobs" not in request.body for request in server.chat_requests)
    for row in range(obs.shape[0]):
        answer = scripted_answer(teacher, obs[row])
        expected = np.eye(len(ACTION_NAMES), dtype=np.float32)[ACTION_NAMES.index(answer)]
        np.testing.assert_array_equal(labels.probs[row], expected)
    assert teacher.stats().from_answer == 4
    assert teacher.stats().from_logprobs == 0


def test_reply_without_logprobs_uses_answer(make_teacher, server):
    teacher = make_teacher()
    server.push_faults(Fault.no_logprobs())

    labels = teacher.label(LabelRequest(obs=distinct_obs(1)))

    answer = server.chat_requests[0].reply.content.lower()
    assert labels.probs[0, ACTION_NAMES.index(answer)] == 1.0
    assert teacher.stats().from_answer == 1


@pytest.mark.parametrize("top_logprobs", [0, 10])
def test_answer_cut_at_max_tokens_still_parsed(make_teacher, server, top_logprobs):
    teacher = make_teacher(max_tokens=1, top_logprobs=top_logprobs)
    obs = distinct_obs(6)

    labels = teacher.label(LabelRequest(obs=obs))

    assert teacher.stats().invalid_answers == 0
    for row in range(obs.shape[0]):
        assert labels.probs[row].argmax() == ACTION_NAMES.index(scripted_answer(teacher, obs[row]))


def test_identical_prompts_sent_once(make_teacher, server):
    teacher = make_teacher()
    obs = np.zeros((6, 3, 3, 3), dtype=np.float32)

    labels = teacher.label(LabelRequest(obs=obs))

    assert len(server.chat_requests) == 1
    assert teacher.stats().deduplicated == 5
    np.testing.assert_array_equal(labels.probs, np.repeat(labels.probs[:1], 6, axis=0))


def test_deduplicate_off_sends_every_state(make_teacher, server):
    teacher = make_teacher(deduplicate=False)

    teacher.label(LabelRequest(obs=np.zeros((3, 3, 3, 3), dtype=np.float32)))

    assert len(server.chat_requests) == 3
    assert teacher.stats().deduplicated == 0


def test_label_many_keeps_requests_apart(make_teacher):
    teacher = make_teacher(world="predator_prey_v0")
    first, second = native_obs("predator_prey_v0", seed=1), native_obs("predator_prey_v0", seed=2)

    labels = teacher.label_many([LabelRequest(obs=first), LabelRequest(obs=second[:3])])

    assert [label.size for label in labels] == [8, 3]
    np.testing.assert_array_equal(labels[1].probs, teacher.label(LabelRequest(obs=second[:3])).probs)
    assert teacher.stats().states == 14


def test_empty_request_sends_nothing(make_teacher, server):
    teacher = make_teacher()

    labels = teacher.label(LabelRequest(obs=np.zeros((0, 3, 3, 3), dtype=np.float32)))

    assert labels.probs.shape == (0, len(ACTION_NAMES))
    assert server.chat_requests == []


def test_generic_template_labels_vectors():
    names = ("north", "south", "east", "west")
    obs = np.array([[0.5, -1.25, 3.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    with FakeOpenAIServer(action_names=names) as server:
        spec = LLMTeacherSpec(
            world="generic", action_names=names, task="Reach the exit.",
            base_url=server.base_url, model=DEFAULT_MODEL, top_logprobs=10,
        )
        with spec.build() as teacher:
            labels = teacher.label(LabelRequest(obs=obs))
            stats = teacher.stats()

    assert labels.probs.shape == (2, 4)
    assert stats.from_logprobs == 2
    prompt = server.chat_requests[0].body["messages"][1]["content"]
    assert "Reach the exit." in prompt
    assert "0.5 -1.25 3" in prompt or "0 1 2" in prompt
    assert f"{LEGAL_ACTIONS_PREFIX} north, south, east, west" in prompt


# Faults.


def test_slow_reply_retried_after_timeout(make_teacher, server):
    teacher = make_teacher(timeout_s=FAST_TIMEOUT_S)
    server.push_faults(Fault.slow(SLOW_REPLY_S))

    labels = teacher.label(LabelRequest(obs=distinct_obs(1)))

    stats = teacher.stats()
    assert stats.timeouts == 1
    assert stats.retries == 1
    assert stats.fallbacks == 0
    assert len(server.chat_requests) == 2
    messages = teacher.template.messages(distinct_obs(1)[0], ACTION_NAMES)
    np.testing.assert_allclose(labels.probs[0], expected_probs(messages, np.ones(5, dtype=bool)), rtol=1e-5)


def test_retries_use_same_request_id(make_teacher, server):
    teacher = make_teacher()
    server.push_faults(Fault.error_status(500), Fault.error_status(503))

    teacher.label(LabelRequest(obs=distinct_obs(1)))

    ids = [request.headers[REQUEST_ID_HEADER.lower()] for request in server.chat_requests]
    assert len(ids) == 3
    assert len(set(ids)) == 1


def test_persistent_timeouts_give_counted_fallback(make_teacher, server):
    teacher = make_teacher(timeout_s=FAST_TIMEOUT_S, max_retries=1)
    teacher.label(LabelRequest(obs=distinct_obs(1)))
    server.set_default_fault(Fault.slow(SLOW_REPLY_S))

    labels = teacher.label(LabelRequest(obs=distinct_obs(2)[1:]))

    stats = teacher.stats()
    assert stats.timeouts == 2
    assert stats.failed_requests == 1
    assert stats.fallbacks == 1
    np.testing.assert_allclose(labels.probs[0], uniform(np.ones(5)), rtol=1e-6)


@pytest.mark.parametrize(
    ("fault", "counter"),
    [
        (Fault.error_status(500), "http_errors"),
        (Fault.error_status(503), "http_errors"),
        (Fault.malformed_json(), "malformed_replies"),
        (Fault.truncated_body(), "connection_errors"),
    ],
)
def test_transient_fault_then_success(make_teacher, server, fault, counter):
    teacher = make_teacher()
    server.push_faults(fault)

    labels = teacher.label(LabelRequest(obs=distinct_obs(1)))

    stats = teacher.stats()
    count = getattr(stats, counter)
    assert (count["5xx"] if counter == "http_errors" else count) == 1
    assert stats.retries == 1
    assert stats.fallbacks == 0
    assert stats.from_logprobs == 1
    assert labels.probs[0].sum() == pytest.approx(1.0)


def test_retry_after_respected(make_teacher, server):
    teacher = make_teacher(max_backoff_s=2.0)
    server.push_faults(Fault.error_status(429, retry_after="0.4"))

    teacher.label(LabelRequest(obs=distinct_obs(1)))

    first, second = server.chat_requests
    assert second.received_at - first.received_at >= 0.4
    assert teacher.stats().rate_limited == 1
    assert teacher.stats().http_errors["4xx"] == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault.answer("I am not sure."), "names no single action"),
        (Fault.answer(""), "empty answer"),
        (Fault.answer("up or down"), "names no single action"),
        (Fault.length(""), "cut at max_tokens"),
        (Fault.length("Let me th"), "cut at max_tokens"),
    ],
)
def test_invalid_answer_counted_with_fallback(make_teacher, server, caplog, fault, reason):
    teacher = make_teacher()
    server.push_faults(fault)

    with caplog.at_level(logging.WARNING, logger="policies.llm"):
        labels = teacher.label(LabelRequest(obs=distinct_obs(1)))

    stats = teacher.stats()
    assert stats.invalid_answers == 1
    assert stats.fallbacks == 1
    assert stats.retries == 0
    np.testing.assert_allclose(labels.probs[0], uniform(np.ones(5)), rtol=1e-6)
    request_id = server.chat_requests[0].headers[REQUEST_ID_HEADER.lower()]
    assert any(request_id in record.getMessage() and reason in record.getMessage() for record in caplog.records)


def test_illegal_answer_is_invalid(make_teacher, server):
    teacher = make_teacher(top_logprobs=0)
    server.push_faults(Fault.answer("left"))
    mask = np.array([[True, True, True, False, True]])

    labels = teacher.label(LabelRequest(obs=distinct_obs(1), action_mask=mask))

    assert teacher.stats().invalid_answers == 1
    np.testing.assert_allclose(labels.probs[0], uniform(mask[0]), rtol=1e-6)


def test_answer_cut_short_with_action_accepted(make_teacher, server):
    teacher = make_teacher()
    server.push_faults(Fault.length("Ri"))

    labels = teacher.label(LabelRequest(obs=distinct_obs(1)))

    assert labels.probs[0, ACTION_NAMES.index("right")] == 1.0
    assert teacher.stats().invalid_answers == 0


@pytest.mark.parametrize(
    ("fallback", "mask", "expected"),
    [
        (2, [True] * 5, [0, 0, 1, 0, 0]),
        (2, [True, True, False, True, False], [1 / 3, 1 / 3, 0, 1 / 3, 0]),
        ("uniform", [False, True, True, False, False], [0, 0.5, 0.5, 0, 0]),
    ],
)
def test_fallback_distribution(make_teacher, server, fallback, mask, expected):
    teacher = make_teacher(fallback=fallback)
    server.push_faults(Fault.answer("no idea"))

    labels = teacher.label(LabelRequest(obs=distinct_obs(1), action_mask=np.array([mask])))

    np.testing.assert_allclose(labels.probs[0], expected, rtol=1e-6)


def test_isolated_failure_gives_fallback(make_teacher, server):
    teacher = make_teacher(max_retries=1, max_concurrency=1)
    server.push_faults(None, Fault.error_status(500), Fault.error_status(500))

    labels = teacher.label(LabelRequest(obs=distinct_obs(3)))

    stats = teacher.stats()
    assert stats.failed_requests == 1
    assert stats.fallbacks == 1
    np.testing.assert_allclose(labels.probs[1], uniform(np.ones(5)), rtol=1e-6)
    assert stats.from_logprobs == 2


def test_consecutive_fallbacks_raise(make_teacher, server):
    teacher = make_teacher(max_consecutive_fallbacks=3, max_concurrency=1)
    server.set_default_fault(Fault.answer("banana"))

    with pytest.raises(LLMUnavailableError, match=r"3 chat requests in a row ended in fallback labels"):
        teacher.label(LabelRequest(obs=distinct_obs(6)))
    assert teacher.stats().invalid_answers == 3


def test_consecutive_fallbacks_unlimited_when_none(make_teacher, server):
    teacher = make_teacher(max_consecutive_fallbacks=None)
    server.set_default_fault(Fault.answer("banana"))

    labels = teacher.label(LabelRequest(obs=distinct_obs(6)))

    assert teacher.stats().fallbacks == 6
    np.testing.assert_allclose(labels.probs, np.full((6, 5), 0.2), rtol=1e-6)


# Errors that stop a run.


def test_unreachable_endpoint_raises():
    port = closed_port()
    spec = LLMTeacherSpec(
        world="foraging_v0", base_url=f"http://127.0.0.1:{port}/v1", model="m",
        timeout_s=FAST_TIMEOUT_S, max_retries=1, backoff_s=0.01,
    )
    with spec.build() as teacher:
        with pytest.raises(LLMUnavailableError, match=r"has not replied to any request yet.*connection failed"):
            teacher.label(LabelRequest(obs=distinct_obs(1)))
        assert teacher.stats().connection_errors == 2


def test_failing_endpoint_from_first_request_raises(make_teacher, server):
    teacher = make_teacher(max_retries=1)
    server.set_default_fault(Fault.error_status(502))

    with pytest.raises(LLMUnavailableError, match=r"failed after 2 attempt\(s\); last error: HTTP 502"):
        teacher.label(LabelRequest(obs=distinct_obs(4)))


def test_concurrent_failure_raises_once_all_stop(make_teacher, server):
    teacher = make_teacher(max_retries=0, max_concurrency=4)
    server.set_default_fault(Fault.error_status(500))

    with pytest.raises(LLMUnavailableError):
        teacher.label(LabelRequest(obs=distinct_obs(12)))
    assert len(server.chat_requests) <= 4


def test_rejected_key_raises_without_retry(monkeypatch):
    monkeypatch.setenv(DEFAULT_API_KEY_ENV, SECRET_KEY + "-wrong")
    with FakeOpenAIServer(api_key=SECRET_KEY) as server:
        spec = LLMTeacherSpec(world="foraging_v0", base_url=server.base_url, model=DEFAULT_MODEL, backoff_s=0.01)
        with spec.build() as teacher:
            rejected = rf"HTTP 401: the key in \${DEFAULT_API_KEY_ENV} was rejected"
            with pytest.raises(LLMAuthError, match=rejected) as error:
                teacher.label(LabelRequest(obs=distinct_obs(1)))
        assert SECRET_KEY not in str(error.value)
        assert len(server.chat_requests) == 1


def test_missing_key_named_in_auth_error():
    with FakeOpenAIServer(api_key=SECRET_KEY) as server:
        spec = LLMTeacherSpec(world="foraging_v0", base_url=server.base_url, model=DEFAULT_MODEL)
        with spec.build() as teacher:
            with pytest.raises(LLMAuthError, match=rf"no key was sent because \${DEFAULT_API_KEY_ENV} is not set"):
                teacher.label(LabelRequest(obs=distinct_obs(1)))


def test_unknown_model_raises_not_found(make_teacher, server):
    teacher = make_teacher(model="no-such-model")

    with pytest.raises(LLMRequestError, match=r"HTTP 404: check base_url .* serves model 'no-such-model'"):
        teacher.label(LabelRequest(obs=distinct_obs(1)))
    assert len(server.chat_requests) == 1


def test_bad_request_status_raises(make_teacher, server):
    teacher = make_teacher()
    server.push_faults(Fault.error_status(400))

    with pytest.raises(LLMRequestError, match=r"HTTP 400, which a retry cannot fix"):
        teacher.label(LabelRequest(obs=distinct_obs(1)))


def test_llm_errors_are_teacher_errors():
    assert issubclass(LLMUnavailableError, TeacherError)
    assert issubclass(LLMAuthError, TeacherError)


@pytest.mark.parametrize(
    ("world_name", "shape", "match"),
    [
        ("foraging_v0", (2, 5, 5, 4), r"foraging_v0 prompt: observations must be \(V, V, 3\) windows"),
        ("spread_v0", (2, 4, 4, 3), r"spread_v0 prompt: observations must be \(V, V, 3\) windows with odd V"),
        ("predator_prey_v0", (2, 12), r"predator_prey_v0 prompt: .*use the 'generic' template"),
    ],
)
def test_wrong_observation_shape_rejected(make_teacher, server, world_name, shape, match):
    teacher = make_teacher(world=world_name)

    with pytest.raises(LabelInputError, match=match):
        teacher.label(LabelRequest(obs=np.zeros(shape, dtype=np.float32)))
    assert server.chat_requests == []


def test_generic_template_rejects_huge_observation(make_teacher):
    teacher = make_teacher(world="generic", action_names=("a", "b"))

    with pytest.raises(LabelInputError, match=r"has 5000 numbers, more than the 4096"):
        teacher.label(LabelRequest(obs=np.zeros((1, 5000), dtype=np.float32)))


# Concurrency.


@pytest.mark.parametrize("max_concurrency", [1, 3])
def test_concurrency_limit_respected(make_teacher, server, max_concurrency):
    teacher = make_teacher(max_concurrency=max_concurrency)
    server.set_default_fault(Fault.slow(0.1))

    teacher.label(LabelRequest(obs=distinct_obs(9)))

    assert len(server.chat_requests) == 9
    assert server.max_concurrent <= max_concurrency
    if max_concurrency > 1:
        assert server.max_concurrent >= 2


# Configuration and secrets.


def test_environment_configures_endpoint(server, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, server.base_url)
    monkeypatch.setenv(MODEL_ENV, DEFAULT_MODEL)
    monkeypatch.setenv(DEFAULT_API_KEY_ENV, SECRET_KEY)
    spec = LLMTeacherSpec(world="spread_v0")

    with spec.build() as teacher:
        teacher.label(LabelRequest(obs=native_obs("spread_v0")))

    assert spec.teacher_id == f"llm/{DEFAULT_MODEL}/spread_v0"
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET_KEY}"


def test_custom_key_variable(server, monkeypatch):
    monkeypatch.setenv("MY_VLLM_KEY", SECRET_KEY)
    spec = LLMTeacherSpec(world="foraging_v0", base_url=server.base_url, model=DEFAULT_MODEL, api_key_env="MY_VLLM_KEY")

    with spec.build() as teacher:
        teacher.label(LabelRequest(obs=distinct_obs(1)))

    assert server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET_KEY}"


def test_no_key_sends_no_authorization(make_teacher, server):
    teacher = make_teacher()

    teacher.label(LabelRequest(obs=distinct_obs(1)))

    assert "authorization" not in server.chat_requests[0].headers


@pytest.mark.parametrize(
    ("missing", "match"),
    [
        (BASE_URL_ENV, rf"no LLM endpoint: set base_url in the teacher's settings or \${BASE_URL_ENV}"),
        (MODEL_ENV, rf"no LLM model: set model in the teacher's settings or \${MODEL_ENV}"),
    ],
)
def test_missing_endpoint_settings_raise(monkeypatch, missing, match):
    for name in (BASE_URL_ENV, MODEL_ENV):
        if name != missing:
            monkeypatch.setenv(name, "http://127.0.0.1:9/v1" if name == BASE_URL_ENV else "m")

    with pytest.raises(ValueError, match=match):
        LLMTeacherSpec(world="foraging_v0").build()


def test_key_never_leaks(server, monkeypatch, caplog):
    monkeypatch.setenv(DEFAULT_API_KEY_ENV, SECRET_KEY)
    spec = LLMTeacherSpec(
        world="foraging_v0", base_url=server.base_url, model=DEFAULT_MODEL,
        timeout_s=FAST_TIMEOUT_S, max_retries=3, backoff_s=0.01, max_consecutive_fallbacks=None,
    )
    server.push_faults(
        Fault.error_status(500), Fault.slow(SLOW_REPLY_S), Fault.malformed_json(), None, Fault.answer("what?")
    )

    with caplog.at_level(logging.DEBUG), spec.build() as teacher:
        teacher.label(LabelRequest(obs=distinct_obs(2)))
        texts = [repr(spec), repr(teacher), repr(teacher.client), str(teacher.describe())]

    assert server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert SECRET_KEY.encode() not in pickle.dumps(spec)
    for text in texts:
        assert SECRET_KEY not in text
    assert caplog.records
    assert SECRET_KEY not in caplog.text
    assert "retrying in" in caplog.text


def test_error_text_from_server_redacted(monkeypatch):
    monkeypatch.setenv(DEFAULT_API_KEY_ENV, SECRET_KEY)

    def echo_key(messages, action_names):
        raise AssertionError("the fault replies before the model")

    with FakeOpenAIServer(api_key="another-key", reply_function=echo_key) as server:
        client = ChatClient(
            base_url=server.base_url, model=DEFAULT_MODEL, api_key=SECRET_KEY, api_key_env=DEFAULT_API_KEY_ENV,
            timeout_s=5.0, max_retries=0, backoff_s=0.0, max_backoff_s=0.0, max_connections=1,
        )
        try:
            with pytest.raises(LLMAuthError) as error:
                client.complete({"messages": [{"role": "user", "content": SECRET_KEY}]}, request_id="r1")
        finally:
            client.close()
    assert SECRET_KEY not in str(error.value)


@pytest.mark.parametrize("value", [SECRET_KEY, "sk proj 123", "1STARTS_WITH_DIGIT", ""])
def test_key_in_api_key_env_rejected_unshown(value):
    with pytest.raises(ValueError, match=r"api_key_env must be the name of an environment variable") as error:
        LLMTeacherSpec(world="foraging_v0", api_key_env=value)
    if value:
        assert value not in str(error.value)


def test_credentials_in_base_url_rejected_unshown():
    with pytest.raises(ValueError, match=r"base_url must not contain credentials") as error:
        LLMTeacherSpec(world="foraging_v0", base_url=f"http://user:{SECRET_KEY}@127.0.0.1:8000/v1")
    assert SECRET_KEY not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"world": "foraging_v9"}, r"no prompt template for world 'foraging_v9'; available: foraging_v0, generic"),
        ({"world": "generic"}, r"the 'generic' prompt template needs action_names"),
        ({"task": "Win."}, r"task is only used by the 'generic' template"),
        ({"base_url": "127.0.0.1:8000/v1"}, r"base_url must be an http or https URL"),
        ({"timeout_s": 0}, r"timeout_s must be a positive number of seconds, got 0"),
        ({"timeout_s": "5"}, r"timeout_s must be a positive number of seconds, got '5'"),
        ({"max_retries": -1}, r"max_retries must be an integer >= 0, got -1"),
        ({"backoff_s": -0.5}, r"backoff_s must be a number of seconds >= 0"),
        ({"backoff_s": 2.0, "max_backoff_s": 1.0}, r"max_backoff_s must be a number of seconds >= backoff_s"),
        ({"max_concurrency": 0}, r"max_concurrency must be an integer >= 1, got 0"),
        ({"temperature": -1.0}, r"temperature must be a number >= 0"),
        ({"top_logprobs": 21}, r"top_logprobs must be an integer from 0 to 20, got 21"),
        ({"max_tokens": 0}, r"max_tokens must be an integer >= 1"),
        ({"fallback": 5}, r"fallback must be 'uniform' or an action index from 0 to 4, got 5"),
        ({"fallback": "random"}, r"fallback must be 'uniform' or an action index"),
        ({"max_consecutive_fallbacks": 0}, r"max_consecutive_fallbacks must be an integer >= 1 or None"),
        ({"deduplicate": "yes"}, r"deduplicate must be True or False"),
        ({"action_names": ("stay", "up")}, None),
        ({"action_names": ("go", "go_left")}, r"action name 'go' is a prefix of 'go_left'"),
        ({"action_names": ("Up", "down")}, r"action name 'Up' is invalid: use lower-case letters"),
        ({"action_names": ("up",)}, r"action_names must name at least 2 actions"),
    ],
)
def test_spec_validation(overrides, match):
    settings = {"world": "foraging_v0", "base_url": "http://127.0.0.1:8000/v1", "model": "m", **overrides}
    if match is None:
        assert LLMTeacherSpec(**settings).resolved_action_names() == ("stay", "up")
        return
    with pytest.raises(ValueError, match=match):
        LLMTeacherSpec(**settings)


def test_spec_pickles_and_lists_to_tuples():
    spec = LLMTeacherSpec(world="generic", action_names=["a", "b"], fallback=np.int64(1))

    restored = pickle.loads(pickle.dumps(spec))

    assert restored == spec
    assert restored.action_names == ("a", "b")
    assert type(restored.fallback) is int


def test_version_tracks_label_settings():
    base = LLMTeacherSpec(world="foraging_v0", model="m")

    assert base.version == LLMTeacherSpec(world="foraging_v0", model="other").version
    assert base.version.startswith("foraging_v0.v1-")
    for change in ({"temperature": 0.7}, {"top_logprobs": 2}, {"fallback": 0}, {"max_tokens": 4}):
        assert dataclasses.replace(base, **change).version != base.version, change
    assert dataclasses.replace(base, timeout_s=1.0, max_concurrency=2).version == base.version


def test_spec_builds_in_ray_worker(ray_session, server):
    spec = LLMTeacherSpec(world="foraging_v0", base_url=server.base_url, model=DEFAULT_MODEL, top_logprobs=10)
    obs = native_obs("foraging_v0")

    @ray_session.remote
    def label_remotely(spec: LLMTeacherSpec, obs: np.ndarray) -> np.ndarray:
        with spec.build() as teacher:
            return teacher.label(LabelRequest(obs=obs)).probs

    probs = ray_session.get(label_remotely.remote(spec, obs))

    with spec.build() as local:
        np.testing.assert_allclose(probs, local.label(LabelRequest(obs=obs)).probs, rtol=1e-6)


# Prompts.


def test_templates_cover_native_worlds():
    assert available_templates() == sorted([*sim.available_worlds(), "generic"])


def test_grid_prompt_renders_map_and_objects():
    template = make_template("foraging_v0")
    obs = np.zeros((3, 3, 3), dtype=np.float32)  # (V, V, C): wall, agents, food
    obs[:, 0, 0] = 1.0
    obs[0, 2, 2] = 0.5
    obs[2, 1, 1] = 2.0

    text = template.messages(obs, ["stay", "up"])[1]["content"]

    assert "#.F\n#@.\n#A.\n" in text
    assert "- other agent x2 at 1 down\n" in text
    assert "- food (value 0.50) at 1 up, 1 right\n" in text
    assert text.endswith(f"{LEGAL_ACTIONS_PREFIX} stay, up\nAction:")


@pytest.mark.parametrize(("is_predator", "task"), [(1.0, "You are a predator"), (0.0, "You are a prey")])
def test_predator_prey_prompt_follows_team(is_predator, task):
    template = make_template("predator_prey_v0")
    obs = np.zeros((5, 5, 4), dtype=np.float32)
    obs[..., 3] = is_predator
    obs[0, 0, 2] = 1.0

    text = template.describe(obs)

    assert text.startswith(task)
    assert "Y...." in text
    assert "- prey at 2 up, 2 left" in text


def test_grid_prompt_lists_nearest_objects_first():
    template = make_template("spread_v0")
    obs = np.zeros((21, 21, 3), dtype=np.float32)
    obs[..., 2] = 1.0  # a target on every cell

    text = template.describe(obs)

    assert "- target at your cell\n- target at 1 up\n" in text
    assert "- and 417 more farther away" in text


def test_real_observations_render(make_teacher):
    for world_name in NATIVE_WORLDS:
        obs = native_obs(world_name)
        template = make_template(world_name)
        for row in range(obs.shape[0]):
            text = template.describe(obs[row])
            side = obs.shape[1]
            map_lines = [line for line in text.splitlines() if len(line) == side and set(line) <= set("@.#AFTPY")]
            assert len(map_lines) == side, world_name


# Answers.


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("up", "up"),
        ("  Right.\n", "right"),
        ('"LEFT"', "left"),
        ("I choose down", "down"),
        ("Action: stay", "stay"),
        ("ri", "right"),
        ("s", "stay"),
        ("up or down", None),
        ("upward", None),
        ("", None),
        (None, None),
        ("banana", None),
    ],
)
def test_parse_answer(answer, expected):
    index = parse_answer(answer, ACTION_NAMES)

    assert (ACTION_NAMES[index] if index is not None else None) == expected


def entry(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}


def test_logprobs_ignore_filler_and_leading_space():
    legal = np.ones(5, dtype=bool)
    content = [
        entry(" ", -0.01, [(" ", -0.01)]),
        entry(" Up", np.log(0.5), [(" Up", np.log(0.5)), ("I", np.log(0.3)), ("Do", np.log(0.2))]),
    ]

    probs = probs_from_logprobs(content, ACTION_NAMES, legal)

    np.testing.assert_allclose(probs, [0, 0.5 / 0.7, 0.2 / 0.7, 0, 0], rtol=1e-6)


def test_logprobs_include_chosen_token_outside_top():
    content = [entry("Left", np.log(0.1), [("Up", np.log(0.6)), ("Down", np.log(0.2))])]

    probs = probs_from_logprobs(content, ACTION_NAMES, np.ones(5, dtype=bool))

    np.testing.assert_allclose(probs, [0, 6 / 9, 2 / 9, 1 / 9, 0], rtol=1e-6)


@pytest.mark.parametrize(
    ("chosen", "top", "answer", "expected_source"),
    [
        ("move", [("move", np.log(0.9)), ("stay", np.log(0.1))], "move_up", "answer"),
        ("stay", [("move", np.log(0.6)), ("stay", np.log(0.4))], "stay", "answer"),
        ("stay", [("stay", np.log(0.7)), ("move", np.log(0.3))], "stay", "logprobs"),
        ("I", [("I", np.log(0.9)), ("stay", np.log(0.1))], "I pick move_down", "answer"),
    ],
)
def test_ambiguous_tokens_defer_to_answer(chosen, top, answer, expected_source):
    names = check_action_names(("move_up", "move_down", "stay"))
    content = [entry(chosen, dict(top).get(chosen, -1.0), top)]

    decoded = decode_reply(content=answer, finish_reason="stop", logprob_content=content,
                           action_names=names, legal=np.ones(3, dtype=bool))

    assert decoded.source == expected_source
    assert decoded.probs is not None


def test_logprobs_all_illegal_fall_to_answer():
    content = [entry("Up", np.log(0.9), [("Up", np.log(0.9)), ("I", np.log(0.1))])]
    legal = np.array([True, False, True, True, True])

    decoded = decode_reply(content="up", finish_reason="stop", logprob_content=content,
                           action_names=ACTION_NAMES, legal=legal)

    assert decoded.source == "invalid"
    assert "'up' is illegal here" in decoded.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0.25", 0.25), ("-3", 0.0), ("soon", None), (None, None), ("nan", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


# The fake server itself.


def test_fake_server_lists_models(server):
    client = ChatClient(
        base_url=server.base_url, model=DEFAULT_MODEL, api_key=None, api_key_env=DEFAULT_API_KEY_ENV,
        timeout_s=5.0, max_retries=0, backoff_s=0.0, max_backoff_s=0.0, max_connections=1,
    )
    try:
        assert client.list_models() == [DEFAULT_MODEL]
    finally:
        client.close()


def test_fake_server_fault_schedule(server):
    server.push_faults(Fault.error_status(500), None)
    server.set_default_fault(Fault.answer("banana"))
    client = ChatClient(
        base_url=server.base_url, model=DEFAULT_MODEL, api_key=None, api_key_env=DEFAULT_API_KEY_ENV,
        timeout_s=5.0, max_retries=0, backoff_s=0.0, max_backoff_s=0.0, max_connections=1,
    )
    body = {"messages": [{"role": "user", "content": "hello"}]}
    try:
        with pytest.raises(TeacherError, match=r"failed after 1 attempt\(s\); last error: HTTP 500"):
            client.complete(body, request_id="r1")
        normal = client.complete(body, request_id="r2")
        scripted = client.complete(body, request_id="r3")
    finally:
        client.close()

    assert normal.content.lower() in ACTION_NAMES
    assert scripted.content == "banana"
    faults = [request.fault for request in server.chat_requests]
    assert faults == [Fault.error_status(500), None, Fault.answer("banana")]


def test_fault_kind_checked():
    with pytest.raises(ValueError, match=r"unknown fault kind 'hang'; expected one of slow, status"):
        Fault("hang")


def test_fake_server_port_before_start():
    fake = FakeOpenAIServer()

    with pytest.raises(RuntimeError, match=r"the fake OpenAI server is not running"):
        _ = fake.port
