"""What the agent is configured by (:class:`AgentSettings`), starts from
(:class:`AgentInput`) and carries between the graph's steps (:class:`State`)."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

from medray.config import ConfigError


@dataclass(frozen=True)
class AgentSettings:
    """The agent's knobs (``agent:`` in the Serve app args).

    Attributes:
        enabled: run the agent in ``/v1/analyze`` (a request can still turn it off).
        llm: ``reasoner`` (a chat model over the Reasoner deployment handle) or
            ``openai`` (``ChatOpenAI`` at ``openai_base_url``/v1, e.g. the app itself).
        openai_base_url: the OpenAI-compatible server for ``llm: openai``.
        openai_api_key_env: environment variable with its key.
        max_cycles: revision cycles at most after the first answer.
        confidence_threshold: revise while the reflection's confidence is below this.
        k: knowledge passages and similar cases per query.
        max_queries: search queries per cycle.
        max_new_tokens: generation length of each LLM call.
        temperature: sampling temperature of LLM calls.
        web_search: ``off`` (default; there is no internet here), ``tavily`` or ``serpapi``.
    """

    enabled: bool = True
    llm: Literal["reasoner", "openai"] = "reasoner"
    openai_base_url: str = ""
    openai_api_key_env: str = "MEDRAY_AGENT_OPENAI_KEY"
    max_cycles: int = 2
    confidence_threshold: float = 0.7
    k: int = 3
    max_queries: int = 3
    max_new_tokens: int = 96
    temperature: float = 0.0
    web_search: Literal["off", "tavily", "serpapi"] = "off"

    def __post_init__(self) -> None:
        if not 0 <= self.max_cycles <= 10:
            raise ConfigError("agent.max_cycles must lie in [0, 10]")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError("agent.confidence_threshold must lie in [0, 1]")
        if self.k < 1 or self.max_queries < 1 or self.max_new_tokens < 1:
            raise ConfigError("agent.k, agent.max_queries and agent.max_new_tokens must be >= 1")
        if self.llm == "openai" and not self.openai_base_url:
            raise ConfigError("agent.llm=openai needs agent.openai_base_url")


@dataclass(frozen=True)
class AgentInput:
    """What the agent starts from (the gateway's results so far).

    Attributes:
        question: the user's question (already passed the guard).
        reasoning_text: the reasoner's raw output.
        parsed: the reasoner's parsed answer (``caption``, ``reasoning``, ``answer``) or None.
        summary: the summariser's label.
        image_cases: similar cases found from the image (citable as ``C`` labels).
        reasoning_ok: the reasoner's output parsed (None: it did when ``parsed`` is given).
    """

    question: str = ""
    reasoning_text: str = ""
    parsed: Mapping[str, Any] | None = None
    summary: str = ""
    image_cases: Sequence[Mapping[str, Any]] = ()
    reasoning_ok: bool | None = None


class State(TypedDict, total=False):
    question: str
    injection: list[str]
    reasoning: str
    reasoning_ok: bool
    parsed: dict[str, Any]
    summary: str
    image_cases: list[dict[str, Any]]
    diagnoses: list[str]
    diagnoses_source: str
    queries: list[str]
    queries_run: list[str]
    evidence: dict[str, dict[str, Any]]  # label -> item
    search_errors: list[str]
    empty_queries: list[str]
    draft: dict[str, Any]
    reflection: dict[str, Any]
    cycle: int
    final: dict[str, Any]
    trace: Annotated[list[dict[str, Any]], operator.add]
    events: Annotated[list[tuple[str, dict[str, Any]]], operator.add]
