"""Resource demands against node totals: unschedulable and blocked jobs, the Serve app's fit."""

from __future__ import annotations

import pytest

from medray.cluster import demands
from medray.cluster.local import LocalClusterConfig, _node_resources
from medray.cluster.pending import JobWatch
from medray.serving.deploy import load_serve_config

pytestmark = pytest.mark.unit

# The default local cluster as the dashboard reports it (ray's implicit keys included).
NODES = [
    {"CPU": 1.0, "medray_serve": 2.0, "medray_node_0": 1.0, "node:127.0.0.1": 1.0},
    {"CPU": 1.0, "medray_node_1": 1.0, "node:127.0.0.1": 1.0},
    {"CPU": 1.0, "medray_node_2": 1.0, "node:127.0.0.1": 1.0},
]


def test_default_cluster_offers_the_serve_resource_on_the_head_only():
    cfg = LocalClusterConfig()
    assert _node_resources(cfg, 0) == {"medray_node_0": 1.0, demands.SERVE_RESOURCE: 2.0}
    assert _node_resources(cfg, 1) == {"medray_node_1": 1.0}
    assert demands.SERVE_RESOURCE not in _node_resources(LocalClusterConfig(serve_cpus=0), 0)


def test_local_serve_profile_takes_no_cpu_and_fits_the_default_cluster():
    config = load_serve_config("serve_apps/configs/local.yaml")
    deps = config["applications"][0]["deployments"]
    per_replica = [demands.replica_resources(d.get("ray_actor_options")) for d in deps]
    assert all("CPU" not in r for r in per_replica), per_replica  # jobs keep every CPU
    at_max = sum(
        r[demands.SERVE_RESOURCE] * demands.replica_counts(d)[1]
        for r, d in zip(per_replica, deps, strict=True)
    )
    assert at_max <= LocalClusterConfig().serve_cpus, at_max
    assert demands.check_fits(config, NODES) == []


def test_serve_app_on_a_cluster_without_the_resource_is_refused_with_the_fix():
    config = load_serve_config("serve_apps/configs/local.yaml")
    old_cluster = [{k: v for k, v in n.items() if k != demands.SERVE_RESOURCE} for n in NODES]
    problems = demands.check_fits(config, old_cluster)
    assert len(problems) == 1 and "Reasoner (medray_serve 0.25)" in problems[0]
    assert "medray cluster down && medray cluster up" in problems[0]


def test_replicas_that_need_whole_cpus_do_not_fit_one_cpu_nodes():
    config = {
        "applications": [
            {
                "deployments": [
                    {"name": "Big", "num_replicas": 1},
                    {"name": "Two", "num_replicas": 4, "ray_actor_options": {"num_cpus": 1}},
                ]
            }
        ]
    }
    problems = demands.check_fits(config, NODES)  # Serve's default is 1 CPU per replica
    assert problems == [
        "the app's minimum replicas need CPU 5 in total but the cluster has 3; start a "
        "cluster with more CPUs per node (`medray cluster up --cpus-per-node N`)"
    ]


def test_unschedulable_message_names_the_resource_and_the_largest_node():
    msg = demands.unschedulable_message({"CPU": 2.0, "node:127.0.0.1": 0.001}, NODES)
    assert "needs CPU 2" in msg and "the largest node has 1" in msg
    assert "medray cluster up --cpus-per-node N" in msg and "smaller job" in msg
    gib = demands.unschedulable_message({"memory": 8 * demands.GiB}, [{"memory": 4 * demands.GiB}])
    assert "8 GiB of memory" in gib and "largest node has 4 GiB" in gib


def watch(stuck_s: float = 300.0, final: bool = True) -> JobWatch:
    return JobWatch(dashboard=None, submission_id="x", stuck_timeout_s=stuck_s, unschedulable_final=final)  # type: ignore[arg-type]  # fmt: skip


def test_impossible_demand_is_a_verdict_on_the_second_poll():
    w = watch()
    waiting = [("f", {"CPU": 2.0})]
    assert w.judge(waiting, NODES, running=0, now=0.0) is None  # maybe a node is starting
    v = w.judge(waiting, NODES, running=0, now=5.0)
    assert v is not None and v.kind == "unschedulable" and "CPU 2" in v.message


def test_impossible_demand_on_an_autoscaling_cluster_only_warns(caplog):
    w = watch(final=False)
    for t in (0.0, 5.0, 10.0):
        assert w.judge([("f", {"CPU": 2.0})], NODES, running=0, now=t) is None
    assert w.warned and "autoscaler" in caplog.text


