"""Typed arguments of the MedRay Serve application (the ``args:`` of a Serve config).

``app_builder(args)`` validates the raw mapping with :func:`medray.config.from_dict`
(unknown keys and wrong types are errors), so a typo in ``serve_apps/configs/*.yaml``
fails at deploy time with the key's name. It lives here, below ``serve_apps``, so library
code (``medray.serving.deploy``, the CLI, the pipeline) validates a config without
importing the Serve app; ``serve_apps.settings`` re-exports it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from medray.agent.state import AgentSettings
from medray.config import ConfigError, from_dict
from medray.retrieval import MilvusSettings
from medray.safety import SafetyPolicy
from medray.serving.audit import AuditSettings


@dataclass(frozen=True)
class ModelSettings:
    """Which models each deployment loads (preset, hub id or folder)."""

    reasoner: str = "tiny-qwen2-vl"
    summariser: str = "tiny-lm"  # preset, or the SFT summariser's adapter / checkpoint
    medqa: str = "tiny-lm"  # POST /generate's text QA model: preset, or the sft_medqa output
    clip: str = "tiny-clip"
    text_embedder: str = "minilm-l6"
    device: str = "cpu"
    served_name: str = "medray-reasoner"  # the base model's name in /v1/models
    medqa_name: str = "medray-medqa"  # the QA model's name in /v1/models and /generate

    def __post_init__(self) -> None:
        from medray.models.fullsize import is_random_weights

        for role in ("reasoner", "summariser", "medqa", "clip", "text_embedder"):
            ref = getattr(self, role)
            if is_random_weights(ref):
                raise ConfigError(
                    f"models.{role}: {ref!r} has RANDOM weights (a benchmark-only build): "
                    "serving refuses it; use a trained model, a hub id or a tiny preset"
                )


@dataclass(frozen=True)
class GenerationSettings:
    """Defaults and bounds of generation requests."""

    max_new_tokens: int = 0  # 0: the reasoner contract's length (what training targets fit)
    max_new_tokens_limit: int = 512
    temperature: float = 0.0
    summary_tokens: int = 0  # 0: the summariser contract's length (what its evaluation used)

    def __post_init__(self) -> None:
        if self.max_new_tokens == 0:
            from medray.contracts import reasoner

            object.__setattr__(self, "max_new_tokens", reasoner.MAX_NEW_TOKENS)
        if not 1 <= self.max_new_tokens <= self.max_new_tokens_limit:
            raise ConfigError(
                f"generation.max_new_tokens must lie in [1, max_new_tokens_limit={self.max_new_tokens_limit}]"
                " (or be 0: the reasoner contract's length)"
            )


@dataclass(frozen=True)
class LimitSettings:
    """Request limits; requests beyond them get a 4xx naming the limit.

    ``max_prompt_chars`` caps the text of one request together (every message of a chat,
    or the question): a 422 ``prompt_too_long`` names it.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_image_side: int = 1024  # larger images are downscaled before the models see them
    max_question_chars: int = 4000
    max_prompt_chars: int = 16000
    max_messages: int = 64
    max_images: int = 4
    max_k: int = 20

    def __post_init__(self) -> None:
        if self.max_prompt_chars < 1:
            raise ConfigError("limits.max_prompt_chars must be at least 1")


@dataclass(frozen=True)
class RateLimitSettings:
    """Per-client token bucket in front of every authenticated endpoint.

    A client (its API key's hash, or its address when no keys are required) may send
    ``burst`` requests at once and ``per_second`` on average; beyond that it gets a 429
    with ``Retry-After`` (seconds until a request fits again). A request to
    ``/v1/analyze`` costs ``analyze_cost`` tokens (it runs about ten generations), any
    other one token. Buckets live in each Gateway replica: with N replicas a client may
    get up to N times the rate. ``enabled: false`` turns the limit off.
    """

    enabled: bool = True
    per_second: float = 10.0
    burst: float = 40.0
    analyze_cost: float = 4.0
    max_clients: int = 10_000  # buckets kept; the least recently seen are dropped

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1 or self.max_clients < 1:
            raise ConfigError("rate_limit.per_second must be > 0, burst >= 1 and max_clients >= 1")
        if not 0 < self.analyze_cost <= self.burst:
            raise ConfigError("rate_limit.analyze_cost must lie in (0, burst]")


