"""The agentic RAG graph (LangGraph).

::

    extract_diagnoses -> generate_queries -> search -> answer -> reflect
                                               ^                   |
                                               |   confidence <    |
                                               +---- revise <------+  threshold and
                                                                   |  cycle < max_cycles
                                                                   v
                                                                finalize

Every LLM call goes through a LangChain chat model (the served reasoner; see
:mod:`medray.agent.chat`). The tiny models of tests and the demo write near-random text,
so each step reads what it can (:func:`medray.structured.loads_lenient`), falls back
deterministically to text the graph already has (the summariser's label, the reasoner's
parsed answer, the retrieved passages) and records which it used in the trace. Nothing
is invented: citations can only name retrieved items, and a missing knowledge base or a
failed search is stated in the answer's ``missing`` list.

:class:`RagAgent.events` yields ``(event, data)`` pairs as the graph runs:
``agent_diagnoses``, ``agent_queries``, ``agent_sources``, ``agent_draft``,
``agent_reflection``, ``agent_revision`` (each revision cycle) and ``agent_answer`` (the
structured answer with citations, safety report, disclaimer and the full trace).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

from medray.agent.answer_steps import AnswerSteps
from medray.agent.search_steps import SearchSteps
from medray.agent.state import AgentInput, AgentSettings, State
from medray.agent.tools import AgentTools
from medray.safety import strip_injection


class RagAgent(SearchSteps, AnswerSteps):
    """The graph over a chat model and retrieval tools (the steps: :class:`SearchSteps`,
    :class:`AnswerSteps`; the LLM call: :class:`~medray.agent.steps.StepBase`).

    Args:
        llm: a LangChain chat model (the served reasoner).
        tools: knowledge / cases / web search and the answer safety check.
        settings: bounds and thresholds.
    """

    def __init__(self, llm: BaseChatModel, tools: AgentTools, settings: AgentSettings) -> None:
        self.llm = llm
        self.tools = tools
        self.s = settings
        self.graph = self._build()

    # ------------------------------------------------------------------ graph

    def _route(self, st: State) -> str:
        return "revise" if st["reflection"]["revise"] else "finalize"

    def _build(self):
        g = StateGraph(State)
        g.add_node("extract_diagnoses", self._extract)
        g.add_node("generate_queries", self._queries)
        g.add_node("search", self._search)
        g.add_node("answer", self._answer)
        g.add_node("reflect", self._reflect)
        g.add_node("revise", self._revise)
        g.add_node("finalize", self._finalize)
        g.add_edge(START, "extract_diagnoses")
        g.add_edge("extract_diagnoses", "generate_queries")
        g.add_edge("generate_queries", "search")
        g.add_edge("search", "answer")
        g.add_edge("answer", "reflect")
        g.add_conditional_edges(
            "reflect", self._route, {"revise": "revise", "finalize": "finalize"}
        )
        g.add_edge("revise", "search")
        g.add_edge("finalize", END)
        return g.compile()

    def _initial(self, inp: AgentInput) -> State:
        question, found = strip_injection(inp.question)
        parsed = dict(inp.parsed or {})
        ok = inp.reasoning_ok if inp.reasoning_ok is not None else inp.parsed is not None
        return {
            "question": question or "(no question: describe the image)",
            "injection": found,
            "reasoning": strip_injection(inp.reasoning_text)[0],
            "reasoning_ok": bool(ok),
            "parsed": parsed if ok else {},
            "summary": strip_injection(inp.summary)[0],
            "image_cases": [dict(c) for c in inp.image_cases],
            "cycle": 0,
            "queries_run": [],
            "evidence": {},
            "search_errors": [],
            "empty_queries": [],
            "trace": [
                {
                    "step": "input",
                    "cycle": 0,
                    "input": {
                        "question_chars": len(inp.question),
                        "image_cases": len(inp.image_cases),
                    },
                    "output": {"injection_removed_from_question": found},
                    "fallback": None,
                }
            ],
            "events": [],
        }

    async def events(self, inp: AgentInput) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Run the graph; yield ``(event, data)`` as each step finishes. The last event is
        ``agent_answer`` with the full trace under ``trace``."""
        trace: list[dict[str, Any]] = []
        state = self._initial(inp)
        trace.extend(state["trace"])
        limit = 8 + 4 * self.s.max_cycles  # nodes per run, with room to spare
        async for update in self.graph.astream(
            state, stream_mode="updates", config={"recursion_limit": limit}
        ):
            for _node, out in update.items():
                trace.extend((out or {}).get("trace", []))
                for name, data in (out or {}).get("events", []):
                    if name == "agent_answer":
                        data = {**data, "trace": trace}
                    yield name, data

    async def run(self, inp: AgentInput) -> dict[str, Any]:
        """Run to the end; the structured answer (with ``trace``) and every event."""
        events = [e async for e in self.events(inp)]
        final = events[-1][1]
        return {**final, "events": [name for name, _ in events]}
