"""Where evaluation reports live: the folder of a run that holds ``report.json``.

One home for the rule ``medray report show|compare`` and the web UI's Reports tab share.
"""

from __future__ import annotations

from pathlib import Path

from medray.eval.report import ReportError


def find_report_dir(run: Path) -> Path:
    """The folder holding ``report.json``: RUN itself, or the evaluation folder of a run
    (``RUN/evaluate``, what `jobs.pipeline` writes), or its one subfolder with a report.

    Raises:
        ReportError: no report there, or several (naming them).
    """
    if (run / "report.json").is_file():
        return run
    if (run / "evaluate" / "report.json").is_file():
        return run / "evaluate"
    found = sorted(p.parent for p in run.glob("*/report.json"))
    if len(found) == 1:
        return found[0]
    where = (
        f"; reports in its subfolders: {', '.join(str(p) for p in found)}"
        if found
        else "; make one with `python -m jobs.evaluate` (or the pipeline's evaluate stage)"
    )
    raise ReportError(f"{run} holds no evaluation report (report.json){where}")


def list_report_dirs(root: Path) -> list[Path]:
    """Every folder under ``root`` (two levels deep at most) holding a ``report.json``,
    newest first: the evaluations a reader can open."""
    if not root.is_dir():
        return []
    found = {p.parent for p in (*root.glob("*/report.json"), *root.glob("*/*/report.json"))}
    return sorted(found, key=lambda p: (p / "report.json").stat().st_mtime, reverse=True)
