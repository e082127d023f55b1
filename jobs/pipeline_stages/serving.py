"""The ``serve`` stage: deploy the Serve app with what the earlier stages produced.

The app is ``serve_apps/configs/local.yaml`` (or ``serve.config``) with its ``args``
changed to point at this run's products:

- the SFT and GRPO reasoners' LoRA adapters as named models (``serve.sft_name``,
  ``serve.grpo_name``): ``serve.multiplexed`` loads them per request, ``/v1/models`` lists
  them; a full checkpoint (LoRA off) becomes the base reasoner instead;
- the trained summariser (``models.summariser``), the medical-QA model (``models.medqa``,
  ``POST /generate``), the fine-tuned CLIP (``models.clip``) and the Milvus collections the
  ``index`` stage built (``retrieval.milvus``).

Roles no earlier stage trained keep the config's presets, and the stage says so (at plan
time, before Ray starts, and in its summary line). An adapter trained on another base
model than the app's reasoner is refused by name, at plan time when the config shows it
(``sft_reasoner.sft.model`` / ``grpo.grpo.model`` / ``serve.adapters``) and again before
deploying, from the adapter folder itself.

The resolved Serve config is written to ``<run dir>/serve/serve_config.yaml`` (deployable
again with ``medray serve up --config``), then sent to the cluster's dashboard; the stage
waits until the app runs and checks that ``GET /v1/models`` lists every adapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.pipeline_stages.context import Context
from medray.config import ConfigError

if TYPE_CHECKING:
    from jobs.pipeline import PipelineConfig


@dataclass(frozen=True)
class ServeStageConfig:
    """How the ``serve`` stage deploys the app (see the module docstring)."""

    config: str = "serve_apps/configs/local.yaml"  # Serve config file (relative to the repo)
    overrides: tuple[str, ...] = ()  # key=value on the app args, e.g. generation.max_new_tokens=32
    port: int = 0  # 0: the config's http_options.port
    sft_name: str = "reasoner-sft"  # model name of the sft_reasoner stage's adapter
    grpo_name: str = "reasoner-grpo"  # model name of the grpo stage's adapter
    adapters: dict[str, str] = field(default_factory=dict)  # more named adapters: name -> folder
    deploy: bool = True  # false: write the resolved config only
    wait_s: float = 600.0
    dashboard_url: str = ""  # empty: the dashboard of the cluster this job runs on


# ------------------------------------------------------------------------ base checks


def adapter_base(folder: str | Path) -> str | None:
    """The base model a LoRA adapter folder was trained on; None for a full checkpoint
    (``medray.models.finetuned.describe``, the one loader's view of a trained model).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    from medray.models.finetuned import describe

    if not Path(folder).expanduser().is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    source = describe(str(folder), "vlm")
    return source.base_name if source.kind == "adapter" else None


def _same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model (preset names, folders, hub ids)."""
    from medray.models.registry import PRESETS, resolve

    if a == b:
        return True
    if a in PRESETS and b in PRESETS:
        return False
    try:
        ra, rb = resolve(a, "vlm"), resolve(b, "vlm")
    except Exception:  # an unknown ref cannot be shown to be the same model
        return False
    if Path(ra).exists() and Path(rb).exists():
        return Path(ra).resolve() == Path(rb).resolve()
    return ra == rb


def check_adapter_base(name: str, folder: str, reasoner: str) -> None:
    """Refuse adapter ``name`` unless it was trained on the app's reasoner ``reasoner``
    (the loader's own check, ``medray.models.finetuned.describe``).

    Raises:
        ConfigError: naming the adapter, its base and the app's reasoner.
    """
    from medray.models.finetuned import AdapterBaseMismatchError, describe

    if not Path(folder).expanduser().is_dir():
        raise ConfigError(f"serve: adapter {name!r}: folder {folder} does not exist")
    try:
        describe(str(folder), "vlm", expected_base=reasoner)
    except AdapterBaseMismatchError as e:
        raise ConfigError(
            f"serve: adapter {name!r} is refused: {e}; or set "
            "serve.overrides=[models.reasoner=...] to its base"
        ) from None


# ------------------------------------------------------------------------- the plan


def _app_config(cfg: PipelineConfig) -> dict[str, Any]:
    from medray.serving.deploy import load_serve_config

    sc = cfg.serve
    return load_serve_config(sc.config, sc.overrides, port=sc.port or None)


def _app_args(config: dict[str, Any]) -> dict[str, Any]:
    return config["applications"][0]["args"]


def _trained_reasoners(cfg: PipelineConfig, chosen: list[str]) -> list[tuple[str, str, str]]:
    """``(served name, stage, base model)`` of each reasoner LoRA adapter this run trains."""
    out = []
    if "sft_reasoner" in chosen and cfg.sft_reasoner.sft.lora.enabled:
        out.append((cfg.serve.sft_name, "sft_reasoner", cfg.sft_reasoner.sft.model))
    if "grpo" in chosen and cfg.grpo.grpo.lora.enabled:
        out.append((cfg.serve.grpo_name, "grpo", cfg.grpo.grpo.model))
    return out


def check_serve_plan(cfg: PipelineConfig, chosen: list[str]) -> list[str]:
    """Check what the ``serve`` stage will deploy, before anything runs; return one note
    per role saying where its model comes from (a stage of this run or a preset).

    Raises:
        ConfigError: the Serve config or its overrides are invalid; an adapter (trained
            by this run or listed in ``serve.adapters``) has another base model than the
            app's reasoner; two adapters share a name.
    """
    sc = cfg.serve
    names = [sc.sft_name, sc.grpo_name, *sc.adapters]
    if len(set(names)) != len(names):
        raise ConfigError(f"serve: adapter names must differ, got {names}")
    args = _app_args(_app_config(cfg))
    reasoner = args["models"]["reasoner"]
    if args["models"]["served_name"] in names:
        raise ConfigError(
            f"serve: adapter name {args['models']['served_name']!r} clashes with "
            "models.served_name (the base model's name)"
        )
    for name, stage, base in _trained_reasoners(cfg, chosen):
        if not _same_model(base, reasoner):
            raise ConfigError(
                f"serve: adapter {name!r} (stage {stage!r}) is trained on base model "
                f"{base!r}, but the app's reasoner is {reasoner!r}; an adapter only runs on "
                f"its own base: train on {reasoner!r} or set "
                f"serve.overrides=[models.reasoner={base}]"
            )
    for name, folder in sc.adapters.items():
        check_adapter_base(name, folder, reasoner)
    return _plan_notes(cfg, chosen, args)


def _plan_notes(cfg: PipelineConfig, chosen: list[str], args: dict[str, Any]) -> list[str]:
    m = args["models"]
    adapters = [f"{n} (stage {s})" for n, s, _ in _trained_reasoners(cfg, chosen)]
    adapters += [f"{n} ({p})" for n, p in cfg.serve.adapters.items()]
    full = [
        s
        for s, lora in (
            ("sft_reasoner", cfg.sft_reasoner.sft.lora.enabled),
            ("grpo", cfg.grpo.grpo.lora.enabled),
        )
        if s in chosen and not lora
    ]
    notes = [
        f"reasoner: {'the full checkpoint of stage ' + full[-1] if full else 'preset ' + repr(m['reasoner'])}"
        + (f" + adapters {', '.join(adapters)}" if adapters else " (no trained adapter)"),
        "summariser: "
        + ("stage summariser_sft" if "summariser_sft" in chosen else f"preset {m['summariser']!r}"),
        "medqa: " + ("stage medqa_sft" if "medqa_sft" in chosen else f"preset {m['medqa']!r}"),
        "clip: "
        + (
            "stage train_clip"
            if "train_clip" in chosen
            else f"the index stage's {cfg.index.cases.clip_model!r}"
            if "index" in chosen and cfg.index.cases.enabled
            else f"preset {m['clip']!r}"
        ),
        "indexes: " + ("stage index" if "index" in chosen else "the config's Milvus collections"),
    ]
    trained = {
        "sft_reasoner", "grpo", "summariser_sft", "medqa_sft", "train_clip", "index"
    } & set(chosen)  # fmt: skip
    if not trained and not cfg.serve.adapters:
        notes.append(
            "nothing is trained before `serve` in this run: it serves the configured presets"
        )
    return notes


# ------------------------------------------------------------------------ the stage


def resolved_app_args(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    """The Serve config with this run's products in its args, and what each role serves.

    Raises:
        ConfigError: an adapter's base differs from the app's reasoner (by name), or two
            full checkpoints would both have to be the base reasoner.
    """
    from medray.config import merge
    from serve_apps.app import parse_args

    cfg, sc, out = ctx.cfg, ctx.cfg.serve, ctx.outputs
    config = _app_config(cfg)
    args = _app_args(config)
    models: dict[str, Any] = {}
    served: list[str] = []
    adapters = dict(sc.adapters)
    full: list[tuple[str, str]] = []
    for name, key in ((sc.sft_name, "reasoner_sft"), (sc.grpo_name, "reasoner_grpo")):
        if out.get(key):
            if adapter_base(out[key]) is None:
                full.append((key, out[key]))
            else:
                adapters[name] = out[key]
    if len(full) > 1:
        raise ConfigError(
            "serve: both reasoner stages produced full checkpoints; one Reasoner serves one "
            "base model: train one of them with LoRA (its adapter is then a named model)"
        )
    if full:
        models["reasoner"] = full[0][1]
        served.append(f"reasoner: {full[0][0]} full checkpoint {full[0][1]}")
    reasoner = models.get("reasoner", args["models"]["reasoner"])
    for name, folder in adapters.items():
        check_adapter_base(name, folder, reasoner)
        served.append(f"adapter {name}: {folder}")
    if out.get("summariser"):
        models["summariser"] = out["summariser"]
        served.append(f"summariser: {out['summariser']}")
    if out.get("medqa"):
        models["medqa"] = out["medqa"]
        served.append(f"medqa: {out['medqa']}")
    clip = out.get("clip_model") or (
        cfg.index.cases.clip_model if out.get("milvus") and cfg.index.cases.enabled else ""
    )
    if clip:
        models["clip"] = clip
        served.append(f"clip: {clip}")
    update: dict[str, Any] = {"models": models, "adapters": adapters}
    trained = [n for n in (sc.grpo_name, sc.sft_name) if n in adapters and n not in sc.adapters]
    if trained:  # a request without a model gets what this run trained, not the base preset
        update["default_adapter"] = trained[0]
        served.append(f"default model: {trained[0]}")
    if out.get("milvus"):
        ms = out["milvus"]
        update["retrieval"] = {
            "milvus": {
                "uri": ms.uri,
                "cases_collection": ms.cases_collection,
                "knowledge_collection": ms.knowledge_collection,
            }
        }
        models["text_embedder"] = cfg.index.knowledge.text_model
        served.append(f"indexes: {ms.cases_collection}, {ms.knowledge_collection} at {ms.uri}")
    args = merge(args, update)
    parse_args(args)  # the same validation the app builder runs, before deploying
    config["applications"][0]["args"] = args
    return config, served


def stage_serve(ctx: Context) -> dict[str, Any]:
    """Deploy the app with this run's models; wait until it runs; check ``/v1/models``."""
    import yaml

    from medray.serving.deploy import deploy, endpoint_urls

    sc = ctx.cfg.serve
    t = time.perf_counter()
    config, served = resolved_app_args(ctx)
    folder = ctx.out_dir / "serve"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    args = _app_args(config)
    names = [args["models"]["served_name"], *sorted(args["adapters"])]
    urls = endpoint_urls(config)
    base_url = urls["health"].rsplit("/health", 1)[0]
    result: dict[str, Any] = {
        "config": str(path),
        "served": served,
        "models": names,
        "url": base_url,
        "app": config["applications"][0]["name"],
        "default_model": next(
            (n for n in (sc.grpo_name, sc.sft_name) if n in args["adapters"]), names[0]
        ),
        "deployed": False,
    }
    if sc.deploy:
        dashboard = sc.dashboard_url or _dashboard_url()
        deploy(config, dashboard, wait_s=sc.wait_s)
        listed = _listed_models(base_url)
        missing = [n for n in names if n not in listed]
        if missing:
            raise RuntimeError(f"stage 'serve': /v1/models does not list {missing} ({listed})")
        result.update(deployed=True, dashboard_url=dashboard, listed=listed)
    ctx.outputs["serve"] = {k: result[k] for k in ("url", "config", "models", "default_model")}
    what = "; ".join(served) if served else "the configured presets (nothing trained before it)"
    result["seconds"] = round(time.perf_counter() - t, 1)
    result["line"] = (
        f"{'running at ' + base_url if sc.deploy else 'config written (serve.deploy=false)'}, "
        f"models {', '.join(names)}; serves {what} -> {path}"
    )
    return result


def _dashboard_url() -> str:
    """The dashboard of the cluster this driver is connected to."""
    from ray._private.worker import get_dashboard_url

    url = get_dashboard_url()
    return url if url.startswith("http") else f"http://{url}"


def _listed_models(base_url: str) -> list[str]:
    import httpx

    resp = httpx.get(f"{base_url}/v1/models", timeout=30)
    resp.raise_for_status()
    return [m["id"] for m in resp.json()["data"]]
