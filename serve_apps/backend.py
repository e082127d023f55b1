"""How the gateway reaches the models: a protocol with two implementations.

``ServeBackend`` (in ``serve_apps.serve_backend``) calls Ray Serve deployment handles;
:class:`LocalBackend` calls the plain classes in this process (threads for blocking
model code). The HTTP API (``serve_apps.gateway``) is written once against
:class:`Backend`, so the Serve graph and the single-process baseline serve exactly the
same API with the same models.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from PIL import Image

from medray.models.generate import GenerationParams
from medray.safety import SafetyReport
from medray.serving.aio import iterate_in_thread


class Backend(Protocol):
    """What the HTTP API needs from the models."""

    async def check_request(self, question: str) -> SafetyReport: ...

    async def check_answer(self, text: str) -> SafetyReport: ...

    def reason(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image],
        params: GenerationParams,
        adapter: str | None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Reasoner events (``Reasoner.stream``) in chunks: lists of the events produced
        since the previous chunk, so a slow consumer gets fewer, larger messages."""
        ...

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image],
        params: GenerationParams,
        adapter: str | None,
    ) -> dict[str, Any]:
        """The reasoner's final event without streaming (``Reasoner.generate``)."""
        ...

    async def summarise(
        self, caption: str, reasoning: Sequence[str], answer: str
    ) -> dict[str, Any]: ...

    async def answer_question(
        self, question: str, choices: Sequence[str] | None, params: GenerationParams
    ) -> dict[str, Any]:
        """The text medical-QA model's answer (``MedQA.answer``)."""
        ...

    async def clip_image(self, image: Image.Image) -> list[float]: ...

    async def clip_text(self, text: str) -> list[float]: ...

    async def text_vector(self, text: str) -> list[float]: ...

    async def similar_cases(
        self, vector: Sequence[float], field: str, k: int, filters: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]: ...

    async def knowledge(
        self, query: str, vector: Sequence[float], k: int
    ) -> list[dict[str, Any]]: ...

    async def loaded_adapters(self) -> list[str]: ...

    async def readiness(self) -> dict[str, Any]: ...

    def agent_events(self, inputs: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The agentic RAG events (``medray.agent.RagAgent.events``) for an
        :class:`medray.agent.AgentInput`."""
        ...


class LocalBackend:
    """Calls the plain classes directly (the single-process baseline, and tests).

    Args:
        guard, reasoner, summariser, embedder, retriever: plain instances
            (``medray.serving``); ``retriever`` may be None (retrieval disabled).
        adapter_cache: LRU of attached adapters (``AdapterCache``), or None.
        agent: the agent's settings (``medray.agent.AgentSettings``); the agent runs in
            this process over this backend. None: no agent.
        served_name: the reasoner's served name (the agent's OpenAI-compatible model).
        medqa: the text medical-QA model (``medray.serving.medqa.MedQA``), or None.
    """

    def __init__(
        self,
        guard,
        reasoner,
        summariser,
        embedder,
        retriever=None,
        adapter_cache=None,
        agent=None,
        served_name: str = "medray-reasoner",
        medqa=None,
    ) -> None:
        self.medqa = medqa
        self._agent = None
        if agent is not None:
            from medray.agent.factory import build_agent

            self._agent = build_agent(agent, self, served_name)
        self.guard = guard
        self.reasoner = reasoner
        self.summariser = summariser
        self.embedder = embedder
        self.retriever = retriever
        self.adapter_cache = adapter_cache

    async def check_request(self, question: str, note: bool = False) -> SafetyReport:
        return await asyncio.to_thread(self.guard.check_request, question, note)

    async def check_answer(self, text: str) -> SafetyReport:
        return await asyncio.to_thread(self.guard.check_answer, text)

    async def reason(self, messages, images, params, adapter):
        if adapter is not None:
            if self.adapter_cache is not None:
                await asyncio.to_thread(self.adapter_cache.get, adapter)
            else:
                await asyncio.to_thread(self.reasoner.load_adapter, adapter)
        # Closed explicitly (not left to the garbage collector) when this stream is closed:
        # that is what stops the generation of a client that went away.
        chunks = iterate_in_thread(
            lambda: self.reasoner.stream(messages, images, params, adapter), coalesce=True
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def complete(self, messages, images, params, adapter):
        if adapter is not None:
            if self.adapter_cache is not None:
                await asyncio.to_thread(self.adapter_cache.get, adapter)
            else:
                await asyncio.to_thread(self.reasoner.load_adapter, adapter)
        return await asyncio.to_thread(self.reasoner.generate, messages, images, params, adapter)

    async def summarise(self, caption, reasoning, answer):
        return await asyncio.to_thread(self.summariser.summarise, caption, reasoning, answer)

    async def answer_question(self, question, choices, params):
        if self.medqa is None:
            raise RuntimeError("no medical-QA model in this backend")
        return await asyncio.to_thread(self.medqa.answer, question, choices, params)

    async def clip_image(self, image):
        return (await asyncio.to_thread(self.embedder.clip_images, [image]))[0].tolist()

    async def clip_text(self, text):
        return (await asyncio.to_thread(self.embedder.clip_texts, [text]))[0].tolist()

    async def text_vector(self, text):
        return (await asyncio.to_thread(self.embedder.texts, [text]))[0].tolist()

    async def similar_cases(self, vector, field, k, filters):
        if self.retriever is None:
            from medray.serving.retriever import RetrievalUnavailable

            raise RetrievalUnavailable("retrieval is disabled in this app's config")
        return await asyncio.to_thread(self.retriever.similar_cases, vector, field, k, filters)

    async def knowledge(self, query, vector, k):
        if self.retriever is None:
            from medray.serving.retriever import RetrievalUnavailable

            raise RetrievalUnavailable("retrieval is disabled in this app's config")
        return await asyncio.to_thread(self.retriever.knowledge, query, vector, k)

    async def loaded_adapters(self) -> list[str]:
        return self.reasoner.loaded_adapters()

    async def readiness(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "guard": True,
            "reasoner": True,
            "summariser": True,
            "embedder": True,
            **({"medqa": True} if self.medqa is not None else {}),
        }
        if self.retriever is None:
            status["retriever"] = {"enabled": False}
        else:
            try:  # bounded: a dead Milvus must not hold /ready (retrieval degrades)
                status["retriever"] = await asyncio.wait_for(
                    asyncio.to_thread(self.retriever.status), 2.0
                )
            except TimeoutError:
                status["retriever"] = {"milvus": "TimeoutError", "cases": False, "knowledge": False}
        return status

    async def agent_events(self, inputs):
        if self._agent is None:
            raise RuntimeError("the agent is not configured in this backend")
        events = self._agent.events(inputs)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
