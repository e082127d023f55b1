"""The Reasoner: a vision-language model that streams step-wise reasoning.

What it is shown and how its answer is parsed is the reasoner's contract
(:mod:`medray.contracts.reasoner`); its weights come from the one loader
(:class:`medray.models.finetuned.AdapterHost`: the base model plus LoRA adapters
attached by name on demand, each checked against the base) and every answer from the one
generate path (:func:`medray.models.generate.generate`), so a served answer equals batch
inference's and the evaluation's for the same image, question and adapter.

Streaming: generation runs in a thread; the decoded pieces go through the contract's
:class:`~medray.contracts.reasoner.StepStreamer`, so each completed ``reasoning`` item
becomes a step event as soon as it closes. A serving layer keeps the most recently used
adapters attached (``serve.multiplexed`` in the Serve app, :class:`AdapterCache` here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from medray.contracts import reasoner as contract
from medray.models.generate import GenerationParams, generate, render, tokenizer_of
from medray.serving.batch_stream import BatchStreamer, SeqState

log = logging.getLogger(__name__)

__all__ = [
    "AdapterCache",
    "GenRequest",
    "GenerationParams",
    "Reasoner",
    "UnknownAdapterError",
    "raise_error",
]


class UnknownAdapterError(KeyError):
    """The requested adapter name is not configured; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown adapter"


