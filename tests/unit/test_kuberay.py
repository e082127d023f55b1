"""The Kubernetes deployment (cluster/kuberay/) and ray_cluster.yaml, validated offline: every
manifest against the vendored KubeRay v1.7.0 / Milvus Operator v1.3.8 CRD schemas, the
RayService's serve config against gpu.yaml and Ray's Serve schema, every job entrypoint with
the job's own config loader, and the deployment's own contracts (token auth, secrets,
resources, shared storage, probes, capacity)."""

from __future__ import annotations

import copy
import importlib
import re
import typing
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kube_manifests as k8s
import pytest
import ray
import yaml

from medray.config import ConfigError, load_config, parse_overrides
from medray.serving.deploy import endpoint_urls

pytestmark = pytest.mark.unit

REPO = k8s.REPO
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
GPU_SERVE = REPO / "serve_apps" / "configs" / "gpu.yaml"
SECRET_ENV = {"MEDRAY_MILVUS_TOKEN": "medray-milvus", "MEDRAY_API_KEYS": "medray-api-keys"}


def job_config_class(module_name: str):
    hints = typing.get_type_hints(importlib.import_module(module_name).main)
    return hints[next(iter(hints))]


def load_entrypoint(words: list[str]):
    """Load ``python -m jobs.X --config F overrides...`` with the job's own loader."""
    assert words[:2] == ["python", "-m"] and words[2].startswith("jobs."), words
    i = words.index("--config")
    cls = job_config_class(words[2])
    return load_config(cls, REPO / words[i + 1], words[i + 2 :])


def ray_cluster_yaml_entrypoints() -> list[list[str]]:
    """The job commands ray_cluster.yaml's header tells the user to run."""
    text = (REPO / "ray_cluster.yaml").read_text()
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    joined = re.sub(r"\\\s+", " ", "\n".join(lines).replace("\\\n", " "))
    return [k8s.entrypoint(ln) for ln in joined.splitlines() if "python -m jobs." in ln]


@pytest.mark.parametrize(
    ("path", "doc"),
    k8s.manifests(),
    ids=[f"{p.name}:{d['kind']}" for p, d in k8s.manifests()],
)
def test_manifest_validates_against_its_crd_schema(path: Path, doc):
    k8s.validate(doc)


def test_the_deployment_has_every_resource():
    kinds = {d["kind"] for _, d in k8s.manifests()}
    assert {"RayCluster", "RayJob", "RayService", "Milvus", "PersistentVolumeClaim"} <= kinds


