"""The single-process baseline: the same HTTP API and plain classes, no Ray Serve.

The prior art's design (one FastAPI process calling every model in turn) and what a
user would otherwise pick; ``benchmarks/serve.py`` measures the Serve graph against it
in the same run. It reads the same Serve config file, so both serve the same models
with the same limits::

    python -m serve_apps.baseline --config serve_apps/configs/local.yaml --port 8600 [key=value ...]
"""

from __future__ import annotations

import argparse
import logging

from medray.config import ConfigError


def build_app(config_file: str, overrides: list[str], host: str = "127.0.0.1"):
    """The FastAPI app over :class:`serve_apps.backend.LocalBackend`."""
    from medray.contracts.summariser import MAX_NEW_TOKENS
    from medray.serving.deploy import load_serve_config
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import AdapterCache, GenerationParams, Reasoner
    from medray.serving.retriever import Retriever
    from medray.serving.summariser import Summariser
    from serve_apps.app import parse_args
    from serve_apps.backend import LocalBackend
    from serve_apps.gateway import create_app

    config = load_serve_config(config_file, overrides, host=host)
    args = parse_args(config["applications"][0]["args"])
    m = args.models
    reasoner = Reasoner(
        m.reasoner,
        adapters=args.adapters,
        default_params=GenerationParams(
            args.generation.max_new_tokens, args.generation.temperature
        ),
        device=m.device,
    )
    retriever = (
        Retriever(
            args.retrieval.milvus,
            m.clip if args.retrieval.check_models else "",
            m.text_embedder if args.retrieval.check_models else "",
            timeout_s=args.retrieval.call_timeout_s,
            retry_after_s=args.retrieval.retry_after_s,
        )
        if args.retrieval.enabled
        else None
    )
    backend = LocalBackend(
        Guard(args.safety),
        reasoner,
        Summariser(m.summariser, args.generation.summary_tokens or MAX_NEW_TOKENS, m.device),
        Embedder(m.clip, m.text_embedder, m.device),
        retriever,
        AdapterCache(reasoner, args.max_loaded_adapters),
        agent=args.agent if args.agent.enabled else None,  # runs in this process
        served_name=m.served_name,
        medqa=MedQA(m.medqa, m.medqa_name, m.device),
    )
    return create_app(backend, args, title="MedRay (single-process baseline)")


def main(argv: list[str] | None = None) -> None:
    """Run the baseline with uvicorn (one process, one event loop)."""
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="serve_apps/configs/local.yaml")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8600)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = build_app(ns.config, ns.overrides, ns.host)
    except (ConfigError, ValueError) as e:
        p.exit(2, f"baseline: {e}\n")
    uvicorn.run(app, host=ns.host, port=ns.port, log_level="warning")


if __name__ == "__main__":
    main()
