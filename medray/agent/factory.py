"""Build the agent from settings over a gateway backend (Serve handles or plain classes)."""

from __future__ import annotations

import os
from typing import Any

from medray.agent.chat import ReasonerChatModel, openai_chat_model
from medray.agent.graph import RagAgent
from medray.agent.state import AgentSettings
from medray.agent.tools import BackendTools, build_web_tool


def build_agent(settings: AgentSettings, backend: Any, served_name: str) -> RagAgent:
    """The agent whose LLM is the served reasoner (``settings.llm``: through the backend's
    ``complete``, or ``ChatOpenAI`` at the OpenAI-compatible URL) and whose tools search
    through ``backend``.

    Raises:
        ConfigError: the configured web-search provider is not installed.
    """
    if settings.llm == "openai":
        llm = openai_chat_model(
            settings.openai_base_url,
            served_name,
            os.environ.get(settings.openai_api_key_env, "") or "unused",
            settings.max_new_tokens,
            settings.temperature,
        )
    else:
        llm = ReasonerChatModel(
            complete=backend.complete,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
        )
    tools = BackendTools(backend, build_web_tool(settings.web_search, settings.k))
    return RagAgent(llm, tools, settings)
