"""Watch a submitted job's pending demands through the dashboard's REST API.

A Ray task or actor that no node can hold waits forever, silently. ``JobWatch`` looks at
the job's tasks, actors and placement groups that wait for a node
(``PENDING_NODE_ASSIGNMENT`` / ``PENDING_CREATION`` / ``PENDING``) and returns a verdict when

* a demand fits no node of the cluster at all (``unschedulable``): seen on two polls in a
  row, so that a task caught during a node's start is not blamed; or
* the job has had demands waiting for ``stuck_timeout_s`` while none of its tasks ran
  (``blocked``): some node could hold them, but none has them free, typically because
  the Serve app's replicas hold the CPUs.

``medray job submit`` stops the job on a verdict and prints its message (pure wording
in ``medray.cluster.demands``).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from medray.cluster import demands

log = logging.getLogger(__name__)

WAITING_TASK = "PENDING_NODE_ASSIGNMENT"
WAITING_ACTOR = "PENDING_CREATION"
# A task or actor scheduled into a placement group asks for the group's own resources
# (``CPU_group_<pg id>``, ``CPU_group_<bundle>_<pg id>``, ``bundle_group_...``), which no
# node offers until the group is placed: whether it can ever run is the group's question
# (its bundles are checked while it is PENDING), not the task's.
PG_RESOURCE = re.compile(r"_group_(\d+_)?[0-9a-f]{16,}$")


def outside_groups(resources: dict[str, float]) -> dict[str, float]:
    """``resources`` without placement-group resources (see :data:`PG_RESOURCE`)."""
    return {k: v for k, v in resources.items() if not PG_RESOURCE.search(k)}


def ray_token() -> str:
    """Ray's auth token: ``$RAY_AUTH_TOKEN``, else ``~/.ray/auth_token``, else ""."""
    import os

    from medray.cluster.state import auth_token_path

    path = auth_token_path()
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    return token or (path.read_text().strip() if path.is_file() else "")


class DashboardError(RuntimeError):
    """The dashboard did not answer as expected."""


@dataclass(frozen=True)
class Verdict:
    """Why a job cannot make progress: ``kind`` is ``unschedulable`` or ``blocked``."""

    kind: str
    message: str


