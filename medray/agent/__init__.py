"""Agentic RAG: a LangGraph graph over the served reasoner, the knowledge base and
similar cases, with self-reflection and confidence-based revision.

- :mod:`medray.agent.graph`: the graph (:class:`RagAgent`), its steps in
  :mod:`~medray.agent.search_steps` and :mod:`~medray.agent.answer_steps` over the one LLM
  call of :mod:`~medray.agent.steps`, shared text helpers in :mod:`~medray.agent.text`.
- :mod:`medray.agent.state`: :class:`AgentSettings`, :class:`AgentInput` and the graph's state.
- :mod:`medray.agent.honesty`: what a final answer may claim.
- :mod:`medray.agent.prompts`: every prompt.
- :mod:`medray.agent.chat`: LangChain chat models over the served reasoner.
- :mod:`medray.agent.tools`: knowledge / case / web search over a gateway backend.
"""

from medray.agent.graph import RagAgent
from medray.agent.state import AgentInput, AgentSettings
from medray.agent.text import redact_instructions

__all__ = ["AgentInput", "AgentSettings", "RagAgent", "redact_instructions"]