def _typo_in_worker_group(d):
    d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplica"] = 1


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        ("RayJob", _typo_in_worker_group, "minReplica"),
        ("RayService", lambda d: d["spec"].update(serveConfig="x"), "serveConfig"),
        ("RayCluster", lambda d: d["spec"]["authOptions"].update(mode="tokens"), "tokens"),
        ("Milvus", lambda d: d["spec"].update(mode="distributed"), "distributed"),
    ],
)
def test_schema_validation_catches_a_wrong_field(kind, mutate, message):
    bad = copy.deepcopy(k8s.docs_of(kind)[0])
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError, match=message):
        k8s.validate(bad)


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_token_auth_version_and_image(kind):
    for doc in k8s.docs_of(kind):
        cluster = k8s.ray_cluster_spec(doc)
        assert cluster["rayVersion"] == ray.__version__
        assert cluster["authOptions"] == {"mode": "token", "secretName": "medray-ray-token"}
        for _, _, c in k8s.containers(doc):
            assert c["image"] == "medray:0.1.0"


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_resources_requests_and_limits_match_what_ray_is_told(kind):
    for doc in k8s.docs_of(kind):
        for name, group in k8s.groups(doc):
            params = group["rayStartParams"]
            for c in group["template"]["spec"]["containers"]:
                res = c["resources"]
                assert res["requests"] and res["limits"], f"{kind}/{name}: requests and limits"
                for key in ("cpu", "memory"):
                    assert key in res["requests"] and key in res["limits"], (kind, name, key)
                cpus = float(res["limits"]["cpu"])
                assert float(params.get("num-cpus", cpus)) <= cpus, (kind, name)
                gpus = int(res["limits"].get("nvidia.com/gpu", 0))
                assert int(params.get("num-gpus", gpus)) == gpus, (kind, name)
                assert res["requests"].get("nvidia.com/gpu") == res["limits"].get("nvidia.com/gpu")


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_secrets_come_from_kubernetes_secrets_and_milvus_from_the_manifest(kind):
    milvus = k8s.docs_of("Milvus")[0]
    expected_host = f"{milvus['metadata']['name']}-milvus.milvus.svc.cluster.local"
    for doc in k8s.docs_of(kind):
        for name, pod, c in k8s.containers(doc):
            env = {e["name"]: e for e in c["env"]}
            for var, secret in SECRET_ENV.items():
                if var == "MEDRAY_API_KEYS" and kind == "RayJob":
                    continue  # no Serve app in a pipeline run
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret, (kind, name, var)
            for e in c["env"]:  # no credential written into a manifest
                if re.search(r"TOKEN|KEY|PASSWORD", e["name"]) and "TLS" not in e["name"]:
                    assert "value" not in e, (kind, name, e["name"])
            uri = urlsplit(env["MEDRAY_MILVUS_URI"]["value"])
            assert (uri.scheme, uri.hostname, uri.port) == ("https", expected_host, 19530)
            ca = env["MEDRAY_MILVUS_TLS_CA"]["value"]
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert ca.startswith(mounts["milvus-tls"] + "/")
            vols = {v["name"]: v for v in pod["volumes"]}
            assert vols["milvus-tls"]["secret"]["secretName"] == "medray-milvus-tls"


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_every_pod_mounts_the_shared_volume(kind):
    claim = k8s.docs_of("PersistentVolumeClaim")[0]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for doc in k8s.docs_of(kind):
        for name, pod, c in k8s.containers(doc):
            vols = {v["name"]: v for v in pod["volumes"]}
            assert vols["shared"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert mounts["shared"] == "/mnt/medray", (kind, name)


def test_rayjob_runs_the_gpu_pipeline_and_its_entrypoint_loads():
    doc = k8s.docs_of("RayJob")[0]
    words = k8s.entrypoint(doc["spec"]["entrypoint"])
    assert words[words.index("--config") + 1] == "jobs/configs/pipeline_gpu.yaml"
    cfg = load_entrypoint(words)
    assert cfg.run.storage_path.startswith("/mnt/medray/")  # on the shared volume
    # A wrong key fails, as the issue's `scaling.use_gpu=true` did.
    with pytest.raises(ConfigError, match="unknown key 'scaling'"):
        load_entrypoint([*words, "scaling.use_gpu=true"])


def test_rayjob_cluster_fits_every_gpu_stage_of_the_pipeline():
    doc = k8s.docs_of("RayJob")[0]
    cfg = load_entrypoint(k8s.entrypoint(doc["spec"]["entrypoint"]))
    gpu = next(g for name, g in k8s.groups(doc) if name == "gpu")
    pods = gpu["minReplicas"]
    cpus = float(gpu["rayStartParams"]["num-cpus"])
    for stage in ("train_clip", "sft_reasoner", "grpo", "summariser_sft"):
        s = getattr(cfg, stage).scaling
        assert s.use_gpu, stage
        assert s.num_workers <= pods and s.cpus_per_worker <= cpus, stage
    actors = cfg.batch_infer.actors
    assert actors.num_gpus * actors.concurrency <= pods and actors.num_cpus <= cpus
    assert cfg.index.cases.gpus_per_actor * cfg.index.cases.concurrency <= pods
    assert cfg.sft_reasoner.sft.lora.quantize_4bit, "QLoRA for the 2B reasoner"
    models = {cfg.sft_reasoner.sft.model, cfg.summariser_sft.sft.model, cfg.train_clip.clip.model}
    assert models == {"qwen2-vl-2b", "qwen2.5-0.5b", "clip-vit-b-32"}


def test_ray_cluster_yaml_entrypoints_load_with_the_jobs_loader():
    found = ray_cluster_yaml_entrypoints()
    assert found, "ray_cluster.yaml's header names the job to submit"
    for words in found:
        load_entrypoint(words)


def test_ray_cluster_yaml_passes_rays_own_config_check():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load((REPO / "ray_cluster.yaml").read_text())))


