"""Offline validation of Kubernetes manifests against vendored CRD schemas (KubeRay, Milvus
Operator) and helpers to walk their pods. The schemas live beside the repo in
``../shared/reference`` (CI clones the repo next to ``shared/``)."""

from __future__ import annotations

import copy
import functools
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference"
CRD_FILES = {
    ("ray.io", "RayCluster"): "kuberay-crds/ray.io_rayclusters.yaml",
    ("ray.io", "RayJob"): "kuberay-crds/ray.io_rayjobs.yaml",
    ("ray.io", "RayService"): "kuberay-crds/ray.io_rayservices.yaml",
    ("milvus.io", "Milvus"): "milvus-operator-crds/milvus.io_milvuses.yaml",
}
CORE_KINDS = {("v1", "PersistentVolumeClaim")}
KUBE_DIR = REPO / "cluster" / "kuberay"


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that lists its
    properties (what the API server's pruning and ``kubectl --validate=strict`` enforce):
    plain JSON Schema would accept a misspelt field silently."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def _yaml(text: str) -> Any:
    """YAML through libyaml's C loader where PyYAML has it (a CRD is ~1 MB: seconds in pure
    Python)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict ``openAPIV3Schema`` of ``kind`` at ``api_version`` (e.g. ``ray.io/v1``)."""
    group, _, version = api_version.partition("/")
    path = REFERENCE / CRD_FILES[(group, kind)]
    if not path.is_file():
        raise FileNotFoundError(
            f"vendored CRD {path} is missing: the tests expect the shared/ reference folder "
            "beside the repository"
        )
    crd = _yaml(path.read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return strict(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"{kind} has no version {version} in {path.name}")


def validate(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` fits its CRD (strictly)."""
    api, kind = doc["apiVersion"], doc["kind"]
    if (api, kind) in CORE_KINDS:
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, doc
        assert doc["metadata"]["name"] and doc["spec"], doc
        return
    _validator(api, kind).validate(copy.deepcopy(doc))


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    """The schema's validator, built once. Unlike ``jsonschema.validate`` it does not check
    the schema against the meta-schema on every call (3-5 s for a CRD's schema on 2 cores):
    the schemas are the operators' released CRDs, which the API server accepts."""
    schema = crd_schema(api_version, kind)
    return jsonschema.validators.validator_for(schema)(schema)


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every YAML under cluster/kuberay."""
    out = []
    for path in sorted(KUBE_DIR.glob("*.yaml")):
        out += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def docs_of(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] == kind]


def ray_cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayCluster, RayJob or RayService."""
    spec = doc["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def groups(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(group name, group spec)`` for the head (``head``) and every worker group."""
    cluster = ray_cluster_spec(doc)
    yield "head", cluster["headGroupSpec"]
    for g in cluster.get("workerGroupSpecs", []):
        yield g["groupName"], g


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(group, pod spec, container)`` for every Ray container of a Ray resource."""
    for name, group in groups(doc):
        pod = group["template"]["spec"]
        for c in pod["containers"]:
            yield name, pod, c


def entrypoint(command: str) -> list[str]:
    """``python -m jobs.X --config F k=v ...`` out of a shell command line."""
    words = shlex.split(command)
    return words[words.index("python") :]
