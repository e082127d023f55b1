"""The Reasoner: a vision-language model that streams step-wise reasoning.

Generation runs in a thread with ``transformers.TextIteratorStreamer``; the token
stream goes through :class:`medray.structured.StepStreamer`, so each completed
``reasoning`` item becomes a step event as soon as it closes, and the stream ends with
the parsed (and repaired) JSON answer. LoRA adapters (peft) are attached to the base
model on demand by name and removed again, so a serving layer can keep the most
recently used few (``serve.multiplexed`` in the Serve app, :class:`AdapterCache` here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from medray.structured import StepStreamer

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a careful medical imaging assistant for research use. Answer with one JSON "
    'object: {"caption": str, "reasoning": [str, ...], "boxes": [[x1, y1, x2, y2], ...], '
    '"answer": str}, boxes normalised to [0, 1].'
)


class UnknownAdapterError(KeyError):
    """The requested adapter name is not configured; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown adapter"


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one request."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0


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
    """A VLM (or any chat model with a processor) answering questions about images.

    Args:
        model: preset name, hub id or folder of the VLM (``load_vlm``).
        adapters: adapter name -> peft adapter folder.
        default_params: sampling used when a request gives none.
        device: torch device.
    """

    def __init__(
        self,
        model: str = "tiny-qwen2-vl",
        adapters: Mapping[str, str] | None = None,
        default_params: GenerationParams | None = None,
        device: str = "cpu",
    ) -> None:
        from medray.models import load_vlm

        t0 = time.perf_counter()
        self.model_ref = model
        self.base, self.processor = load_vlm(model)
        self.base.to(device).eval()
        self.device = device
        self.adapter_paths = {str(k): str(v) for k, v in (adapters or {}).items()}
        self.default_params = default_params or GenerationParams()
        self._peft = None  # PeftModel wrapping self.base once an adapter is loaded
        self._loaded: set[str] = set()
        # One generation at a time per instance: the active adapter is model state.
        self._lock = threading.Lock()
        log.info("reasoner %s loaded in %.1fs", model, time.perf_counter() - t0)

    # ------------------------------------------------------------------ adapters

    def adapter_names(self) -> list[str]:
        """Configured adapter names."""
        return sorted(self.adapter_paths)

    def loaded_adapters(self) -> list[str]:
        """Adapters attached to the model now."""
        return sorted(self._loaded)

    def load_adapter(self, name: str) -> None:
        """Attach adapter ``name`` to the model (no-op if attached).

        Raises:
            UnknownAdapterError: ``name`` is not configured.
        """
        if name not in self.adapter_paths:
            raise UnknownAdapterError(
                f"unknown adapter {name!r}; configured adapters: "
                f"{', '.join(self.adapter_names()) or 'none'}"
            )
        with self._lock:
            if name in self._loaded:
                return
            path = self.adapter_paths[name]
            if not Path(path).is_dir():
                raise FileNotFoundError(f"adapter {name!r}: folder {path} does not exist")
            t0 = time.perf_counter()
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(self.base, path, adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(path, adapter_name=name)
            self._loaded.add(name)
            log.info("adapter %s loaded in %.2fs", name, time.perf_counter() - t0)

    def unload_adapter(self, name: str) -> None:
        """Detach adapter ``name`` and free its weights (no-op if not attached)."""
        with self._lock:
            if name not in self._loaded or self._peft is None:
                return
            self._peft.delete_adapter(name)
            self._loaded.discard(name)
            log.info("adapter %s unloaded", name)

    # ------------------------------------------------------------------ generation

    def _inputs(self, messages: Sequence[Mapping[str, Any]], images: Sequence[Image.Image]):
        prompt = self.processor.apply_chat_template(list(messages), add_generation_prompt=True)
        kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
        if images:
            kwargs["images"] = list(images)
        return self.encode(kwargs)

    def encode(self, kwargs: dict[str, Any]):
        """The processor's outputs for ``kwargs``, on the model's device.

        On an accelerator the images are resized, normalised and patched there (the
        processor's torchvision backend takes ``device``) rather than on the host and then
        copied: 70 ms instead of 148 ms for 32 images of 448x448 on an H200
        (``benchmarks/README.md``, ``gpu_models.py``).
        """
        if kwargs.get("images") and str(self.device) != "cpu":
            kwargs = {**kwargs, "device": self.device}
        return self.processor(**kwargs).to(self.device)

    @staticmethod
    def messages_for(question: str, has_image: bool) -> list[dict[str, Any]]:
        """Chat messages for one question (with an image placeholder)."""
        content: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": question or "Describe the image."})
        return [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": content},
        ]

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
        "parse", "completion_tokens", "prompt_tokens", "finish_reason"}``.

        Args:
            messages: chat messages; image parts are ``{"type": "image"}`` placeholders
                filled in order from ``images``.
            images: decoded RGB images.
            params: sampling (defaults from the constructor).
            adapter: LoRA adapter to use (attached on demand); None for the base model.
        """
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        params = params or self.default_params
        if adapter is not None and adapter not in self._loaded:
            self.load_adapter(adapter)
        size = images[0].size if images else None
        with self._lock:
            inputs = self._inputs(messages, images)
            prompt_tokens = int(inputs["input_ids"].shape[1])
            streamer = TextIteratorStreamer(
                self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
            )
            stop = _StopFlag()
            gen_kwargs: dict[str, Any] = dict(
                **inputs,
                streamer=streamer,
                max_new_tokens=params.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([stop]),
            )
            if params.temperature > 0:
                gen_kwargs.update(
                    do_sample=True, temperature=params.temperature, top_p=params.top_p
                )
            else:
                gen_kwargs.update(do_sample=False)
            model = self._select(adapter)
            result: dict[str, Any] = {}

            def run() -> None:
                import torch

                try:
                    with torch.inference_mode():
                        if adapter is None and self._peft is not None:
                            with self._peft.disable_adapter():
                                out = model.generate(**gen_kwargs)
                        else:
                            out = model.generate(**gen_kwargs)
                    result["tokens"] = int(out.shape[1] - prompt_tokens)
                except BaseException as e:
                    result["error"] = e
                    streamer.end()

            thread = threading.Thread(target=run, name="medray-reasoner", daemon=True)
            thread.start()
            steps = StepStreamer(image_size=size)
            pieces: list[str] = []
            try:
                for piece in streamer:
                    if not piece:
                        continue
                    pieces.append(piece)
                    yield {"type": "token", "text": piece}
                    for ev in steps.feed(piece):
                        yield {"type": "step", **ev.to_dict()}
            finally:
                stop.event.set()  # no-op when finished; stops generation if the caller left
                thread.join()
            if "error" in result:
                raise result["error"]
            n = result.get("tokens", 0)
            yield {
                "type": "final",
                "text": "".join(pieces),
                "parse": steps.finish().to_dict(),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "finish_reason": "length" if n >= params.max_new_tokens else "stop",
            }

    def stream_many(self, requests: Sequence[GenRequest]) -> Iterator[list[list[dict[str, Any]]]]:
        """Generate answers for several requests in batched forward passes.

        Yields, for every decoding step, one list per request with the events that step
        produced for it (``token`` and ``step`` events, then its ``final`` event once it
        is finished; possibly empty). Requests that share an adapter and sampling
        settings run as one padded batch; different ones run one group after another.
        Greedy answers equal those of :meth:`stream` for the same request.
        """
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.adapter, r.params.temperature, r.params.top_p)
            groups.setdefault(key, []).append(i)
        for (adapter, _, _), idx in groups.items():
            if adapter is not None and adapter not in self._loaded:
                self.load_adapter(adapter)
            for step in self._generate_group([requests[i] for i in idx], adapter):
                out: list[list[dict[str, Any]]] = [[] for _ in requests]
                for j, events in zip(idx, step, strict=True):
                    out[j] = events
                yield out

    def _generate_group(
        self, reqs: Sequence[GenRequest], adapter: str | None
    ) -> Iterator[list[list[dict[str, Any]]]]:
        from transformers import StoppingCriteriaList

        tok = self.processor.tokenizer
        params = reqs[0].params
        limit = max(r.params.max_new_tokens for r in reqs)
        eos_ids = self.base.generation_config.eos_token_id
        eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) - {None}
        with self._lock:
            prompts = [
                self.processor.apply_chat_template(list(r.messages), add_generation_prompt=True)
                for r in reqs
            ]
            images = [im for r in reqs for im in r.images]
            side = tok.padding_side
            tok.padding_side = "left"  # decoder-only batches pad on the left
            try:
                kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
                if images:
                    kwargs["images"] = images
                inputs = self.encode(kwargs)
            finally:
                tok.padding_side = side
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            states = [
                _SeqState(tok, eos, r.params.max_new_tokens, r.images[0].size if r.images else None)
                for r in reqs
            ]
            streamer = _BatchStreamer()
            stop = _StopFlag()

            def all_done(input_ids, scores, **kw):
                import torch

                done = stop.event.is_set() or all(st.done for st in states)
                return torch.full(
                    (input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device
                )

            gen_kwargs: dict[str, Any] = dict(
                **inputs,
                streamer=streamer,
                max_new_tokens=limit,
                stopping_criteria=StoppingCriteriaList([all_done]),
            )
            if params.temperature > 0:
                gen_kwargs.update(
                    do_sample=True, temperature=params.temperature, top_p=params.top_p
                )
            else:
                gen_kwargs.update(do_sample=False)
            model = self._select(adapter)
            error: list[BaseException] = []

            def run() -> None:
                import torch

                try:
                    with torch.inference_mode():
                        if adapter is None and self._peft is not None:
                            with self._peft.disable_adapter():
                                model.generate(**gen_kwargs)
                        else:
                            model.generate(**gen_kwargs)
                except BaseException as e:
                    error.append(e)
                    streamer.end()

            thread = threading.Thread(target=run, name="medray-reasoner-batch", daemon=True)
            thread.start()
            try:
                while True:
                    step = streamer.queue.get()
                    if step is None:
                        break
                    yield [st.add(t) for st, t in zip(states, step, strict=True)]
            finally:
                stop.event.set()
                thread.join()
            if error:
                raise error[0]
            finals = []
            for st, n_prompt in zip(states, lengths, strict=True):
                events = [] if st.done else st._flush(final=True)
                events.append(
                    {
                        "type": "final",
                        "text": st.text,
                        "parse": st.steps.finish().to_dict(),
                        "prompt_tokens": int(n_prompt),
                        "completion_tokens": len(st.ids),
                        "finish_reason": st.finish_reason if st.done else "length",
                    }
                )
                finals.append(events)
            yield finals

    def _select(self, adapter: str | None):
        if adapter is None:
            return self._peft if self._peft is not None else self.base
        self._peft.set_adapter(adapter)
        return self._peft

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


@dataclass(frozen=True)
class GenRequest:
    """One request of a batch for :meth:`Reasoner.stream_many`."""

    messages: Sequence[Mapping[str, Any]]
    images: Sequence[Image.Image] = ()
    params: GenerationParams = GenerationParams()
    adapter: str | None = None


class _BatchStreamer:
    """``generate`` streamer that hands each step's token ids (one per sequence) to a queue."""

    def __init__(self) -> None:
        import queue

        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompts
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


class _SeqState:
    """Incremental decoding of one sequence of a batch."""

    def __init__(self, tokenizer, eos: set[int], limit: int, image_size) -> None:
        self.tokenizer = tokenizer
        self.eos = eos
        self.limit = limit
        self.ids: list[int] = []
        self.text = ""
        self.steps = StepStreamer(image_size=image_size)
        self.done = False
        self.finish_reason = "stop"

    def add(self, token: int) -> list[dict[str, Any]]:
        if self.done:
            return []
        if token in self.eos:
            self.done = True
            return self._flush(final=True)
        self.ids.append(token)
        if len(self.ids) >= self.limit:
            self.done = True
            self.finish_reason = "length"
            return self._flush(final=True)
        return self._flush(final=False)

    def _flush(self, final: bool) -> list[dict[str, Any]]:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        # Hold back an incomplete multi-byte character until its next token arrives.
        if not final and text.endswith("\ufffd"):
            return []
        piece = text[len(self.text) :] if text.startswith(self.text) else text
        self.text = text
        events: list[dict[str, Any]] = []
        if piece:
            events.append({"type": "token", "text": piece})
            events += [{"type": "step", **ev.to_dict()} for ev in self.steps.feed(piece)]
        return events


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
