"""Tests of ``build_report`` and ``python -m dashboards`` on complete and partial synthetic runs."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dashboards import RunNotFoundError, build_report
from dashboards.__main__ import main
from dashboards.report import FIGURES, format_value
from tests.dashboards.fake_run import FakeRun, truncate_last_line, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
FIGURE_NAMES = [spec.name for spec in FIGURES]
MALICIOUS_SCENARIO = 'pursuit <script>alert("x")</script>'


@pytest.fixture(scope="module")
def complete_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeRun, Path, str]:
    run = write_run(
        tmp_path_factory.mktemp("report") / "run", scenario=MALICIOUS_SCENARIO, team_names=("predator", "prey <b>")
    )
    report_path = build_report(run.run_dir)
    return run, report_path, report_path.read_text(encoding="utf-8")


@pytest.fixture
def fake_run(tmp_path: Path) -> FakeRun:
    return write_run(tmp_path / "run")


# A complete run.


def test_report_path(complete_report: tuple[FakeRun, Path, str]) -> None:
    run, report_path, _ = complete_report

    assert report_path == run.run_dir / "report.html"


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_report_writes_png(complete_report: tuple[FakeRun, Path, str], name: str) -> None:
    run, _, _ = complete_report
    png = (run.run_dir / "plots" / f"{name}.png").read_bytes()

    assert png.startswith(PNG_MAGIC)
    assert len(png) > 10_000


def test_report_embeds_every_figure(complete_report: tuple[FakeRun, Path, str]) -> None:
    run, _, html = complete_report
    embedded = [base64.b64decode(data) for data in DATA_URI.findall(html)]

    assert len(embedded) == len(FIGURES)
    for name, png in zip(FIGURE_NAMES, embedded):
        assert png == (run.run_dir / "plots" / f"{name}.png").read_bytes(), name
    for name in FIGURE_NAMES:
        assert f'<a href="plots/{name}.png">' in html


@pytest.mark.parametrize(
    "text",
    [
        '<td>training rollouts, labelling time included</td><td class="number">48,214</td>',
        '<td>population driven by the teacher</td><td class="number">3,120.4</td>',
        '<td>population driven by the student</td><td class="number">152,346</td>',
        '<td>student-driven / teacher-driven (computed here)</td><td class="number">48.82</td>',
        '<td>action agreement</td><td class="number">0.8731</td>',
        '<td>KL(teacher || student)</td><td class="number">0.1842</td>',
        '<td>per-agent agreement p90</td><td class="number">0.9378</td>',
        '<td>teacher parameters</td><td class="number">n/a</td>',
        '<td>student time</td><td class="number">0.8125</td>',
        '<td>compute ratio (student / teacher)</td><td class="number">0.00197</td>',
        '<td>states labelled and stored</td><td class="number">8,000</td>',
        "<td>teachers</td><td>planner-depth2</td>",
    ],
)
def test_report_headline_numbers(complete_report: tuple[FakeRun, Path, str], text: str) -> None:
    _, _, html = complete_report

    assert text in html


def test_report_escapes_file_strings(complete_report: tuple[FakeRun, Path, str]) -> None:
    _, _, html = complete_report

    assert "<script" not in html
    assert "<b>" not in html
    assert "<title>shepherd run report: pursuit &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</title>" in html
    assert "<td>prey &lt;b&gt;</td>" in html
    assert "name = &quot;pursuit &lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;&quot;" in html


def test_report_complete_run_has_no_notes(complete_report: tuple[FakeRun, Path, str]) -> None:
    _, _, html = complete_report

    assert 'id="notes"' not in html
    assert "Figures left out" not in html


def test_report_tables(complete_report: tuple[FakeRun, Path, str]) -> None:
    _, _, html = complete_report

    assert '<td>predator</td><td class="number">100</td><td class="number">2</td>' in html
    assert html.count('<tr><td class="number">') == 8
    assert "<tr><th>rows (labelled states)</th><td>8,000</td></tr>" in html
    assert f"<tr><th>scenario hash</th><td>{'ab' * 32}</td></tr>" in html
    assert "agents = 200" in html


# Partial runs.


def test_report_without_evaluation(fake_run: FakeRun) -> None:
    build_report(fake_run.run_dir)
    (fake_run.run_dir / "evaluation.json").unlink()

    html = build_report(fake_run.run_dir).read_text()

    assert "evaluation.json is missing: the run may have stopped before its evaluation" in html
    assert "<li>Per-agent distributions: evaluation.json is missing or invalid.</li>" in html
    assert len(DATA_URI.findall(html)) == 4
    assert not (fake_run.run_dir / "plots" / "agent_distributions.png").exists()
    assert not (fake_run.run_dir / "plots" / "by_step.png").exists()
    assert (fake_run.run_dir / "plots" / "learning_curves.png").exists()


def test_report_without_summary(fake_run: FakeRun) -> None:
    (fake_run.run_dir / "summary.json").unlink()

    html = build_report(fake_run.run_dir).read_text()

    assert "<h2>Headline numbers</h2><p>Not available: summary.json is missing or invalid.</p>" in html
    assert "summary.json is missing: the run may have stopped before it finished" in html
    assert "<title>shepherd run report: pursuit-small</title>" in html
    assert len(DATA_URI.findall(html)) == len(FIGURES)


def test_report_truncated_metrics(fake_run: FakeRun) -> None:
    truncate_last_line(fake_run.run_dir / "metrics.jsonl")

    html = build_report(fake_run.run_dir).read_text()

    assert "metrics.jsonl line 8 is incomplete (the run may have stopped while writing it) and is skipped." in html
    assert html.count('<tr><td class="number">') == 7
    assert len(DATA_URI.findall(html)) == len(FIGURES)


def test_report_only_metrics(fake_run: FakeRun, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("config.toml", "evaluation.json", "summary.json", "dataset/manifest.json"):
        (fake_run.run_dir / name).unlink()

    html = build_report(fake_run.run_dir).read_text()

    assert html.count("is missing: ") == 4
    assert caplog.text.count("is missing: ") == 4
    assert len(DATA_URI.findall(html)) == 4
    assert "<li>summary.json (missing)</li>" in html


def test_report_only_summary(fake_run: FakeRun) -> None:
    (fake_run.run_dir / "metrics.jsonl").unlink()
    (fake_run.run_dir / "evaluation.json").unlink()

    html = build_report(fake_run.run_dir).read_text()

    assert "metrics.jsonl is missing: the learning curves and throughput over time are left out." in html
    assert DATA_URI.findall(html) == []
    assert list((fake_run.run_dir / "plots").iterdir()) == []
    assert '<td>population driven by the student</td><td class="number">152,346</td>' in html


def test_report_invalid_evaluation(fake_run: FakeRun) -> None:
    path = fake_run.run_dir / "evaluation.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "team_ids": [5] * 200}))

    html = build_report(fake_run.run_dir).read_text()

    assert "evaluation.json is invalid and is left out: " in html
    assert "&#x27;team_ids&#x27; contains 5, expected indices 0 to 1 into &#x27;team_names&#x27;" in html
    assert len(DATA_URI.findall(html)) == 4


# Errors and the command line.


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("absent", r"run directory .*absent does not exist; pass the directory that `shepherd run` wrote"),
        ("empty", r"empty is not a run directory: it contains neither metrics\.jsonl nor summary\.json"),
    ],
)
def test_report_not_a_run_directory(tmp_path: Path, name: str, match: str) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(RunNotFoundError, match=match):
        build_report(tmp_path / name)

    assert not (tmp_path / name / "report.html").exists()


def test_main_prints_report_path(fake_run: FakeRun, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([str(fake_run.run_dir)])

    assert status == 0
    assert capsys.readouterr().out == f"{fake_run.run_dir / 'report.html'}\n"


def test_main_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([str(tmp_path / "absent")])

    assert status == 2
    assert capsys.readouterr().err.startswith(f"error: run directory {tmp_path / 'absent'} does not exist")


def test_report_in_fresh_process(fake_run: FakeRun) -> None:
    """Import dashboards alone, then build a report from the files, without pyplot."""
    script = (
        "import sys\n"
        "import dashboards\n"
        "checked = {'sim', 'policies', 'distill', 'scenarios', 'matplotlib'}\n"
        "loaded = sorted({name.split('.')[0] for name in sys.modules} & checked)\n"
        "print('loaded at import:', loaded)\n"
        "dashboards.build_report(sys.argv[1])\n"
        "print('pyplot:', 'matplotlib.pyplot' in sys.modules)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, str(fake_run.run_dir)], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "loaded at import: []" in result.stdout
    assert "pyplot: False" in result.stdout
    assert (fake_run.run_dir / "report.html").exists()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "n/a"),
        (float("nan"), "n/a"),
        (np.float64("inf"), "n/a"),
        (9733, "9,733"),
        (np.int64(12), "12"),
        (8000.0, "8,000"),
        (152345.6, "152,346"),
        (3120.4, "3,120.4"),
        (0.00197, "0.00197"),
        (-3.5, "-3.5"),
        ("a<b", "a<b"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_report_random_baseline_rows(tmp_path: Path) -> None:
    html = build_report(write_run(tmp_path / "run", random_baseline=True).run_dir).read_text()

    assert "<td>normalized return ratio (student - random) / (teacher - random)</td>" in html
    assert "<td>random-action return</td>" in html


def test_report_without_random_baseline(complete_report: tuple[FakeRun, Path, str]) -> None:
    _, _, html = complete_report

    assert "random-action return" not in html


def test_team_table_shows_head_to_head_returns(tmp_path):
    import json

    from dashboards import build_report
    from tests.dashboards.fake_run import write_run

    run_dir = tmp_path / "run"
    write_run(run_dir)
    evaluation_path = run_dir / "evaluation.json"
    evaluation = json.loads(evaluation_path.read_text())
    names = evaluation["team_names"]
    evaluation["teams"] = {
        name: {"student_return": 12.5 + index, "teacher_return": 13.0, "return_ratio": 0.9,
               "opponent_teacher_return": 11.25, "ratio_to_opponent": 1.1}
        for index, name in enumerate(names)
    }
    evaluation_path.write_text(json.dumps(evaluation))
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["consistency"]["head_to_head_ratio"] = 0.919
    summary_path.write_text(json.dumps(summary))

    html = build_report(run_dir).read_text()
    assert "student team vs teacher opponents" in html
    assert "12.5" in html
    assert "11.25" in html
    assert "head to head: student team / teacher-driven opponents" in html