class Dashboard:
    """Minimal client of the dashboard's REST API (jobs, state API) with Ray's token."""

    def __init__(self, url: str, token: str = "", timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        import requests

        try:
            r = requests.get(
                self.url + path, params=params, headers=self.headers, timeout=self.timeout_s
            )
        except requests.RequestException as e:
            raise DashboardError(f"{self.url}{path}: {e}") from None
        if r.status_code != 200:
            raise DashboardError(f"{self.url}{path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()

    def job(self, submission_id: str) -> dict[str, Any]:
        """The job's details: ``status``, ``job_id`` (the Ray job id once the driver runs)."""
        return self._get(f"/api/jobs/{submission_id}")

    def stop_job(self, submission_id: str) -> None:
        import requests

        try:
            requests.post(
                f"{self.url}/api/jobs/{submission_id}/stop",
                headers=self.headers,
                timeout=self.timeout_s,
            )
        except requests.RequestException as e:
            raise DashboardError(f"could not stop job {submission_id}: {e}") from None

    def node_totals(self) -> list[dict[str, float]]:
        """``resources_total`` of every alive node."""
        data = self._get("/api/v0/nodes", {"limit": 1000, "detail": "true"})
        nodes = data["data"]["result"]["result"]
        return [
            {k: float(v) for k, v in (n.get("resources_total") or {}).items()}
            for n in nodes
            if n.get("state") == "ALIVE"
        ]

    def _state(
        self, resource: str, job_id: str, state: str, limit: int, job_key: str = "job_id"
    ) -> dict[str, Any]:
        params = {
            "limit": limit,
            "detail": "true",
            "filter_keys": [job_key, "state"],
            "filter_predicates": ["=", "="],
            "filter_values": [job_id, state],
        }
        return self._get(f"/api/v0/{resource}", params)["data"]["result"]

    def waiting(self, job_id: str, limit: int = 200) -> list[tuple[str, dict[str, float]]]:
        """``(name, resources)`` of the job's tasks, actors and placement-group bundles
        that wait for a node."""
        out = []
        for resource, state in (("tasks", WAITING_TASK), ("actors", WAITING_ACTOR)):
            for item in self._state(resource, job_id, state, limit)["result"]:
                name = item.get("name") or item.get("class_name") or resource[:-1]
                needs = outside_groups(demands.shape(item.get("required_resources")))
                out.append((str(name), needs))
        # Ray Train reserves its workers' resources as a placement group first: a bundle
        # that fits no node keeps it pending (and no task or actor shows up).
        pgs = self._state("placement_groups", job_id, "PENDING", limit, "creator_job_id")
        for pg in pgs["result"]:
            for b in pg.get("bundles") or []:
                name = f"placement group {pg.get('name') or pg.get('placement_group_id', '')[:8]}"
                out.append((name, demands.shape(b.get("unit_resources"))))
        return [(n, r) for n, r in out if r]

    def running(self, job_id: str) -> int:
        """How many of the job's tasks run now."""
        result = self._state("tasks", job_id, "RUNNING", 1)
        return int(result.get("total", len(result.get("result", []))))


class JobWatch:
    """Decide, poll after poll, whether a job waits for resources it will never get.

    Args:
        dashboard: the cluster's dashboard.
        submission_id: the job's submission id.
        stuck_timeout_s: how long demands may wait while the job runs nothing (0: never
            call a job blocked).
        unschedulable_final: whether an unschedulable demand is final (a fixed local
            cluster) or may be met by an autoscaler adding a larger node.
    """

    def __init__(
        self,
        dashboard: Dashboard,
        submission_id: str,
        stuck_timeout_s: float = 300.0,
        unschedulable_final: bool = True,
    ) -> None:
        self.dashboard = dashboard
        self.submission_id = submission_id
        self.stuck_timeout_s = stuck_timeout_s
        self.unschedulable_final = unschedulable_final
        self._job_id = ""
        self._strikes = 0
        self._idle_since: float | None = None
        self.warned = False

    def poll(self, now: float | None = None) -> Verdict | None:
        """Look once; return a verdict when the job cannot make progress, else None."""
        now = time.monotonic() if now is None else now
        if not self._job_id:
            info = self.dashboard.job(self.submission_id)
            if info.get("status") != "RUNNING" or not info.get("job_id"):
                return None
            self._job_id = info["job_id"]
        waiting = self.dashboard.waiting(self._job_id)
        return self.judge(waiting, self.dashboard.node_totals(), self._running(waiting), now)

    def _running(self, waiting: list) -> int:
        return self.dashboard.running(self._job_id) if waiting else 0

    def judge(
        self,
        waiting: list[tuple[str, dict[str, float]]],
        nodes: list[dict[str, float]],
        running: int,
        now: float,
    ) -> Verdict | None:
        """The decision itself, from one poll's observations (pure but for its memory)."""
        impossible = [(n, r) for n, r in waiting if not demands.fits_some_node(r, nodes)]
        self._strikes = self._strikes + 1 if impossible else 0
        if impossible and self._strikes >= 2:
            name, res = impossible[0]
            msg = demands.unschedulable_message(
                res, nodes, f"{len(impossible)} task(s)/actor(s) of this job (e.g. {name})"
            )
            if self.unschedulable_final:
                return Verdict("unschedulable", msg)
            if not self.warned:
                self.warned = True
                log.warning("%s (an autoscaler may still add such a node)", msg)
        if not waiting or running > 0:
            self._idle_since = None
            return None
        self._idle_since = self._idle_since if self._idle_since is not None else now
        waited = now - self._idle_since
        if self.stuck_timeout_s > 0 and waited >= self.stuck_timeout_s:
            name, res = waiting[0]
            what = f"{len(waiting)} task(s)/actor(s) of this job (e.g. {name})"
            return Verdict("blocked", demands.blocked_message(res, waited, what))
        return None
