"""Token-by-token decoding of a batched ``generate``: the streamer that hands each step's
token ids to a queue (:class:`BatchStreamer`) and the per-sequence state that turns them
into ``token`` and ``step`` events (:class:`SeqState`), for :meth:`Reasoner.stream_many`
(:mod:`medray.serving.reasoner`)."""

from __future__ import annotations

from typing import Any

from medray.contracts import reasoner as contract


class BatchStreamer:
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


class SeqState:
    """Incremental decoding of one sequence of a batch."""

    def __init__(self, tokenizer, eos: set[int], limit: int, image_size) -> None:
        self.tokenizer = tokenizer
        self.eos = eos
        self.limit = limit
        self.ids: list[int] = []
        self.text = ""
        self.steps = contract.StepStreamer(image_size=image_size)
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
