"""The LLM boundary the agent's steps share (:class:`StepBase`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from medray.agent import prompts as P
from medray.agent.state import AgentSettings
from medray.agent.text import RAW_CHARS, redact_instructions
from medray.agent.tools import AgentTools
from medray.structured import loads_lenient


class StepBase:
    """The chat model, the tools and the settings every step reads (set by
    :class:`~medray.agent.graph.RagAgent`), and one LLM call."""

    llm: BaseChatModel  # a LangChain chat model (the served reasoner)
    tools: AgentTools  # knowledge / cases / web search and the answer safety check
    s: AgentSettings  # bounds and thresholds

    # ------------------------------------------------------------------ LLM boundary

    async def _ask(self, task: str, template: str, **fields: Any) -> dict[str, Any]:
        """One LLM call; returns ``{"raw", "value", "notes", "error"}`` (never raises)."""
        messages = [SystemMessage(P.SYSTEM_PROMPT), HumanMessage(template.format(**fields))]
        t0 = time.perf_counter()
        try:
            reply = await self.llm.ainvoke(messages)
            raw = reply.content if isinstance(reply.content, str) else reply.text
        except Exception as e:
            return {
                "raw": "",
                "value": None,
                "notes": [],
                "error": f"LLM call failed: {type(e).__name__}: {e}",
                "ms": round((time.perf_counter() - t0) * 1000, 1),
            }
        value, notes = loads_lenient(raw)
        return {
            "raw": redact_instructions(raw[:RAW_CHARS]),
            "value": value if isinstance(value, dict) else None,
            "notes": notes
            if isinstance(value, dict) or value is None
            else [*notes, "not an object"],
            "error": None,
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }

    @staticmethod
    def _llm_trace(res: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "raw": res["raw"],
            "readable": res["value"] is not None,
            "parse_notes": res["notes"],
            "error": res["error"],
            "ms": res["ms"],
        }
