"""``ServeBackend``: :class:`serve_apps.backend.Backend` over Ray Serve deployment handles
(the Gateway's and the Agent's way to reach the models of ``serve_apps.app``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from medray.serving.retriever import RetrievalUnavailable

log = logging.getLogger("medray.serve")

READY_RETRIEVER_S = 2.0  # /ready waits this long at most for the retriever's status


class ServeBackend:
    """:class:`serve_apps.backend.Backend` over deployment handles."""

    def __init__(
        self,
        guard: DeploymentHandle,
        reasoner: DeploymentHandle,
        summariser: DeploymentHandle,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle | None,
        agent: DeploymentHandle | None = None,
        medqa: DeploymentHandle | None = None,
    ) -> None:
        self.medqa = medqa
        self.guard = guard
        self.reasoner = reasoner
        self.summariser = summariser
        self.embedder = embedder
        self.retriever = retriever
        self.agent = agent

    @staticmethod
    async def _call(method, *args):
        """``method.remote(*args)``, once more if the replica died under the call (a crash,
        a killed process): Serve routes the retry to a live or replacement replica, so a
        lost replica fails no request. Every call here is a read or a generation."""
        try:
            return await method.remote(*args)
        except RayActorError as e:
            log.warning("a replica died under a call (%s); retrying it once", type(e).__name__)
            return await method.remote(*args)

    async def check_request(self, question, note=False):
        return await self._call(self.guard.check_request, question, note)

    async def check_answer(self, text):
        return await self._call(self.guard.check_answer, text)

    async def reason(self, messages, images, params, adapter):
        handle = self.reasoner.options(stream=True, multiplexed_model_id=adapter or "")
        args = (list(messages), list(images), params)
        # A streamed response cannot be handed to another deployment: consume, re-yield.
        # A replica that dies before the first chunk is retried once (nothing was sent).
        started = False
        try:
            async for chunk in handle.stream.remote(*args):
                started = True
                yield chunk
        except RayActorError as e:
            if started:
                raise
            log.warning("a Reasoner replica died before streaming (%s); retrying", type(e).__name__)
            async for chunk in handle.stream.remote(*args):
                yield chunk

    async def complete(self, messages, images, params, adapter):
        handle = self.reasoner.options(multiplexed_model_id=adapter or "")
        return await self._call(handle.generate, list(messages), list(images), params)

    async def summarise(self, caption, reasoning, answer):
        return await self._call(self.summariser.summarise, caption, list(reasoning), answer)

    async def answer_question(self, question, choices, params):
        if self.medqa is None:
            raise RuntimeError("the MedQA deployment is not part of this app")
        return await self._call(self.medqa.answer, question, choices, params)

    async def clip_image(self, image):
        return await self._call(self.embedder.clip_image, image)

    async def clip_text(self, text):
        return await self._call(self.embedder.clip_text, text)

    async def text_vector(self, text):
        return await self._call(self.embedder.text, text)

    async def _retrieval(self, call):
        if self.retriever is None:
            raise RetrievalUnavailable("retrieval is disabled in this app's config")
        try:
            return await call
        except Exception as e:
            # Errors raised in a replica arrive wrapped (RayTaskError); report the cause.
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, RetrievalUnavailable):
                raise RetrievalUnavailable(str(cause)) from None
            raise RetrievalUnavailable(
                f"retriever failed: {type(cause).__name__}: {cause}"
            ) from None

    async def similar_cases(self, vector, field, k, filters):
        return await self._retrieval(
            self.retriever.similar_cases.remote(list(vector), field, k, filters)
            if self.retriever
            else None
        )

    async def knowledge(self, query, vector, k):
        return await self._retrieval(
            self.retriever.knowledge.remote(query, list(vector), k) if self.retriever else None
        )

    async def loaded_adapters(self):
        return await self.reasoner.loaded_adapters.remote()

    async def agent_events(self, inputs):
        if self.agent is None:
            raise RuntimeError("the Agent deployment is not part of this app (agent.enabled)")
        # A streamed response cannot be handed to another deployment: consume, re-yield.
        async for event in self.agent.options(stream=True).events.remote(inputs):
            yield event

    async def readiness(self):
        pairs = [
            (n, h)
            for n, h in zip(
                ("guard", "reasoner", "summariser", "embedder", "medqa"),
                (self.guard, self.reasoner, self.summariser, self.embedder, self.medqa),
                strict=True,
            )
            if h is not None
        ]
        names, handles = [n for n, _ in pairs], [h for _, h in pairs]
        results = await asyncio.gather(*(h.ready.remote() for h in handles), return_exceptions=True)
        status: dict[str, Any] = {n: r is True for n, r in zip(names, results, strict=True)}
        if self.retriever is not None:
            try:
                # Bounded: a dead Milvus must not hold /ready (the retriever degrades).
                status["retriever"] = await asyncio.wait_for(
                    self.retriever.status.remote(), READY_RETRIEVER_S
                )
            except Exception as e:
                status["retriever"] = {"milvus": f"{type(e).__name__}"}
        else:
            status["retriever"] = {"enabled": False}
        return status
