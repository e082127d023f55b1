"""The image (cluster/Dockerfile) holds everything jobs and deployments read at run time, and
the `gpu` extra it installs resolves against requirements.lock. Docker cannot build here, so
the check is static: the run-time data paths are derived from the code and the configs."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "cluster" / "Dockerfile"
CODE_DIRS = ("medray", "jobs", "serve_apps")
CONFIG_GLOBS = ("jobs/configs/*.yaml", "serve_apps/configs/*.yaml")
# What pip-tools leaves out of a lock on purpose: the installer's own packages.
INSTALLER_PACKAGES = {"pip", "setuptools", "wheel"}


def _repo_path(value: str) -> str | None:
    """``value`` as a repo-relative path if it names something in the repo, else None."""
    if not value or value.startswith(("/", "$", "~", ".")) or "://" in value or "\n" in value:
        return None
    return value.rstrip("/") if "/" in value and (REPO / value).exists() else None


def _repo_root_join(node: ast.AST) -> str | None:
    """``repo_root() / "a" / "b"`` -> ``a/b``."""
    parts: list[str] = []
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        if not (isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)):
            return None
        parts.insert(0, node.right.value)
        node = node.left
    is_root = (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "repo_root"
    )
    return "/".join(parts) if is_root and parts else None


def runtime_data_paths() -> set[str]:
    """Paths under the repo that the code or the configs read at run time.

    From the code: ``repo_root() / ...`` joins and string constants that name an existing
    repo path (dataclass defaults such as ``corpus_dir = "datasets/knowledge"``). From the
    job and Serve configs: values that name an existing repo path.
    """
    found: set[str] = set()
    for top in CODE_DIRS:
        for py in (REPO / top).rglob("*.py"):
            tree = ast.parse(py.read_text(encoding="utf-8"))
            inner = {id(n.left) for n in ast.walk(tree) if isinstance(n, ast.BinOp)}
            for node in ast.walk(tree):
                outer = isinstance(node, ast.BinOp) and id(node) not in inner
                joined = _repo_root_join(node) if outer else None
                if joined and (REPO / joined).exists():
                    found.add(joined)
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    p = _repo_path(node.value)
                    if p:
                        found.add(p)

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)
        elif isinstance(value, str):
            yield value

    for pattern in CONFIG_GLOBS:
        for cfg in REPO.glob(pattern):
            for value in walk(yaml.safe_load(cfg.read_text())):
                p = _repo_path(value)
                if p:
                    found.add(p)
    return found


def copied_paths() -> list[str]:
    """Sources of the Dockerfile's COPY instructions (the build context is the repo root)."""
    out = []
    for line in DOCKERFILE.read_text().splitlines():
        words = shlex.split(line.strip()) if line.strip().startswith("COPY") else []
        if words:
            srcs = [w for w in words[1:-1] if not w.startswith("--")]
            out += [s.rstrip("/") for s in srcs]
    return out


def test_derivation_finds_the_knowledge_corpus():
    """Not vacuous: the index job's corpus (a dataclass default) is found."""
    assert "datasets/knowledge" in runtime_data_paths()


def test_every_copy_source_exists():
    for src in copied_paths():
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_image_holds_every_runtime_data_path():
    copied = copied_paths()
    missing = sorted(
        p for p in runtime_data_paths() if not any(p == c or p.startswith(c + "/") for c in copied)
    )
    assert not missing, f"cluster/Dockerfile does not COPY {missing} (read at run time)"


def test_image_installs_the_gpu_extra_against_the_lock():
    text = DOCKERFILE.read_text()
    assert re.search(r"pip install .*-c requirements\.lock .*-e '\.\[gpu\]'", text)


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return pins


def test_gpu_extra_is_declared_and_pinned_in_the_lock():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    gpu = [Requirement(r) for r in extras["gpu"]]
    assert "bitsandbytes" in {r.name for r in gpu}
    lock = _lock()
    for req in gpu:
        pinned = lock.get(re.sub(r"[-_.]+", "-", req.name.lower()))
        assert pinned and req.specifier.contains(pinned), f"{req} is not pinned in the lock"


def test_gpu_extra_resolves_against_the_lock(tmp_path):
    """pip's resolver (dry run, ignoring what is installed) puts the extra and all its
    dependencies at exactly the lock's versions: nothing outside the lock is needed."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), "-c", str(REPO / "requirements.lock"), *extras["gpu"]]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip could not resolve the gpu extra: {res.stderr[-2000:]}"
    lock = _lock()
    resolved = {
        re.sub(r"[-_.]+", "-", i["metadata"]["name"].lower()): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert "bitsandbytes" in resolved and "torch" in resolved
    off_lock = {
        n: v for n, v in resolved.items() if n not in INSTALLER_PACKAGES and lock.get(n) != v
    }
    assert not off_lock, f"resolved outside requirements.lock: {off_lock}"
