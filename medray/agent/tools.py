"""What the agent searches with: knowledge, similar cases and (optionally) the web.

:class:`BackendTools` adapts a :class:`serve_apps.backend.Backend` (Serve handles or the
plain classes) to :class:`AgentTools`: knowledge is the retriever's hybrid search (dense
MiniLM vector + BM25 over the knowledge collection, RRF), similar cases are the CLIP text
vector of the query against the case reports. Web search is any LangChain tool (Tavily or
SerpAPI) and is off by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from medray.config import ConfigError
from medray.safety import SafetyReport


class AgentTools(Protocol):
    """The agent's retrieval and safety boundary."""

    async def knowledge(self, query: str, k: int) -> list[dict[str, Any]]: ...

    async def cases(self, query: str, k: int) -> list[dict[str, Any]]: ...

    async def web(self, query: str, k: int) -> list[dict[str, Any]]: ...

    @property
    def web_enabled(self) -> bool: ...

    async def check_answer(self, text: str) -> SafetyReport: ...


class BackendTools:
    """:class:`AgentTools` over a gateway backend.

    Args:
        backend: ``serve_apps.backend.Backend`` (``text_vector``, ``knowledge``,
            ``clip_text``, ``similar_cases``, ``check_answer``).
        web_tool: a LangChain tool (``.ainvoke(query)``), or None for no web search.
    """

    def __init__(self, backend: Any, web_tool: Any = None) -> None:
        self.backend = backend
        self.web_tool = web_tool

    @property
    def web_enabled(self) -> bool:
        return self.web_tool is not None

    async def knowledge(self, query: str, k: int) -> list[dict[str, Any]]:
        vec = await self.backend.text_vector(query)
        return await self.backend.knowledge(query, vec, k)

    async def cases(self, query: str, k: int) -> list[dict[str, Any]]:
        vec = await self.backend.clip_text(query)
        return await self.backend.similar_cases(vec, "text", k, None)

    async def web(self, query: str, k: int) -> list[dict[str, Any]]:
        if self.web_tool is None:
            return []
        return normalise_web_results(await self.web_tool.ainvoke(query))[:k]

    async def check_answer(self, text: str) -> SafetyReport:
        return await self.backend.check_answer(text)


def normalise_web_results(raw: Any) -> list[dict[str, Any]]:
    """Tavily (dict with ``results``, or a list) and SerpAPI (a string) -> hit dicts."""
    if isinstance(raw, Mapping) and "results" in raw:
        raw = raw["results"]
    if isinstance(raw, str):
        return [{"id": "web-0", "title": "web search result", "text": raw}] if raw.strip() else []
    out = []
    for i, r in enumerate(raw or []):
        if isinstance(r, Mapping):
            out.append(
                {
                    "id": str(r.get("url") or f"web-{i}"),
                    "title": str(r.get("title", "")),
                    "text": str(r.get("content") or r.get("snippet") or ""),
                    "url": str(r.get("url", "")),
                }
            )
    return out


def build_web_tool(provider: str, max_results: int = 3) -> Any:
    """The LangChain web-search tool for ``provider`` (``off``, ``tavily``, ``serpapi``).

    Raises:
        ConfigError: the provider's LangChain package or API key is missing.
    """
    if provider == "off":
        return None
    if provider == "tavily":
        try:
            from langchain_tavily import TavilySearch
        except ImportError:
            raise ConfigError(
                "agent.web_search=tavily needs the langchain-tavily package and TAVILY_API_KEY"
            ) from None
        return TavilySearch(max_results=max_results)
    if provider == "serpapi":
        try:
            from langchain_community.utilities import SerpAPIWrapper
        except ImportError:
            raise ConfigError(
                "agent.web_search=serpapi needs langchain-community, google-search-results "
                "and SERPAPI_API_KEY"
            ) from None
        from langchain_core.tools import Tool

        wrapper = SerpAPIWrapper()
        return Tool(name="serpapi", description="web search", func=wrapper.run)
    raise ConfigError(f"agent.web_search must be off, tavily or serpapi, not {provider!r}")
