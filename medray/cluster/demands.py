"""Which resource demands a Ray cluster can meet: pure functions over node totals.

Ray queues a task or actor whose resources no node has (or none has free) without a
word; ``ray status`` only lists it under ``Pending Demands``. These functions decide,
from the nodes' totals, whether a demand can ever be placed, and word the message a
user needs: which resource, how much the largest node has, and what to do about it.
They are used by ``medray job submit`` (``medray.cluster.pending``) and, for the Serve
app's replicas, by ``medray serve up`` (``check_fits``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Resources Ray gives every node implicitly; never a reason a demand cannot be placed.
_IGNORED_PREFIXES = ("node:", "accelerator_type:")
GiB = 1024**3
SERVE_RESOURCE = "medray_serve"  # what the local Serve profile's replicas ask for

FIXES = (
    "`medray serve down` (the Serve app's replicas hold resources on the nodes)",
    "a cluster with more CPUs per node: `medray cluster down && medray cluster up --cpus-per-node 2`",
    "a smaller job (fewer CPUs per task, lower concurrency)",
)


def shape(resources: Mapping[str, Any] | None) -> dict[str, float]:
    """A demand without zero amounts and Ray's implicit per-node resources."""
    return {
        str(k): float(v)
        for k, v in (resources or {}).items()
        if v and float(v) > 0 and not str(k).startswith(_IGNORED_PREFIXES)
    }


def fmt(resources: Mapping[str, float]) -> str:
    """``{'CPU': 2.0, 'memory': 2**30}`` -> ``CPU 2, memory 1 GiB``."""
    parts = []
    for k, v in sorted(resources.items()):
        if k in ("memory", "object_store_memory"):
            parts.append(f"{k} {v / GiB:.3g} GiB")
        else:
            parts.append(f"{k} {v:g}")
    return ", ".join(parts) or "nothing"


def shortfall(demand: Mapping[str, float], node: Mapping[str, float]) -> dict[str, float]:
    """Resources of ``demand`` that ``node`` (its totals) has less of: name -> missing amount."""
    return {
        k: v - float(node.get(k, 0.0))
        for k, v in shape(demand).items()
        if float(node.get(k, 0.0)) < v
    }


def fits_some_node(demand: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> bool:
    """True if at least one node's totals cover the whole demand."""
    return any(not shortfall(demand, n) for n in nodes)


def largest(nodes: Sequence[Mapping[str, float]], resource: str) -> float:
    """The most of ``resource`` any single node has."""
    return max((float(n.get(resource, 0.0)) for n in nodes), default=0.0)


def unschedulable_message(
    demand: Mapping[str, float], nodes: Sequence[Mapping[str, float]], what: str = "a task"
) -> str:
    """Why no node can ever run ``demand``, and the fix."""
    best = min(nodes, key=lambda n: len(shortfall(demand, n)), default={})
    missing = shortfall(demand, best) if nodes else shape(demand)
    why = "; ".join(
        f"it asks for {name} {demand[name]:g} but the largest node has {largest(nodes, name):g}"
        if name not in ("memory", "object_store_memory")
        else f"it asks for {demand[name] / GiB:.3g} GiB of {name} but the largest node has "
        f"{largest(nodes, name) / GiB:.3g} GiB"
        for name in sorted(missing)
    )
    fix = (
        "start a cluster with larger nodes (`medray cluster up --cpus-per-node N`) or ask for "
        "less (a smaller job)"
        if any(k in ("CPU", "memory", "GPU") for k in missing)
        else f"no node offers {', '.join(sorted(missing))}: check the resource's name"
    )
    return (
        f"{what} needs {fmt(demand)}, which no node of this cluster ({len(nodes)} nodes) has: "
        f"{why}. It would wait forever. Fix: {fix}."
    )


def blocked_message(demand: Mapping[str, float], waited_s: float, what: str = "a task") -> str:
    """A demand some node could hold, but none has had free for ``waited_s`` seconds."""
    return (
        f"{what} has waited {waited_s:.0f}s for {fmt(demand)} while the job ran nothing: "
        "every node that could hold it is busy. Free resources with one of: "
        + "; ".join(FIXES)
        + "."
    )


# ----------------------------------------------------------------------------- Serve


def replica_resources(options: Mapping[str, Any] | None) -> dict[str, float]:
    """The resources one replica asks for, from its ``ray_actor_options``.

    Serve's default is one CPU per replica when ``num_cpus`` is not given.
    """
    opts = dict(options or {})
    out: dict[str, float] = {"CPU": float(opts.get("num_cpus", 1.0) or 0.0)}
    if opts.get("num_gpus"):
        out["GPU"] = float(opts["num_gpus"])
    if opts.get("memory"):
        out["memory"] = float(opts["memory"])
    out.update({k: float(v) for k, v in (opts.get("resources") or {}).items()})
    return shape(out)


def replica_counts(deployment: Mapping[str, Any]) -> tuple[int, int]:
    """``(minimum, maximum)`` replicas of a deployment in a Serve config."""
    auto = deployment.get("autoscaling_config")
    if auto:
        lo = int(auto.get("min_replicas", 1))
        return lo, int(auto.get("max_replicas", lo))
    n = deployment.get("num_replicas", 1)
    n = 1 if n in (None, "auto") else int(n)
    return n, n


def check_fits(config: Mapping[str, Any], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """Problems that would keep the apps of a Serve config from starting on ``nodes``.

    Each replica must fit one node, and the minimum replicas of all deployments together
    must fit the cluster's totals. An empty list means it fits.
    """
    need: dict[str, float] = {}
    misfits: dict[str, list[str]] = {}  # missing resource -> deployments short of it
    for dep in (d for app in config["applications"] for d in app.get("deployments") or []):
        res = replica_resources(dep.get("ray_actor_options"))
        lo, _ = replica_counts(dep)
        if not fits_some_node(res, nodes):
            best = min(nodes, key=lambda n: len(shortfall(res, n)), default={})
            for k in shortfall(res, best) if nodes else res:
                misfits.setdefault(k, []).append(f"{dep['name']} ({k} {res[k]:g})")
        for k, v in res.items():
            need[k] = need.get(k, 0.0) + v * lo
    problems = [
        f"replicas of {', '.join(deps)} ask for more {k} than any node has "
        f"(largest node: {largest(nodes, k):g}){_hint(k)}"
        for k, deps in sorted(misfits.items())
    ]
    for k, v in sorted(need.items()):
        have = sum(float(n.get(k, 0.0)) for n in nodes)
        if v > have + 1e-9 and k not in misfits:
            problems.append(
                f"the app's minimum replicas need {k} {v:g} in total but the cluster has "
                f"{have:g}{_hint(k)}"
            )
    return problems


def _hint(resource: str) -> str:
    if resource == SERVE_RESOURCE:
        return (
            f"; `{SERVE_RESOURCE}` is offered by the local cluster's head node (`serve_cpus` in "
            "cluster/local.yaml): restart the cluster (`medray cluster down && medray cluster "
            "up`) to get it"
        )
    if resource == "CPU":
        return "; start a cluster with more CPUs per node (`medray cluster up --cpus-per-node N`)"
    return ""
