"""Caption figures: reference captions from the contract, BLEU / ROUGE against them, and the
consistency score's mean and risk-coverage, on hand-made rows."""

from __future__ import annotations

import pytest
from eval_fixtures import report_of, row

from medray.contracts.reasoner import caption_for
from medray.eval import calibration, text
from medray.eval.captions import caption_metrics, reference_caption
from medray.eval.metrics import headline, run_metrics

pytestmark = pytest.mark.unit


def _rows():
    # Fixture rows are x-ray / chest; consistency ranks the two right answers first.
    return [
        row("a", pred_caption="X-ray image of the chest.", caption_consistency=0.9),
        row(
            "b",
            pred_caption="X-ray image of the chest showing effusion.",
            labels=["Effusion"],
            caption_consistency=0.8,
        ),
        row("c", answer="no", pred_caption="CT image of the head.", caption_consistency=0.2),
        row("d", answer="no", pred_caption=None, caption_consistency=0.0),
    ]


def test_reference_caption_is_the_contracts_and_only_for_vqa_rows_that_describe_an_image():
    r = row("a", labels=["Effusion", "No Finding"])
    assert reference_caption(r) == caption_for(r) == "X-ray image of the chest showing effusion."
    assert reference_caption(dict(r, task="mcq")) is None
    bare = dict(r, modality=None, organ=None, labels=[], boxes=[])
    assert reference_caption(bare) is None


def test_caption_metrics_by_hand_and_against_the_text_metrics():
    metrics, scored = run_metrics(_rows())
    cap = metrics["captions"]
    assert cap["n"] == 4
    refs = [reference_caption(r) for r in scored]
    assert refs[1] == "X-ray image of the chest showing effusion."
    assert cap["text"] == text.text_metrics([r.get("pred_caption") for r in scored], refs)
    assert cap["text"]["rougeL"] < 1.0  # c and d are wrong
    cons = cap["consistency"]
    assert cons["n"] == 4 and cons["mean"] == pytest.approx((0.9 + 0.8 + 0.2 + 0.0) / 4)
    # Ranking by consistency puts the two right answers first: AURC as the module computes
    # it, and the best possible here (risk 0 at coverage 1/4 and 2/4, 1/3 then 1/2).
    assert cons["calibration"]["aurc"] == pytest.approx(
        calibration.aurc([0.9, 0.8, 0.2, 0.0], [True, True, False, False])["aurc"]
    )
    assert cons["calibration"]["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    h = headline(metrics)
    assert h["caption consistency"] == pytest.approx(cons["mean"])
    assert h["caption ROUGE-L"] == cap["text"]["rougeL"]


def test_a_run_without_any_caption_has_no_consistency_ranking():
    rows = [{**r, "pred_caption": None, "caption_consistency": 0.0} for r in _rows()]
    cap = caption_metrics(run_metrics(rows)[1], (0.5,))
    assert cap["consistency"] is None  # a constant 0 ranks nothing
    assert cap["text"]["rougeL"] == 0.0  # no caption written: scored as empty


def test_rows_without_consistency_still_get_caption_text_scores():
    rows = [{**r, "caption_consistency": None} for r in _rows()]
    cap = caption_metrics(run_metrics(rows)[1], (0.5,))
    assert cap["consistency"] is None and cap["text"]["n"] == 4


def test_report_has_a_caption_table_and_a_second_risk_coverage_panel(tmp_path):
    from PIL import Image

    from medray.eval.report import write_report

    files = write_report(tmp_path, report_of([("sft", _rows())]))
    md = files["report.md"].read_text()
    assert "## Captions" in md and "AURC, answering by consistency" in md
    wide = Image.open(files["risk_coverage.png"]).size
    plain = [{**r, "caption_consistency": None} for r in _rows()]
    files2 = write_report(tmp_path / "plain", report_of([("sft", plain)]))
    narrow = Image.open(files2["risk_coverage.png"]).size
    assert wide[0] == 2 * narrow[0]  # the consistency panel beside the confidence one


def test_a_run_keeps_its_colour_in_both_panels(tmp_path, monkeypatch):
    # The base run has no consistency panel line: before, every later run shifted colour
    # between the panels (sft orange on the left, blue on the right).
    from matplotlib.axes import Axes

    from medray.eval import plots

    seen: list[tuple[str, str, str]] = []
    step = Axes.step

    def recording_step(self, *args, **kwargs):
        seen.append((kwargs["label"].split(" ")[0], kwargs["color"], kwargs["linestyle"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "step", recording_step)
    base = [{**r, "caption_consistency": None, "pred_caption": None} for r in _rows()]
    runs = report_of([("base", base), ("sft", _rows()), ("grpo", _rows())])["runs"]
    assert plots.plot_risk_coverage(runs, tmp_path / "rc.png")
    styles = {}
    for label, colour, line in seen:
        styles.setdefault(label, set()).add((colour, line))
    assert styles["sft"] == {("C1", "--")} and styles["grpo"] == {("C2", "-.")}
    assert len([x for x in seen if x[0] == "sft"]) == 2  # drawn in both panels
