"""The local cluster's settings, its recorded state on disk and a client's environment.

Shared by :mod:`medray.cluster.local` (Ray nodes: ``up``, ``status``, ``down``) and
:mod:`medray.cluster.milvus_server` (the Milvus Lite server process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medray.config import ConfigError
from medray.paths import cluster_dir, medray_home

# Ray worker processes take ports from this range on every node; MedRay's fixed ports
# (GCS, dashboard, client server, Milvus) must stay outside it.
WORKER_PORTS = (20000, 29999)


class ClusterError(RuntimeError):
    """The local cluster could not be started, inspected or stopped; the message says why."""


@dataclass(frozen=True)
class LocalClusterConfig:
    """Settings of ``medray cluster up`` (file: ``cluster/local.yaml``)."""

    nodes: int = 3
    cpus_per_node: int = 1
    serve_cpus: float = 2.0
    memory_per_node_gb: float = 4.0
    object_store_per_node_gb: float = 0.5
    host: str = "127.0.0.1"
    ray_port: int = 6379
    dashboard_port: int = 8265
    client_port: int = 10001
    milvus_port: int = 19530
    milvus_data_dir: str = ""
    start_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"nodes must be at least 1 (the head node), got {self.nodes}")
        if self.cpus_per_node < 1:
            raise ConfigError(f"cpus_per_node must be at least 1, got {self.cpus_per_node}")
        if self.serve_cpus < 0:
            raise ConfigError(f"serve_cpus must be 0 or more, got {self.serve_cpus}")
        if self.memory_per_node_gb <= 0 or self.object_store_per_node_gb <= 0:
            raise ConfigError("memory_per_node_gb and object_store_per_node_gb must be positive")
        ports = {
            "ray_port": self.ray_port,
            "dashboard_port": self.dashboard_port,
            "client_port": self.client_port,
            "milvus_port": self.milvus_port,
        }
        for name, port in ports.items():
            if not 1024 <= port <= 65535:
                raise ConfigError(f"{name} must be between 1024 and 65535, got {port}")
            if WORKER_PORTS[0] <= port <= WORKER_PORTS[1]:
                raise ConfigError(
                    f"{name} {port} lies in the range Ray workers use ({WORKER_PORTS[0]}-{WORKER_PORTS[1]}); pick another"
                )
        if len(set(ports.values())) != len(ports):
            raise ConfigError(f"ports must differ from each other, got {ports}")

    def milvus_dir(self) -> Path:
        return (
            Path(self.milvus_data_dir).expanduser().resolve()
            if self.milvus_data_dir
            else medray_home() / "milvus"
        )


@dataclass
class ClusterState:
    """What ``up`` started: recorded on disk so ``status`` and ``down`` find it."""

    config: dict[str, Any]
    started_at: float
    temp_dir: str
    ray_address: str
    dashboard_url: str
    milvus_uri: str
    processes: list[dict[str, Any]] = field(default_factory=list)
    # Every process of the nodes' groups once they started (pid, start time, command
    # line): ``down`` signals only processes that still match these records.
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pgids(self) -> list[int]:
        return [p["pgid"] for p in self.processes]


def state_path() -> Path:
    return cluster_dir() / "state.json"


def read_state() -> ClusterState | None:
    path = state_path()
    if not path.is_file():
        return None
    try:
        return ClusterState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ClusterError(
            f"cluster state file {path} is unreadable ({e}); remove it after checking no cluster runs"
        ) from e


def write_state(state: ClusterState) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def executable(name: str) -> str:
    """Path of the console script ``name`` of this environment (else from ``PATH``)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ClusterError(
            f"{name!r} executable not found; is MedRay installed in this environment?"
        )
    return found


def auth_token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_auth_token() -> str:
    """Return Ray's auth token, generating ``~/.ray/auth_token`` if there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = auth_token_path()
    if not path.is_file() or not path.read_text().strip():
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        res = subprocess.run(
            [executable("ray"), "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0 or not path.is_file():
            raise ClusterError(
                f"could not create a Ray auth token at {path}: {res.stderr.strip()[-500:]}"
            )
    return path.read_text().strip()


def client_env(state: ClusterState) -> dict[str, str]:
    """Environment a client needs: ``ray job submit``, ``ray status``, drivers, MedRay jobs."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_ADDRESS": state.ray_address,
        "RAY_API_SERVER_ADDRESS": state.dashboard_url,
        "MEDRAY_MILVUS_URI": state.milvus_uri,
        "MEDRAY_HOME": str(medray_home()),
    }
