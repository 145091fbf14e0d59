"""The LLM scenario end to end against the fake OpenAI-compatible server."""

from __future__ import annotations

import json

from policies.fake_openai import FakeOpenAIServer
from scenarios.cli import main

SECRET = "sk-test-do-not-log-0123456789"


def test_llm_scenario_runs_against_fake_server(tmp_path, monkeypatch, capsys):
    with FakeOpenAIServer(model="fake-model", api_key=SECRET) as server:
        monkeypatch.setenv("SHEPHERD_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("SHEPHERD_LLM_MODEL", "fake-model")
        monkeypatch.setenv("SHEPHERD_LLM_API_KEY", SECRET)
        out = tmp_path / "run"
        status = main([
            "run", "llm", "--out", str(out), "--no-progress",
            "--set", 'population.backend="serial"', "--set", "training.iterations=2",
        ])
        requests = server.chat_requests

    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teachers"] == ["llm/fake-model/spread_v0"]
    assert summary["labels"]["labelled"] > 0
    assert requests, "the teacher sent chat requests to the fake server"
    assert all(request.headers.get("authorization") == f"Bearer {SECRET}" for request in requests)

    # The key reaches the server and nothing else: no file of the run contains it.
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert SECRET not in captured.out
    assert SECRET not in captured.err
