"""The report renders (files, non-blank PNGs, tables), reads back, and compares two runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from eval_fixtures import VQA_ROWS, improved_rows, report_of, row

from medray.cli.main import cli
from medray.eval.compare import compare, render_markdown
from medray.eval.report import ReportError, load_report, vote_line, write_report
from medray.eval.report import (
    render_markdown as report_markdown,
)
from medray.eval.report_sections import fmt, markdown_table

pytestmark = pytest.mark.unit

PLOTS = ("risk_coverage.png", "accuracy_by_type.png", "confusion_closed.png", "latency.png")


_improved_rows = improved_rows
_report = report_of


@pytest.fixture
def report_dir(tmp_path):
    write_report(tmp_path / "r", _report([("base", VQA_ROWS), ("sft", _improved_rows())]))
    return tmp_path / "r"


def test_report_files_and_plots_render(report_dir):
    from PIL import Image

    for name in (*PLOTS, "report.md", "report.json"):
        assert (report_dir / name).is_file(), name
    for name in PLOTS:
        with Image.open(report_dir / name) as im:
            im.load()
            pixels = np.asarray(im.convert("L"), dtype=np.float64)
        assert im.format == "PNG" and min(im.size) > 100
        assert pixels.var() > 0, f"{name} is blank"
        assert (pixels < 128).mean() > 0.005, f"{name} has almost nothing drawn"
    md = (report_dir / "report.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in md
    assert "| accuracy | 0.400 | 0.600 |" in md
    assert "| τ = 0.5 | 0.500 | 0.600 |" in md  # base coverage/accuracy at τ 0.5
    assert (
        "| wrong_modality | a modality question answered with another modality | 1 (10.0%) | 0 |"
        in md
    )
    assert "Research use only" in md


def test_report_json_holds_every_figure(report_dir):
    rep = load_report(report_dir)
    assert rep["figures"] == {"risk_coverage": "risk_coverage.png", "accuracy_by_type": "accuracy_by_type.png",
                              "confusion_closed": "confusion_closed.png", "latency": "latency.png"}  # fmt: skip
    base = rep["runs"][0]["metrics"]
    assert base["vqa"]["accuracy"] == pytest.approx(0.4)
    assert base["calibration"]["curve"]["coverage"][-1] == 1.0
    assert base["confusion_yes_no"]["matrix"] == [[1, 0, 2], [1, 1, 1]]
    assert sum(base["latency"]["histogram"]["counts"]) == 9
    # the Markdown is a pure function of the JSON: re-rendering gives the same text
    assert report_markdown(rep) == (report_dir / "report.md").read_text()


def test_plots_without_data_are_left_out(tmp_path):
    rows = [row("a", task="report", answer=None, answer_type=None, pred_answer=None, parse_ok=False,
                parsed=None, confidence=None, reference_text="No effusion.", generated_text="No effusion.")]  # fmt: skip
    files = write_report(tmp_path / "r", _report([("base", rows)]))
    assert set(files) == {"latency.png", "report.json", "report.md"}
    md = (tmp_path / "r" / "report.md").read_text()
    assert "No closed yes/no questions." in md and "No VQA rows." in md
    assert "Generated text" in md


def test_load_report_refuses_other_folders(tmp_path):
    with pytest.raises(ReportError, match="no report.json"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ReportError, match="format 'x'"):
        load_report(tmp_path)


def test_compare_deltas_and_direction(report_dir):
    rep = load_report(report_dir)
    result = compare(rep, rep, "base", "sft")
    rows = {r[0]: r[1:] for r in result["rows"]}
    assert rows["accuracy"] == [pytest.approx(0.4), pytest.approx(0.6), pytest.approx(0.2), "B"]
    a_aurc, b_aurc, delta, ahead = rows["AURC"]
    assert delta == pytest.approx(b_aurc - a_aurc) and delta < 0 and ahead == "B"  # lower is better
    assert rows["JSON validity"][3] == "="
    assert rows["rows"][3] is None and result["comparable"]
    md = render_markdown(result)
    assert "| accuracy | 0.400 | 0.600 | 0.200 | B |" in md
    other = dict(rep, fingerprint="sha256:other")
    assert not compare(rep, other)["comparable"]
    with pytest.raises(ReportError, match=r"no run labelled 'grpo'; runs: \['base', 'sft'\]"):
        compare(rep, rep, "grpo")


def test_cli_report_show_and_compare(report_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["report", "show", str(report_dir)])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "0.400" in res.output and "report.md" in res.output
    lines = res.output.splitlines()  # a header row over a dashed rule (medray.cli.table)
    assert lines[1].split() == ["metric", "base", "sft"] and set(lines[2]) <= {"-", " "}
    res = runner.invoke(cli, ["report", "show", str(report_dir), "--json"])
    assert json.loads(res.output)["sft"]["accuracy"] == pytest.approx(0.6)
    out = tmp_path / "cmp"
    res = runner.invoke(cli, ["report", "compare", str(report_dir), str(report_dir),
                              "--a-label", "base", "--b-label", "sft", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "0.200" in res.output
    lines = res.output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert lines[head].split() == ["metric", "A:", "base", "B:", "sft", "B", "-", "A", "ahead"]
    assert set(lines[head + 1]) <= {"-", " "}
    assert "| accuracy | 0.400 | 0.600 | 0.200 | B |" in (out / "compare.md").read_text()
    assert json.loads((out / "compare.json").read_text())["b"]["label"] == "sft"
    res = runner.invoke(cli, ["report", "compare", str(report_dir), str(report_dir)])
    assert res.exit_code == 2 and "compares model 'base' with itself" in res.output
    assert "--a-label base --b-label sft" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(cli, ["report", "compare", str(report_dir), str(empty)])
    assert res.exit_code == 1 and "holds no evaluation report" in res.output
    assert "python -m jobs.evaluate" in res.output


def test_cli_report_finds_the_evaluate_folder_of_a_run(tmp_path):
    run = tmp_path / "runs" / "demo"
    write_report(run / "evaluate", _report([("base", VQA_ROWS), ("sft", _improved_rows())]))
    (run / "sft").mkdir()  # other stages' folders beside it
    res = CliRunner().invoke(cli, ["report", "show", str(run)])
    assert res.exit_code == 0, res.output
    assert f"report: {run / 'evaluate' / 'report.md'}" in res.output
    res = CliRunner().invoke(cli, ["report", "compare", str(run), str(run), "--b-label", "sft"])
    assert res.exit_code == 0 and "0.200" in res.output, res.output
    # A run with one model: comparing it with itself says to give another run.
    single = tmp_path / "runs" / "single"
    write_report(single / "evaluate", _report([("base", VQA_ROWS)]))
    res = CliRunner().invoke(cli, ["report", "compare", str(single), str(single / "evaluate")])
    assert res.exit_code == 2 and "compares model 'base' with itself" in res.output
    assert "one model only: give the folder of another run as RUN_B" in res.output


def test_vote_line_has_no_placeholder():
    line = vote_line({"runs": ["base", "sft"], "n": 10, "unanimous_rate": 0.75, "no_vote": 2})
    assert line.endswith(
        "agree on 75.0% of the 8 questions answered; 2 had no answer from any run."
    )
    line = vote_line({"runs": ["base", "sft"], "n": 4, "unanimous_rate": None, "no_vote": 4})
    assert "no run answered any of the 4 questions" in line and " - " not in line


def test_table_formatting():
    assert (
        fmt(None) == "-" and fmt(0.12345) == "0.123" and fmt(123.456) == "123.5" and fmt(3) == "3"
    )
    assert (
        markdown_table(["a", "b"], [["x|y", 1.0]]) == "| a | b |\n| --- | --- |\n| x\\|y | 1.000 |"
    )
