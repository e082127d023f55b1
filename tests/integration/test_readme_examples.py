"""Every ```bash, ```sh and ```python block of README.md, run as a newcomer copies it.

The blocks run in README order, each in a fresh ``bash -euo pipefail`` (or the venv's
Python), in one scratch folder, against this test run's local cluster (found through
``MEDRAY_HOME``, as ``medray`` finds a cluster that ``medray cluster up`` started) with
``MEDRAY_URL`` / ``MEDRAY_SERVE_PORT`` pointing at a test port: the journey's own ``medray
job submit``, ``medray serve up``, ``medray analyze``, ``curl`` and OpenAI client calls.

A block that cannot run here carries ``<!-- ci: skip (reason) -->`` on the line before it
(visible in the README's source); ``<!-- ci: timeout N -->`` gives a slow block N seconds
(default 300). Every other block must run and exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PORT_OFFSET = int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))
SERVE_PORT = 8060 + PORT_OFFSET  # test_serve_app.py uses 8050
RUNNABLE = ("bash", "sh", "python")
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"^<!--\s*ci:\s*(.*?)\s*-->$")
DIRECTIVE = re.compile(r"^(?:skip\s*\((?P<reason>.+)\)|timeout\s+(?P<timeout>\d+))$")


@dataclass
class Block:
    line: int
    lang: str
    code: str
    skip: str | None = None
    timeout: int = 300


def readme_blocks(text: str) -> list[Block]:
    """The runnable blocks of ``text`` with their markers; a malformed marker, or one
    that is not right before a runnable block, is an error."""
    blocks, used = [], set()
    for m in FENCE.finditer(text):
        if m.group(1) not in RUNNABLE:
            continue
        line = text.count("\n", 0, m.start()) + 1
        block = Block(line, m.group(1), m.group(2))
        prev = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.match(prev)
        if marker:
            used.add(line - 1)
            d = DIRECTIVE.match(marker.group(1))
            assert d, f"README.md:{line - 1}: unknown ci marker {prev!r}"
            if d.group("reason"):
                block.skip = d.group("reason").strip()
            else:
                block.timeout = int(d.group("timeout"))
        blocks.append(block)
    for i, ln in enumerate(text.splitlines(), 1):
        if ln.strip().startswith("<!-- ci:"):
            assert i in used, f"README.md:{i}: ci marker not right before a ```bash/sh/python block"
    return blocks


def test_readme_markers_are_well_formed():
    blocks = readme_blocks(README.read_text())
    assert blocks and all(b.skip for b in blocks if b.skip is not None)
    assert sum(b.skip is None for b in blocks) >= 8, "the journey's blocks must run in CI"
    python = [b for b in blocks if b.lang == "python"]
    assert python and all("import base64" in b.code for b in python if "base64" in b.code)


def test_marker_parsing_refuses_a_skip_without_a_reason():
    text = "<!-- ci: skip -->\n```bash\nfalse\n```\n"
    with pytest.raises(AssertionError, match="unknown ci marker"):
        readme_blocks(text)
    text = "<!-- ci: skip (kubectl) -->\n\n```json\n{}\n```\n"
    with pytest.raises(AssertionError, match="not right before"):
        readme_blocks(text)
    ok = readme_blocks("<!-- ci: timeout 9 -->\n```sh\ntrue\n```\n```python\nx = 1\n```\n")
    assert [(b.lang, b.skip, b.timeout, b.line) for b in ok] == [
        ("sh", None, 9, 2),
        ("python", None, 300, 5),
    ]


def _remove_app(dashboard: str) -> None:
    from medray.serving.deploy import remove

    remove(dashboard, "medray")


def test_readme_examples_run(ray_cluster, tiny_models, tmp_path):
    blocks = readme_blocks(README.read_text())
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MEDRAY_URL": f"http://127.0.0.1:{SERVE_PORT}",
        "MEDRAY_SERVE_PORT": str(SERVE_PORT),
    }
    env.pop("MEDRAY_API_KEY", None)  # the local app needs none on 127.0.0.1
    ran: list[tuple[Block, float]] = []
    skipped = [b for b in blocks if b.skip]
    t_all = time.perf_counter()
    try:
        for b in blocks:
            if b.skip:
                continue
            if b.lang == "python":
                cmd = [sys.executable, "-c", b.code]
            else:
                cmd = ["bash", "-euo", "pipefail", "-c", b.code]
            t0 = time.perf_counter()
            res = subprocess.run(
                cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=b.timeout
            )
            assert res.returncode == 0, (
                f"README.md:{b.line} ({b.lang}) exited {res.returncode}:\n{b.code}\n"
                f"--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
            )
            ran.append((b, time.perf_counter() - t0))
    finally:
        _remove_app(ray_cluster.dashboard_url)  # if a block failed before `serve down`
    print(
        f"\nREADME blocks: {len(ran)} ran, {len(skipped)} skipped (marked), "
        f"{time.perf_counter() - t_all:.0f}s: "
        + ", ".join(f"line {b.line} {s:.0f}s" for b, s in ran)
    )
    assert len(ran) + len(skipped) == len(blocks) and len(ran) >= 8
