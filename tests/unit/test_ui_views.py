"""What the web UI shows, without a browser: numbered citations that open on their
source, the Search tab's filters and results, the Reports tab's tables, plots and
comparison (read with medray.eval, from report folders under the runs directory)."""

from __future__ import annotations

import pytest
from eval_fixtures import VQA_ROWS, improved_rows, report_of

from medray.eval.folders import find_report_dir, list_report_dirs
from medray.eval.report import ReportError, write_report
from serve_apps.ui.render import answer_markdown, case_anchor, cases_html, citations_html
from serve_apps.ui.reports_tab import report_choices, view
from serve_apps.ui.search_tab import filters_from, results

pytestmark = pytest.mark.unit

PASSAGE = "Pleural effusion is fluid in the pleural space. " * 12  # longer than a snippet
CITES = [
    {"label": "K1", "kind": "knowledge", "id": "kb-7", "title": "Effusion", "source": "https://x.org/e",
     "snippet": PASSAGE[:240]},
    {"label": "C1", "kind": "case", "id": "case-3", "title": "cardiomegaly",
     "snippet": "Findings: cardiomegaly <b>on</b> the left."},
]  # fmt: skip


def test_citations_are_numbered_and_open_on_their_source():
    out = citations_html(CITES, {"kb-7": PASSAGE}, ["case-3", "case-1"])
    assert out.count("<details") == 2 and "[1]" in out and "[2]" in out
    assert out.index("[1]") < out.index("kb-7") < out.index("[2]") < out.index("case-3")
    assert " ".join(PASSAGE.split()) in out  # the full passage, not the 240-char snippet
    assert 'href="https://x.org/e"' in out
    assert f'href="#{case_anchor("case-3")}"' in out  # the case's card in the gallery
    assert "&lt;b&gt;on&lt;/b&gt;" in out and "<b>on</b>" not in out  # text is escaped
    # A case not in the gallery: its report, no dead link; no passage: the snippet.
    alone = citations_html(CITES, {}, [])
    assert "#medray-case-" not in alone and PASSAGE[:200].split()[-2] in alone
    assert "No citations" in citations_html([], {}, [])


def test_case_cards_carry_the_anchor_a_citation_links_to():
    html = cases_html({"hits": [{"id": "case-3", "score": 0.5, "labels": ["x"], "report": "r"}]})
    assert f'id="{case_anchor("case-3")}"' in html
    assert case_anchor('a"b c') == "medray-case-a_b_c"
    assert "2 (numbered below" in answer_markdown({"citations": CITES})


def test_search_filters_and_results():
    assert filters_from(" X-Ray ", "", "effusion, cardiomegaly ,", "test") == {
        "modality": "X-Ray", "split": "test", "labels": ["effusion", "cardiomegaly"]}  # fmt: skip
    assert filters_from("", "", " , ", "") == {}
    hits = [{"id": f"case-{i}", "score": 0.1, "labels": ["l"], "report": "r"} for i in range(3)]
    status, html = results({"mode": "text_to_image", "available": True, "hits": hits})
    assert status == "**3 images for the text.**" and html.count('medray-case"') == 3
    status, _ = results({"mode": "image_to_text", "available": False, "hits": [], "error": "down"})
    assert "unavailable" in status and "down" in status
    status, _ = results({"mode": "text_to_image", "hits": [], "message": "not medical"})
    assert status.startswith("**Refused:**")


@pytest.fixture
def runs_root(tmp_path):
    write_report(tmp_path / "run-a" / "evaluate", report_of([("base", VQA_ROWS)]))
    write_report(tmp_path / "run-b", report_of([("base", VQA_ROWS), ("sft", improved_rows())]))
    (tmp_path / "not-a-run").mkdir()
    return tmp_path


def test_reports_listing_and_one_home_for_the_folder_rule(runs_root):
    names = report_choices(runs_root)
    assert sorted(names) == ["run-a/evaluate", "run-b"]
    assert names[0] == "run-b"  # newest first
    assert find_report_dir(runs_root / "run-a") == runs_root / "run-a" / "evaluate"
    with pytest.raises(ReportError, match="no evaluation report"):
        find_report_dir(runs_root / "not-a-run")
    assert list_report_dirs(runs_root / "missing") == []


def test_reports_view_side_by_side(runs_root):
    table_a, plots_a, table_b, plots_b, comparison = view(runs_root, "run-a/evaluate", "run-b")
    assert "| metric | base |" in table_a and "| metric | base | sft |" in table_b
    assert plots_a and plots_b and all(im.size[0] > 100 for im, _ in plots_a + plots_b)
    assert "from `run-a/evaluate`" in comparison and "from `run-b`" in comparison
    assert comparison.count("\n|") >= 4  # header, rule and headline rows
    # One folder twice: its first model against its last.
    *_, same = view(runs_root, "run-b", "run-b")
    assert "**A** = `base`" in same and "**B** = `sft`" in same
    one = view(runs_root, "run-b", None)
    assert one[2] == "" and one[4] == ""
    with pytest.raises(ReportError, match="not an evaluation report"):
        view(runs_root, "../etc", None)
