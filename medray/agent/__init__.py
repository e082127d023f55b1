"""Agentic RAG: a LangGraph graph over the served reasoner, the knowledge base and
similar cases, with self-reflection and confidence-based revision.

- :mod:`medray.agent.graph`: the graph (:class:`RagAgent`, :class:`AgentSettings`).
- :mod:`medray.agent.prompts`: every prompt.
- :mod:`medray.agent.chat`: LangChain chat models over the served reasoner.
- :mod:`medray.agent.tools`: knowledge / case / web search over a gateway backend.
"""

from medray.agent.graph import AgentInput, AgentSettings, RagAgent, redact_instructions

__all__ = ["AgentInput", "AgentSettings", "RagAgent", "redact_instructions"]