def test_rayservice_serves_gpu_yaml_verbatim_and_it_fits_rays_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    doc = k8s.docs_of("RayService")[0]
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert served == yaml.safe_load(GPU_SERVE.read_text()), (
        "serveConfigV2 differs from serve_apps/configs/gpu.yaml: paste gpu.yaml into "
        "cluster/kuberay/rayservice.yaml"
    )
    config = ServeDeploySchema.model_validate(served)
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        assert hasattr(importlib.import_module(module), attr)
    from serve_apps.settings import AppArgs

    load_config(AppArgs, None, [])  # the args mapping itself is checked by test_serve_config


def test_rayservice_probes_hit_the_apps_health_and_readiness_endpoints():
    doc = k8s.docs_of("RayService")[0]
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    urls = endpoint_urls(served)
    port = urlsplit(urls["health"]).port
    for name, _, c in k8s.containers(doc):
        if name == "head":
            continue  # replicas run on workers (head num-cpus 0); head is out of the serve svc
        ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
        assert (ready["path"], ready["port"]) == (urlsplit(urls["ready"]).path, port)
        assert (live["path"], live["port"]) == (urlsplit(urls["health"]).path, port)
    assert doc["spec"]["excludeHeadPodFromServeSvc"] is True


def test_rayservice_cluster_can_hold_every_deployment():
    doc = k8s.docs_of("RayService")[0]
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    workers = [g for name, g in k8s.groups(doc) if name != "head"]
    cap = [(float(g["rayStartParams"]["num-cpus"]), float(g["rayStartParams"].get("num-gpus", 0)),
            g["maxReplicas"]) for g in workers]  # fmt: skip
    total_cpu = sum(c * n for c, _, n in cap)
    total_gpu = sum(g * n for _, g, n in cap)
    need_cpu = need_gpu = 0.0
    for dep in (d for app in served["applications"] for d in app["deployments"]):
        opts = dep.get("ray_actor_options", {})
        cpu, gpu = float(opts.get("num_cpus", 1)), float(opts.get("num_gpus", 0))
        assert any(cpu <= c and gpu <= g for c, g, _ in cap), f"{dep['name']} fits no pod"
        n = dep.get("autoscaling_config", {}).get("min_replicas", dep.get("num_replicas", 1))
        need_cpu, need_gpu = need_cpu + cpu * n, need_gpu + gpu * n
    assert need_cpu <= total_cpu and need_gpu <= total_gpu


def test_milvus_runs_in_cluster_mode_with_auth_and_persistent_storage():
    spec = k8s.docs_of("Milvus")[0]["spec"]
    assert spec["mode"] == "cluster"
    assert spec["config"]["common"]["security"]["authorizationEnabled"] is True
    assert spec["config"]["common"]["security"]["tlsMode"] in (1, 2)
    deps = spec["dependencies"]
    assert deps["storage"]["inCluster"]["values"]["persistence"]["size"]
    assert deps["etcd"]["inCluster"]["values"]["persistence"]["size"]
    assert deps["storage"]["inCluster"]["pvcDeletion"] is False


def test_every_manifest_names_the_command_that_applies_it():
    for path in sorted(k8s.KUBE_DIR.glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# kubectl apply ") and str(path.relative_to(REPO)) in first


def test_overrides_in_entrypoints_parse():
    doc = k8s.docs_of("RayJob")[0]
    words = k8s.entrypoint(doc["spec"]["entrypoint"])
    overrides = words[words.index("--config") + 2 :]
    assert parse_overrides(overrides)["run"]["name"] == "pipeline-gpu"