@dataclass(frozen=True)
class TimeoutSettings:
    """The longest each endpoint may take, in seconds (the model calls included).

    A JSON endpoint past its time answers 504 ``timeout``; a stream (``/v1/analyze``,
    ``stream=true`` chats) sends an ``error`` event and ends. ``retry_after_s`` is the
    ``Retry-After`` of the 503 answered when a deployment's queue is full
    (``max_queued_requests`` in the Serve config).
    """

    analyze_s: float = 180.0
    chat_s: float = 120.0
    generate_s: float = 60.0
    search_s: float = 15.0
    retry_after_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("analyze_s", "chat_s", "generate_s", "search_s", "retry_after_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"timeouts.{name} must be > 0")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is a loopback address; any other
    name is not (it may resolve anywhere)."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_host_header(value: str) -> bool:
    """Whether an HTTP ``Host`` header names the loopback by name: ``localhost``,
    ``127.0.0.1`` or ``[::1]``, with any port (``localhost:8000``). A DNS-rebinding page
    reaches a loopback app under its own domain name, which this refuses."""
    host = value.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
        return name == "::1"
    name, sep, port = host.partition(":")
    return name in ("localhost", "127.0.0.1") and (not sep or port.isdigit())


@dataclass(frozen=True)
class AuthSettings:
    """Bearer API keys, read by each Gateway replica from its environment or a secret
    file, never from the config (Serve configs and deployment args are shown by the Ray
    dashboard).

    Attributes:
        api_keys: refused (a :class:`ConfigError` naming the alternatives); kept so the
            old key gets that error instead of "unknown key".
        api_keys_env: environment variable of the replica with keys, comma-separated.
        api_keys_file: absolute path of a file with keys (one per line or comma-separated;
            ``#`` starts a comment), read by the replica when it starts (a Kubernetes
            secret mounted as a file, or a file readable only by the Ray user).
        require: ``auto`` (required unless the app listens on loopback only: the
            declared ``listen_host`` and the address each request really came in on),
            ``always`` or ``never``.
        listen_host: the HTTP host Serve listens on (``http_options.host``;
            :func:`medray.serving.deploy.load_serve_config` sets it from there).
    """

    api_keys: tuple[str, ...] = ()
    api_keys_env: str = "MEDRAY_API_KEYS"
    api_keys_file: str = ""
    require: Literal["auto", "always", "never"] = "auto"
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.api_keys:
            raise ConfigError(
                "auth.api_keys: API keys in the config are shown by the Ray dashboard (the "
                "Serve config and deployment args); set them in the environment variable "
                f"{self.api_keys_env or 'MEDRAY_API_KEYS'} of the cluster, or in a secret "
                "file named by auth.api_keys_file"
            )
        if self.api_keys_file and not os.path.isabs(os.path.expanduser(self.api_keys_file)):
            raise ConfigError(
                f"auth.api_keys_file must be an absolute path, got {self.api_keys_file!r}"
            )

    def keys(self) -> tuple[str, ...]:
        """Keys from the environment plus the key file (read now, in the caller's process).

        Raises:
            ConfigError: ``api_keys_file`` is set but cannot be read.
        """
        env = os.environ.get(self.api_keys_env, "") if self.api_keys_env else ""
        found = [k.strip() for k in env.split(",")]
        if self.api_keys_file:
            path = os.path.expanduser(self.api_keys_file)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise ConfigError(
                    f"auth.api_keys_file {path!r} cannot be read ({type(e).__name__}: "
                    f"{e.strerror or e}); the file must exist on every node that runs a Gateway"
                ) from None
            for line in text.splitlines():
                found.extend(k.strip() for k in line.split("#", 1)[0].split(","))
        return tuple(dict.fromkeys(k for k in found if k))

    def required(self) -> bool:
        """Whether requests must carry a key, as far as the config tells (``listen_host``);
        each request is judged again by :meth:`required_for`."""
        if self.require != "auto":
            return self.require == "always"
        return not is_loopback(self.listen_host)

    def required_for(self, local_addr: str | None) -> bool:
        """Whether a request that came in on ``local_addr`` must carry a key.

        ``local_addr`` is the address the HTTP server accepted the connection on (the ASGI
        scope's ``server``: Serve's proxy reports the socket's address, so an app declared
        loopback-only but bound to ``0.0.0.0`` still asks a request from the network for
        a key). ``auto``: required unless both ``listen_host`` and ``local_addr`` are
        loopback; an unknown address (None) requires one.
        """
        if self.require != "auto":
            return self.require == "always"
        return self.required() or local_addr is None or not is_loopback(local_addr)


@dataclass(frozen=True)
class RetrievalSettings:
    """Milvus similar-case and knowledge search."""

    enabled: bool = True
    milvus: MilvusSettings = field(default_factory=MilvusSettings)
    k: int = 3
    check_models: bool = True  # refuse collections indexed with other embedding models
    # The longest one Milvus call of the app may take (connecting included): a search on
    # a dead Milvus degrades after at most two of them (the call and one reconnect).
    call_timeout_s: float = 0.9
    retry_after_s: float = 1.0  # after a failed connection, searches skip Milvus this long

    def __post_init__(self) -> None:
        if self.call_timeout_s <= 0 or self.retry_after_s < 0:
            raise ConfigError("retrieval.call_timeout_s must be > 0 and retry_after_s >= 0")


@dataclass(frozen=True)
class AppArgs:
    """Everything ``app_builder`` needs; the ``args:`` mapping of a Serve config."""

    models: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    adapters: dict[str, str] = field(default_factory=dict)  # name -> peft adapter folder
    # The adapter a request without a ``model`` gets ("": the base model). The pipeline's
    # serve stage sets its trained adapter, so a plain request answers with that.
    default_adapter: str = ""
    max_loaded_adapters: int = 2  # per Reasoner replica, LRU-evicted
    limits: LimitSettings = field(default_factory=LimitSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)  # medray.serving.audit
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    stream_tokens: bool = True  # /v1/analyze also streams raw token events
    agent: AgentSettings = field(default_factory=AgentSettings)  # agentic RAG (medray.agent)

    def __post_init__(self) -> None:
        if self.max_loaded_adapters < 1:
            raise ConfigError("max_loaded_adapters must be at least 1")
        for key in ("served_name", "medqa_name"):
            if getattr(self.models, key) in self.adapters:
                raise ConfigError(
                    f"adapter name {getattr(self.models, key)!r} clashes with models.{key}"
                )
        if self.models.medqa_name == self.models.served_name:
            raise ConfigError("models.medqa_name must differ from models.served_name")
        if self.default_adapter and self.default_adapter not in self.adapters:
            raise ConfigError(
                f"default_adapter {self.default_adapter!r} is not one of the adapters "
                f"({', '.join(sorted(self.adapters)) or 'none configured'})"
            )

    def model_names(self) -> list[str]:
        """Names accepted as the reasoner's ``model``: the base model, then the adapters."""
        return [self.models.served_name, *sorted(self.adapters)]

    def qa_model_names(self) -> list[str]:
        """Names accepted as ``/generate``'s ``model`` (the text medical-QA model)."""
        return [self.models.medqa_name]


def parse_args(args: Mapping[str, Any] | AppArgs | None) -> AppArgs:
    """Validate the ``args:`` mapping of a Serve config into :class:`AppArgs`."""
    if isinstance(args, AppArgs):
        return args
    try:
        return from_dict(AppArgs, dict(args or {}))
    except ConfigError as e:
        raise ConfigError(f"serve app args: {e}") from None


@dataclass(frozen=True)
class UIArgs:
    """The ``args:`` of the web UI application (``serve_apps/ui/deployment.py``)."""

    api_url: str = ""  # the API's base URL from the UI replica; "" = the proxy's root
    samples_dir: str = ""  # sample images the Analyze tab offers; "" = upload only
    runs_dir: str = ""  # evaluation runs the Reports tab opens; "" = $MEDRAY_HOME/runs

    def __post_init__(self) -> None:
        if self.api_url and not self.api_url.startswith(("http://", "https://")):
            raise ConfigError(f"api_url must be an http(s) URL, got {self.api_url!r}")


def parse_ui_args(args: Mapping[str, Any] | None) -> UIArgs:
    """Validate the web UI application's ``args:`` mapping."""
    try:
        return from_dict(UIArgs, dict(args or {}))
    except ConfigError as e:
        raise ConfigError(f"web UI app args: {e}") from None


__all__ = [
    "LOOPBACK_HOSTS",
    "AppArgs",
    "AuthSettings",
    "GenerationSettings",
    "LimitSettings",
    "ModelSettings",
    "RateLimitSettings",
    "RetrievalSettings",
    "TimeoutSettings",
    "UIArgs",
    "is_loopback",
    "loopback_host_header",
    "parse_args",
    "parse_ui_args",
]
