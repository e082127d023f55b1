"""Every YAML file in the repo loads and validates against what reads it, so none rots.

Each YAML's first line is the command that uses it; the command decides the validator:
``python -m jobs.X --config F`` (the job's typed config), ``medray cluster up`` (local
cluster settings), ``ray up`` (Ray's cluster-config schema), ``serve run|deploy``
(Ray Serve's config schema), ``kubectl apply`` (KubeRay / Milvus Operator CRDs) and
``ray job submit ... --runtime-env`` (Ray runtime env fields).
"""

from __future__ import annotations

import importlib
import re
import shlex
import typing
from pathlib import Path

import pytest
import yaml

from medray.config import load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".git", "node_modules", ".medray"}


def repo_yamls() -> list[Path]:
    return sorted(
        p
        for p in REPO.rglob("*.y*ml")
        if p.suffix in (".yaml", ".yml") and not SKIP_DIRS & set(p.relative_to(REPO).parts)
    )


def first_command(path: Path) -> list[str]:
    line = path.read_text(encoding="utf-8").splitlines()[0]
    assert line.startswith("# "), (
        f"{path}: first line must be a comment with the command that uses it"
    )
    return shlex.split(line[2:])


def job_config_class(module_name: str):
    module = importlib.import_module(module_name)
    hints = typing.get_type_hints(module.main)
    return hints[next(iter(hints))]


def validate_job(path: Path, cmd: list[str]) -> None:
    module = cmd[cmd.index("-m") + 1]
    assert module.startswith("jobs."), cmd
    assert (
        "--config" in cmd and (REPO / cmd[cmd.index("--config") + 1]).resolve() == path.resolve()
    ), f"{path}: its command must name this file after --config"
    load_config(job_config_class(module), path)


def validate_local_cluster(path: Path, cmd: list[str]) -> None:
    from medray.cluster.local import LocalClusterConfig

    load_config(LocalClusterConfig, path)


def validate_ray_up(path: Path, cmd: list[str]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load(path.read_text())))


def validate_serve(path: Path, cmd: list[str]) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        assert hasattr(importlib.import_module(module), attr), (
            f"{path}: {app.import_path} does not exist"
        )


def validate_kuberay(path: Path, cmd: list[str]) -> None:
    """Kubernetes manifests: each document against its vendored CRD schema (strictly; see
    kube_manifests.py); the deployment's own contracts are in test_kuberay.py."""
    import kube_manifests

    for doc in yaml.safe_load_all(path.read_text()):
        kube_manifests.validate(doc)


def validate_runtime_env(path: Path, cmd: list[str]) -> None:
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load(path.read_text())
    unknown = set(data) - set(RuntimeEnv.known_fields)
    assert not unknown, f"{path}: unknown runtime_env fields {unknown}"
    RuntimeEnv(**data)


def validator_for(cmd: list[str]):
    joined = " ".join(cmd)
    if cmd[:2] == ["python", "-m"]:
        return validate_job
    if joined.startswith("medray cluster up"):
        return validate_local_cluster
    if cmd[:2] == ["ray", "up"]:
        return validate_ray_up
    if cmd[:1] == ["serve"] and cmd[1] in ("run", "deploy"):
        return validate_serve
    if cmd[:2] == ["kubectl", "apply"]:
        return validate_kuberay
    if "--runtime-env" in cmd:
        return validate_runtime_env
    return None


def test_the_repo_has_the_expected_yaml_files():
    names = {str(p.relative_to(REPO)) for p in repo_yamls()}
    assert {"ray_cluster.yaml", "cluster/local.yaml", "jobs/configs/pipeline_tiny.yaml"} <= names


@pytest.mark.parametrize("path", repo_yamls(), ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_validates_against_its_reader(path: Path):
    cmd = first_command(path)
    validator = validator_for(cmd)
    assert validator is not None, f"{path}: no validator knows the command {cmd!r}"
    validator(path, cmd)


def test_a_broken_job_config_is_caught(tmp_path):
    """The validator is not a rubber stamp: a typo'd key fails."""
    src = REPO / "jobs/configs/pipeline_tiny.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(re.sub(r"max_steps:", "max_step:", src.read_text()))
    with pytest.raises(ValueError, match="max_step"):
        load_config(job_config_class("jobs.pipeline"), bad)


def test_ray_cluster_schema_rejects_unknown_keys():
    from ray.autoscaler._private.util import prepare_config, validate_config

    data = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    data["head_node"] = {"typo": True}
    with pytest.raises(Exception, match="head_node"):
        validate_config(prepare_config(data))