class _StopFlag:
    """A stopping criterion another thread can trip (client went away)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        # On the ids' device: generate ORs this into a mask there (a CPU mask fails on CUDA).
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class Reasoner:
    """A VLM answering questions about images, with named LoRA adapters.

    Args:
        model: preset name, hub id or folder of the base VLM.
        adapters: adapter name -> adapter folder or storage URI (trained on ``model``).
        default_params: generation settings when a request gives none (the contract's).
        device: torch device.
    """

    def __init__(
        self,
        model: str = "tiny-qwen2-vl",
        adapters: Mapping[str, str] | None = None,
        default_params: GenerationParams | None = None,
        device: str = "cpu",
    ) -> None:
        from medray.models.finetuned import AdapterHost

        t0 = time.perf_counter()
        self.model_ref = model
        self.host = AdapterHost(model, dict(adapters or {}), kind="vlm", device=device)
        self.device = device
        self.default_params = default_params or contract.GENERATION
        log.info("reasoner %s loaded in %.1fs", model, time.perf_counter() - t0)

    @property
    def base(self):
        """The base model (adapters not applied)."""
        return self.host.model

    @property
    def processor(self):
        """The base model's processor."""
        return self.host.processing

    # ------------------------------------------------------------------ adapters

    @property
    def adapter_paths(self) -> dict[str, str]:
        """Configured adapter name -> folder."""
        return self.host.paths

    def adapter_names(self) -> list[str]:
        """Configured adapter names."""
        return self.host.names()

    def loaded_adapters(self) -> list[str]:
        """Adapters attached to the model now."""
        return self.host.loaded()

    def describe(self, adapter: str | None) -> dict[str, Any]:
        """Which model answers for ``adapter``: the preset/base, or the adapter and its run."""
        if adapter is None:
            return {"model": self.model_ref, **self.host.source.summary()}
        src = self.host.sources.get(adapter)
        return {"model": adapter, **(src.summary() if src else {"kind": "adapter"})}

    def load_adapter(self, name: str) -> None:
        """Attach adapter ``name`` to the model (no-op if attached).

        Raises:
            UnknownAdapterError: ``name`` is not configured.
            medray.models.finetuned.AdapterBaseMismatchError: trained on another base.
        """
        if name not in self.host.paths:
            raise UnknownAdapterError(
                f"unknown adapter {name!r}; configured adapters: "
                f"{', '.join(self.adapter_names()) or 'none'}"
            )
        t0 = time.perf_counter()
        self.host.load(name)
        fmt = self.host.sources[name].output_format
        if fmt not in (None, contract.DEFAULT_FORMAT):
            self.host.unload(name)
            raise ValueError(
                f"adapter {name!r} was trained on the {fmt!r} output format (a "
                "reasoning-format ablation); the served reasoner streams the full "
                f"{contract.DEFAULT_FORMAT!r} object: score it with jobs.batch_infer instead"
            )
        log.info("adapter %s ready in %.2fs", name, time.perf_counter() - t0)

    def unload_adapter(self, name: str) -> None:
        """Detach adapter ``name`` and free its weights (no-op if not attached)."""
        self.host.unload(name)

    # ------------------------------------------------------------------ generation

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image] = (),
        params: GenerationParams | None = None,
        adapter: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Generate an answer, yielding events as they happen.

        Events: ``{"type": "token", "text"}`` for each decoded piece,
        ``{"type": "step", "kind", "text", "index"?}`` for each caption / reasoning step /
        answer as its JSON string closes, and finally ``{"type": "final", "text",
        "parse", "completion_tokens", "prompt_tokens", "finish_reason", "model"}``.
        """
        for events in self.stream_many(
            [GenRequest(messages, images, params or self.default_params, adapter)]
        ):
            raise_error(events[0])
            yield from events[0]

    def stream_many(self, requests: Sequence[GenRequest]) -> Iterator[list[list[dict[str, Any]]]]:
        """Generate answers for several requests in batched forward passes.

        Yields, for every decoding step, one list per request with the events that step
        produced for it (``token`` and ``step`` events, then its ``final`` event once it
        is finished; possibly empty). Requests that share an adapter and sampling
        settings run as one padded batch; different ones run one group after another.
        Greedy answers equal :func:`medray.models.generate.generate`'s for the request.
        """
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.adapter, r.params.temperature, r.params.top_p)
            groups.setdefault(key, []).append(i)
        for (adapter, _, _), idx in groups.items():
            if adapter is not None:
                self.load_adapter(adapter)
            for step in self._isolated([requests[i] for i in idx], adapter):
                out: list[list[dict[str, Any]]] = [[] for _ in requests]
                for j, events in zip(idx, step, strict=True):
                    out[j] = events
                yield out

    def _isolated(
        self, reqs: Sequence[GenRequest], adapter: str | None
    ) -> Iterator[list[list[dict[str, Any]]]]:
        """:meth:`_generate_group`, but one bad request fails only itself.

        A batch that fails before its first decoding step (the processor refusing one
        request's image or text) is run again one request at a time; a request that
        fails alone ends with an ``error`` event (``{"type": "error", "error": exc}``)
        instead of raising into every other request of the batch.
        """
        gen = self._generate_group(reqs, adapter)
        try:
            first = next(gen)
        except StopIteration:
            return
        except Exception as e:
            if len(reqs) == 1:
                log.warning("reasoner request failed: %s", type(e).__name__)
                yield [[{"type": "error", "error": e}]]
                return
            log.warning(
                "batch of %d failed before decoding (%s); running each request alone",
                len(reqs),
                type(e).__name__,
            )
            for i, r in enumerate(reqs):
                for step in self._isolated([r], adapter):
                    out: list[list[dict[str, Any]]] = [[] for _ in reqs]
                    out[i] = step[0]
                    yield out
            return
        yield first
        yield from gen

    def _generate_group(
        self, reqs: Sequence[GenRequest], adapter: str | None
    ) -> Iterator[list[list[dict[str, Any]]]]:
        limit = max(r.params.max_new_tokens for r in reqs)
        params = GenerationParams(limit, reqs[0].params.temperature, reqs[0].params.top_p)
        processing = self.host.processing_for(adapter)
        tok = tokenizer_of(processing)
        eos_ids = self.base.generation_config.eos_token_id
        eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) - {None}
        texts = [render(processing, r.messages) for r in reqs]
        images = [im for r in reqs for im in r.images]
        states = [
            SeqState(tok, eos, r.params.max_new_tokens, r.images[0].size if r.images else None)
            for r in reqs
        ]
        streamer = BatchStreamer()
        stop = _StopFlag()

        def all_done(input_ids, scores, **kw):
            import torch

            done = stop.event.is_set() or all(st.done for st in states)
            return torch.full(
                (input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device
            )

        with self.host.lock, self.host.active(adapter) as model:
            result: dict[str, Any] = {}

            def run() -> None:
                try:
                    result["out"] = generate(
                        model,
                        processing,
                        texts,
                        images,
                        params,
                        streamer=streamer,
                        stopping=[all_done],
                    )
                except BaseException as e:
                    result["error"] = e
                    streamer.end()

            thread = threading.Thread(target=run, name="medray-reasoner", daemon=True)
            thread.start()
            try:
                while True:
                    step = streamer.queue.get()
                    if step is None:
                        break
                    yield [st.add(t) for st, t in zip(states, step, strict=True)]
            finally:
                stop.event.set()  # no-op when finished; stops generation if the caller left
                thread.join()
        if "error" in result:
            raise result["error"]
        model_info = self.describe(adapter)
        finals = []
        for st, gen in zip(states, result["out"], strict=True):
            events = [] if st.done else st._flush(final=True)
            events.append(
                {
                    "type": "final",
                    "text": st.text,
                    "parse": st.steps.finish().to_dict(),
                    "prompt_tokens": gen.prompt_tokens,
                    "completion_tokens": len(st.ids),
                    "finish_reason": st.finish_reason if st.done else "length",
                    "model": model_info,
                }
            )
            finals.append(events)
        yield finals

    def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image] = (),
        params: GenerationParams | None = None,
        adapter: str | None = None,
    ) -> dict[str, Any]:
        """Non-streaming :meth:`stream`: the final event, plus the step events in ``steps``."""
        steps: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        for ev in self.stream(messages, images, params, adapter):
            if ev["type"] == "step":
                steps.append(ev)
            elif ev["type"] == "final":
                final = ev
        return {**final, "steps": steps}


def raise_error(events: Sequence[Mapping[str, Any]]) -> None:
    """Raise the exception of an ``error`` event among ``events`` (a failed request)."""
    for ev in events:
        if ev.get("type") == "error":
            raise ev["error"]


@dataclass(frozen=True)
class GenRequest:
    """One request of a batch for :meth:`Reasoner.stream_many`."""

    messages: Sequence[Mapping[str, Any]]
    images: Sequence[Image.Image] = ()
    params: GenerationParams = contract.GENERATION
    adapter: str | None = None


class AdapterCache:
    """LRU of attached adapters for use without Serve (Serve uses ``serve.multiplexed``).

    Args:
        reasoner: the reasoner whose adapters are managed.
        capacity: adapters kept attached at most.
    """

    def __init__(self, reasoner: Reasoner, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.reasoner = reasoner
        self.capacity = capacity
        self._order: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> str:
        """Attach ``name`` if needed, evicting the least recently used; return ``name``."""
        with self._lock:
            if name in self._order:
                self._order.move_to_end(name)
                return name
            self.reasoner.load_adapter(name)
            self._order[name] = None
            while len(self._order) > self.capacity:
                old, _ = self._order.popitem(last=False)
                self.reasoner.unload_adapter(old)
            return name

    def loaded(self) -> list[str]:
        """Attached adapter names, least recently used first."""
        return list(self._order)
