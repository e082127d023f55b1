"""LangChain chat models over MedRay's own served reasoner.

Two ways to reach the reasoner as a LangChain ``BaseChatModel``:

- :class:`ReasonerChatModel`: calls a ``complete(messages, images, params, adapter)``
  coroutine, i.e. :meth:`serve_apps.backend.Backend.complete` (a Serve deployment handle
  inside the Serve graph, the plain class in the single-process baseline);
- :func:`openai_chat_model`: ``ChatOpenAI`` pointed at the app's own
  OpenAI-compatible ``/v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

# (messages, images, params, adapter) -> the reasoner's final event ({"text", ...}).
CompleteFn = Callable[[Sequence[Mapping[str, Any]], Sequence[Any], Any, str | None], Awaitable[Any]]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}


def to_reasoner_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> the reasoner's chat format (text parts only)."""
    out = []
    for m in messages:
        text = m.content if isinstance(m.content, str) else m.text
        out.append(
            {"role": _ROLES.get(m.type, "user"), "content": [{"type": "text", "text": text}]}
        )
    return out


class ReasonerChatModel(BaseChatModel):
    """A chat model whose every call is one reasoner generation.

    Attributes:
        complete: the reasoner call (``Backend.complete``).
        max_new_tokens: generation length per call.
        temperature: sampling temperature (0 = greedy).
        adapter: LoRA adapter name, or None for the base model.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    complete: Any
    max_new_tokens: int = 96
    temperature: float = 0.0
    adapter: str | None = None

    @property
    def _llm_type(self) -> str:
        return "medray-reasoner"

    def _params(self):
        from medray.serving.reasoner import GenerationParams

        return GenerationParams(self.max_new_tokens, self.temperature)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        final = await self.complete(
            to_reasoner_messages(messages), [], self._params(), self.adapter
        )
        text = str(final.get("text", ""))
        meta = {
            "finish_reason": final.get("finish_reason"),
            "completion_tokens": final.get("completion_tokens", 0),
        }
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=text), generation_info=meta)]
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # The graph runs asynchronously; a synchronous caller outside an event loop works
        # too (tests, notebooks).
        return asyncio.run(self._agenerate(messages, stop, None, **kwargs))


def openai_chat_model(
    base_url: str, model: str, api_key: str = "unused", max_tokens: int = 96, temperature=0.0
):
    """``ChatOpenAI`` over the app's own OpenAI-compatible endpoint (``<base_url>/v1``)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url.rstrip("/") + "/v1",
        api_key=api_key,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        max_retries=1,
        timeout=120,
    )