def test_blocked_only_after_the_timeout_with_nothing_running():
    w = watch(stuck_s=300.0)
    waiting = [("ReadParquet", {"CPU": 1.0})]
    assert w.judge(waiting, NODES, running=0, now=0.0) is None
    assert w.judge(waiting, NODES, running=0, now=299.0) is None
    v = w.judge(waiting, NODES, running=0, now=301.0)
    assert v is not None and v.kind == "blocked"
    assert "waited 301s for CPU 1" in v.message and "medray serve down" in v.message


def test_a_running_task_or_an_empty_queue_resets_the_blocked_clock():
    w = watch(stuck_s=300.0)
    waiting = [("t", {"CPU": 1.0})]
    assert w.judge(waiting, NODES, running=0, now=0.0) is None
    assert w.judge(waiting, NODES, running=2, now=200.0) is None  # a busy job queues tasks
    assert w.judge(waiting, NODES, running=0, now=400.0) is None  # clock restarted at 400
    assert w.judge([], NODES, running=0, now=650.0) is None
    assert w.judge(waiting, NODES, running=0, now=700.0) is None
    assert w.judge(waiting, NODES, running=0, now=1001.0).kind == "blocked"
    assert watch(stuck_s=0).judge(waiting, NODES, 0, 1e9) is None  # 0: never blocked


def test_waiting_reads_tasks_actors_and_placement_group_bundles(monkeypatch):
    """The dashboard's REST answers are the boundary here (their live shape is exercised
    by tests/integration/test_job_coexist.py)."""
    from medray.cluster.pending import Dashboard

    answers = {
        "tasks": [{"name": "ReadParquet", "required_resources": {"CPU": 1.0}}],
        "actors": [{"class_name": "ClipActor", "required_resources": {"CPU": 0.0}}],
        "placement_groups": [
            {"name": "train", "bundles": [{"unit_resources": {"CPU": 2.0}}, {"unit_resources": {}}]}
        ],
    }
    calls = []

    def fake_get(self, path, params=None):
        resource = path.rsplit("/", 1)[-1]
        calls.append((resource, params["filter_keys"], params["filter_values"]))
        return {"data": {"result": {"result": answers[resource], "total": 1}}}

    monkeypatch.setattr(Dashboard, "_get", fake_get)
    got = Dashboard("http://x").waiting("02000000")
    assert got == [("ReadParquet", {"CPU": 1.0}), ("placement group train", {"CPU": 2.0})]
    assert calls == [
        ("tasks", ["job_id", "state"], ["02000000", "PENDING_NODE_ASSIGNMENT"]),
        ("actors", ["job_id", "state"], ["02000000", "PENDING_CREATION"]),
        ("placement_groups", ["creator_job_id", "state"], ["02000000", "PENDING"]),
    ]


def test_tasks_inside_a_placement_group_are_judged_by_the_group_not_by_its_resources(
    monkeypatch,
):
    """Ray Train's workers ask for ``CPU_group_<pg>`` until their placement group is placed
    (seconds on a loaded machine): that is not a resource no node has (the demo was
    stopped for it at load 24); the group's own bundles are what is checked."""
    from medray.cluster.pending import Dashboard, outside_groups

    pg = "7ad493622ab4dbfd1f5ad0f3d18502000000"
    actor = {
        "class_name": "RayTrainWorker",
        "required_resources": {
            f"CPU_group_0_{pg}": 1.0,
            f"CPU_group_{pg}": 1.0,
            f"bundle_group_0_{pg}": 0.001,
            f"bundle_group_{pg}": 0.001,
        },
    }
    answers = {
        "tasks": [{"name": "Mixed", "required_resources": {"CPU": 1.0, f"CPU_group_{pg}": 1.0}}],
        "actors": [actor],
        "placement_groups": [],
    }

    def fake_get(self, path, params=None):
        return {"data": {"result": {"result": answers[path.rsplit("/", 1)[-1]], "total": 1}}}

    monkeypatch.setattr(Dashboard, "_get", fake_get)
    assert Dashboard("http://x").waiting("02000000") == [("Mixed", {"CPU": 1.0})]
    # A custom resource that merely contains "group" is still checked.
    assert outside_groups({"gpu_group_a": 1.0}) == {"gpu_group_a": 1.0}
