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

import logging
import operator
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

from medray import DISCLAIMER
from medray.agent import honesty
from medray.agent import prompts as P
from medray.agent.tools import AgentTools
from medray.config import ConfigError
from medray.safety import SafetyReport, strip_injection
from medray.structured import loads_lenient

log = logging.getLogger(__name__)

SEVERITIES = ("low", "moderate", "high", "urgent", "undetermined")
_LABEL = re.compile(r"\[?\b([KCW]\d{1,3})\b\]?")
_WORD = re.compile(r"[a-z][a-z0-9-]{3,}")
_MAX_ITEM_CHARS = 200  # one finding / diagnosis / step as read from the model
_EVIDENCE_CHARS = 320  # of each retrieved item shown to the model
_RAW_CHARS = 2000  # of each raw model output kept in the trace


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


# --------------------------------------------------------------------------- helpers


_UNSEARCHABLE_GAPS = ("knowledge base:", "the reasoner's output could not be parsed")


def _gap_topic(gap: str, errors: Sequence[str]) -> str | None:
    """What a gap asks to look up, or None for a gap that is a system failure (a failed
    search, an unparsable model output): those are reported, never sent as queries."""
    m = re.match(r"no retrieved evidence mentions '(.+)'$", gap)
    if m:
        return m.group(1)
    if gap in errors or gap.startswith(_UNSEARCHABLE_GAPS) or "search failed" in gap:
        return None
    return gap


def _clean(text: Any, limit: int = _MAX_ITEM_CHARS) -> str:
    s = " ".join(str(text).split())
    return s[:limit]


def _str_list(value: Any, limit: int = 8) -> list[str] | None:
    """A list of non-empty strings from a model's value, or None if it is not one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    out = [_clean(v) for v in value if isinstance(v, str | int | float) and _clean(v)]
    out = [v for v in out if re.search(r"[A-Za-z]", v)]
    return list(dict.fromkeys(out))[:limit] or None


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _shingles(text: str, n: int = 6) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


_SYSTEM_SHINGLES = _shingles(P.SYSTEM_PROMPT)
LEAK_REDACTION = "[removed: the model repeated its instructions]"


def redact_instructions(text: str) -> str:
    """``text``, or a redaction notice if it repeats six or more words of the system prompt."""
    return LEAK_REDACTION if _shingles(text) & _SYSTEM_SHINGLES else text


def _evidence_block(evidence: Mapping[str, Mapping[str, Any]]) -> str:
    if not evidence:
        return "(no evidence was retrieved)"
    lines = []
    for label, item in evidence.items():
        title = _clean(item.get("title") or item.get("labels") or "", 80)
        lines.append(f"[{label}] {title}: {_clean(item['text'], _EVIDENCE_CHARS)}")
    return "\n".join(lines)


def _item_text(hit: Mapping[str, Any]) -> str:
    return str(hit.get("text") or hit.get("report") or hit.get("content") or "")


# --------------------------------------------------------------------------- the agent


class RagAgent:
    """The graph over a chat model and retrieval tools.

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
            "raw": redact_instructions(raw[:_RAW_CHARS]),
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

    # ------------------------------------------------------------------ nodes

    async def _extract(self, st: State) -> dict[str, Any]:
        parsed = st.get("parsed") or {}
        reasoning = (
            " ".join(
                [parsed.get("caption", ""), *parsed.get("reasoning", []), parsed.get("answer", "")]
            )
            if parsed
            else st.get("reasoning", "")
        )
        inp = {
            "question": st["question"],
            "reasoning": _clean(reasoning, 800),
            "summary": st["summary"],
        }
        res = await self._ask("extract_diagnoses", P.EXTRACT_DIAGNOSES, **inp)
        found = _str_list((res["value"] or {}).get("diagnoses"), 5)
        fallback = None
        source = "llm"
        if not found and not st.get("reasoning_ok", True):
            source, found = "none", []
            fallback = "the reasoner's output could not be parsed: no candidate diagnoses"
        elif not found:
            source, found = self._fallback_diagnoses(st)
            fallback = f"the model's diagnoses were not readable; taken from the {source}"
            if not found:
                fallback = "no candidate diagnoses in the model, summariser or reasoner output"
        entry = {
            "step": "extract_diagnoses",
            "cycle": 0,
            "input": inp,
            "llm": self._llm_trace(res),
            "output": {"diagnoses": found, "source": source},
            "fallback": fallback,
        }
        event = {"diagnoses": found, "source": source, "fallback": fallback}
        return {
            "diagnoses": found,
            "diagnoses_source": source,
            "trace": [entry],
            "events": [("agent_diagnoses", event)],
        }

    @staticmethod
    def _fallback_diagnoses(st: State) -> tuple[str, list[str]]:
        for source, text in (
            ("summariser output", st.get("summary", "")),
            ("reasoner's parsed answer", (st.get("parsed") or {}).get("answer", "")),
        ):
            line = _clean(text.splitlines()[0] if text.strip() else "", 80)
            if re.search(r"[A-Za-z]", line):
                return source, [line]
        return "none", []

    async def _queries(self, st: State) -> dict[str, Any]:
        inp = {
            "question": st["question"],
            "diagnoses": "; ".join(st["diagnoses"]) or "(none)",
            "max_queries": self.s.max_queries,
        }
        res = await self._ask("generate_queries", P.GENERATE_QUERIES, **inp)
        queries = _str_list((res["value"] or {}).get("queries"), self.s.max_queries)
        fallback = None
        if not queries:
            queries = self._template_queries(st["diagnoses"], st["question"], [])
            fallback = (
                "the model's queries were not readable; built from the diagnoses and question"
            )
        entry = {
            "step": "generate_queries",
            "cycle": 0,
            "input": inp,
            "llm": self._llm_trace(res),
            "output": {"queries": queries},
            "fallback": fallback,
        }
        return {
            "queries": queries,
            "trace": [entry],
            "events": [("agent_queries", {"cycle": 0, "queries": queries, "fallback": fallback})],
        }

    def _template_queries(self, diagnoses: Sequence[str], question: str, run: Sequence[str]):
        out = [t.format(diagnosis=d) for d in diagnoses[:2] for t in P.FALLBACK_QUERY_TEMPLATES]
        if question:
            out.append(_clean(question, 120))
        seen = {q.lower() for q in run}
        return [q for q in dict.fromkeys(out) if q.lower() not in seen][: self.s.max_queries]

    async def _search(self, st: State) -> dict[str, Any]:
        cycle = st.get("cycle", 0)
        evidence = dict(st.get("evidence", {}))
        seen = {(lab[0], str(it["id"])) for lab, it in evidence.items()}
        errors: list[str] = list(st.get("search_errors", []))
        empty: list[str] = list(st.get("empty_queries", []))
        new: list[str] = []
        injections: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []

        def add(kind: str, hits: Sequence[Mapping[str, Any]]) -> None:
            for h in hits:
                key = (kind, str(h.get("id")))
                if key in seen:
                    continue
                seen.add(key)
                n = sum(1 for lab in evidence if lab[0] == kind) + 1
                label = f"{kind}{n}"
                text, patterns = strip_injection(_item_text(h))
                if patterns:
                    injections.append({"label": label, "patterns": patterns})
                evidence[label] = {
                    "label": label,
                    "kind": {"K": "knowledge", "C": "case", "W": "web"}[kind],
                    "id": str(h.get("id")),
                    "title": _clean(h.get("title") or ", ".join(h.get("labels") or []), 120),
                    "source": _clean(h.get("source") or h.get("url") or "", 200),
                    "score": h.get("score"),
                    "text": text,
                }
                new.append(label)

        if cycle == 0:
            add("C", st.get("image_cases", []))
        for q in st.get("queries", []):
            for kind, call in (("K", self.tools.knowledge), ("C", self.tools.cases)):
                try:
                    hits = await call(q, self.s.k)
                except Exception as e:
                    msg = f"{'knowledge' if kind == 'K' else 'similar-case'} search failed: {e}"
                    errors.append(msg)
                    calls.append({"query": q, "kind": kind, "error": msg})
                    continue
                if kind == "K" and not hits:
                    empty.append(q)
                calls.append({"query": q, "kind": kind, "ids": [str(h.get("id")) for h in hits]})
                add(kind, hits)
            if self.tools.web_enabled:
                try:
                    add("W", await self.tools.web(q, self.s.k))
                except Exception as e:
                    errors.append(f"web search failed: {type(e).__name__}: {e}")
        web_note = None if self.tools.web_enabled else P.WEB_SEARCH_OFF
        entry = {
            "step": "search",
            "cycle": cycle,
            "input": {"queries": st.get("queries", []), "k": self.s.k},
            "output": {"calls": calls, "new_labels": new, "injection_removed": injections},
            "web_search": web_note or "on",
            "fallback": None,
        }
        sources = [
            {k: v for k, v in evidence[lab].items() if k != "text"}
            | {"snippet": evidence[lab]["text"][:160]}
            for lab in new
        ]
        event = {
            "cycle": cycle,
            "sources": sources,
            "errors": errors[len(st.get("search_errors", [])) :],
            "web_search": web_note or "on",
        }
        return {
            "evidence": evidence,
            "search_errors": errors,
            "empty_queries": empty,
            "queries_run": [*st.get("queries_run", []), *st.get("queries", [])],
            "trace": [entry],
            "events": [("agent_sources", event)],
        }

    async def _answer(self, st: State) -> dict[str, Any]:
        cycle = st.get("cycle", 0)
        evidence = st.get("evidence", {})
        diagnoses = list(st.get("diagnoses", []))
        notes: list[str] = []
        if not diagnoses:  # retrieved titles are topics, not evidence about this image
            notes.append("no candidate diagnoses: none is named")
        inp = {
            "question": st["question"],
            "reasoning": _clean(st.get("reasoning", ""), 600),
            "diagnoses": "; ".join(diagnoses) or "(none)",
            "evidence": _evidence_block(evidence),
        }
        res = await self._ask("answer", P.ANSWER, **inp)
        v = res["value"] or {}
        draft, dropped = self._read_answer(v, evidence)
        model_fields = [
            k for k in ("findings", "diagnosis", "differential", "next_steps") if draft.get(k)
        ]
        fb = self._fallback_answer(st, diagnoses, evidence)
        for k2 in ("findings", "diagnosis", "differential", "next_steps", "citations"):
            if not draft.get(k2):
                draft[k2] = fb[k2]
                notes.append(
                    f"{k2}: not readable from the model; built from retrieved/reasoner text"
                )
        draft["severity"] = draft.get("severity") or "undetermined"
        draft["gaps"] = list(dict.fromkeys([*draft.get("gaps", []), *fb["gaps"]]))
        draft["from_model"] = model_fields
        if dropped:
            notes.append(f"dropped citations to items that were not retrieved: {dropped}")
        entry = {
            "step": "answer",
            "cycle": cycle,
            "input": {k2: v2 for k2, v2 in inp.items() if k2 != "evidence"}
            | {"evidence_labels": list(evidence)},
            "llm": self._llm_trace(res),
            "output": draft,
            "fallback": "; ".join(notes) or None,
        }
        return {
            "draft": draft,
            "diagnoses": diagnoses,
            "trace": [entry],
            "events": [("agent_draft", {"cycle": cycle, **draft, "fallback": entry["fallback"]})],
        }

    @staticmethod
    def _read_answer(v: Mapping[str, Any], evidence: Mapping[str, Any]):
        out: dict[str, Any] = {}
        for k in ("findings", "differential", "next_steps", "gaps"):
            out[k] = [redact_instructions(x) for x in (_str_list(v.get(k)) or [])]
        d = v.get("diagnosis")
        out["diagnosis"] = (
            redact_instructions(_clean(d)) if isinstance(d, str) and _clean(d) else ""
        )
        sev = str(v.get("severity", "")).strip().lower()
        out["severity"] = sev if sev in SEVERITIES else ""
        cited: list[str] = []
        raw_cites = v.get("citations") if isinstance(v.get("citations"), list) else []
        text = " ".join([*out["findings"], out["diagnosis"], *map(str, raw_cites)])
        cited = list(dict.fromkeys(m.upper() for m in _LABEL.findall(text)))
        out["citations"] = [c for c in cited if c in evidence]
        dropped = [c for c in cited if c not in evidence]
        return out, dropped

    @staticmethod
    def _fallback_answer(st: State, diagnoses: Sequence[str], evidence: Mapping[str, Any]):
        parsed = st.get("parsed") or {}
        findings = [
            _clean(x)
            for x in [parsed.get("caption", ""), *parsed.get("reasoning", [])]
            if _clean(x)
        ]
        dwords = _words(" ".join(diagnoses))
        relevant = [
            lab for lab, e in evidence.items() if dwords & _words(e["title"] + " " + e["text"])
        ]
        cites = relevant or list(evidence)[:4]
        gaps: list[str] = []
        if not any(e["kind"] == "knowledge" for e in evidence.values()):
            gaps.append(f"knowledge base: {P.NO_EVIDENCE}")
        for err in dict.fromkeys(st.get("search_errors", [])):
            gaps.append(err)
        for d in diagnoses:
            if not any(_words(d) & _words(e["title"] + " " + e["text"]) for e in evidence.values()):
                gaps.append(f"no retrieved evidence mentions '{d}'")
        if not findings:
            gaps.append("the reasoner's output could not be parsed: no image findings")
        steps = ([f"Read the cited sources: {', '.join(cites)}."] if cites else []) + [P.CONSULT]
        return {
            "findings": findings,
            "diagnosis": diagnoses[0] if diagnoses else "undetermined",
            "differential": list(diagnoses[1:]),
            "next_steps": steps,
            "citations": cites,
            "gaps": gaps,
        }

    def _grounding(self, st: State, draft: Mapping[str, Any]) -> float:
        """Deterministic confidence from how well the draft is grounded (at most 0.9)."""
        evidence = st.get("evidence", {})
        if not any(e["kind"] == "knowledge" for e in evidence.values()):
            return 0.0
        diagnoses = st.get("diagnoses", [])[:3]
        covered = [
            any(_words(d) & _words(e["title"] + " " + e["text"]) for e in evidence.values())
            for d in diagnoses
        ]
        coverage = sum(covered) / len(covered) if covered else 0.0
        from_model = len(draft.get("from_model", [])) / 4
        amount = min(1.0, len(evidence) / (2 * self.s.k))
        return round(min(0.9, 0.5 * coverage + 0.2 * from_model + 0.2 * amount), 3)

    async def _reflect(self, st: State) -> dict[str, Any]:
        cycle = st.get("cycle", 0)
        draft = st["draft"]
        inp = {
            "question": st["question"],
            "draft": _clean(
                {k: draft[k] for k in ("findings", "diagnosis", "differential", "citations")}, 800
            ),
            "labels": ", ".join(st.get("evidence", {})) or "(none)",
            "queries": "; ".join(st.get("queries_run", [])) or "(none)",
        }
        res = await self._ask("reflect", P.REFLECT, **inp)
        v = res["value"] or {}
        grounding = self._grounding(st, draft)
        conf = _confidence(v.get("confidence"))
        notes = []
        if conf is None:
            conf = grounding
            notes.append("the model's confidence was not readable: grounding score used")
        elif not any(e["kind"] == "knowledge" for e in st.get("evidence", {}).values()):
            conf = min(conf, grounding)
            notes.append("nothing was retrieved from the knowledge base: confidence capped")
        gaps = _str_list(v.get("gaps")) or []
        if not gaps:
            gaps = list(draft.get("gaps", []))
            notes.append("the model named no readable gaps: the draft's gaps are used")
        queries = _str_list(v.get("queries"), self.s.max_queries) or []
        revise = conf < self.s.confidence_threshold and cycle < self.s.max_cycles
        reflection = {
            "cycle": cycle,
            "confidence": conf,
            "grounding": grounding,
            "gaps": gaps,
            "queries": queries,
            "threshold": self.s.confidence_threshold,
            "revise": revise,
            "reason": (
                "confidence below the threshold"
                if revise
                else "confidence reached the threshold"
                if conf >= self.s.confidence_threshold
                else f"stopped at the bound of {self.s.max_cycles} revision cycles"
            ),
        }
        entry = {
            "step": "reflect",
            "cycle": cycle,
            "input": inp,
            "llm": self._llm_trace(res),
            "output": reflection,
            "fallback": "; ".join(notes) or None,
        }
        return {
            "reflection": reflection,
            "trace": [entry],
            "events": [("agent_reflection", reflection | {"fallback": entry["fallback"]})],
        }

    async def _revise(self, st: State) -> dict[str, Any]:
        cycle = st.get("cycle", 0) + 1
        refl = st["reflection"]
        run = st.get("queries_run", [])
        seen = {q.lower() for q in run}
        queries = [q for q in refl["queries"] if q.lower() not in seen]
        source, res = "reflection", None
        if not queries:
            inp = {
                "question": st["question"],
                "gaps": "; ".join(refl["gaps"]) or "(none)",
                "queries": "; ".join(run) or "(none)",
                "max_queries": self.s.max_queries,
            }
            res = await self._ask("revise_queries", P.REVISE_QUERIES, **inp)
            queries = [
                q
                for q in (_str_list((res["value"] or {}).get("queries")) or [])
                if q.lower() not in seen
            ]
            source = "llm"
        if not queries:
            source = "templates over the gaps and diagnoses"
            diag = st.get("diagnoses", [])
            errors = st.get("search_errors", [])
            topics = [t for g in refl["gaps"] if (t := _gap_topic(g, errors))]
            cands = [
                t.format(gap=g, diagnosis=diag[0] if diag else st["question"])
                for g in topics[:2]
                for t in P.FALLBACK_REVISION_TEMPLATES
            ] + [t.format(diagnosis=d) for d in diag[1:3] for t in P.FALLBACK_QUERY_TEMPLATES]
            queries = [_clean(q, 120) for q in dict.fromkeys(cands) if q.lower() not in seen]
        queries = queries[: self.s.max_queries]
        entry = {
            "step": "revise",
            "cycle": cycle,
            "input": {"confidence": refl["confidence"], "gaps": refl["gaps"], "queries_run": run},
            "llm": self._llm_trace(res) if res else None,
            "output": {"queries": queries, "source": source},
            "fallback": None
            if source in ("reflection", "llm")
            else "no readable queries from the model",
        }
        event = {
            "cycle": cycle,
            "previous_confidence": refl["confidence"],
            "gaps": refl["gaps"],
            "queries": queries,
            "source": source,
        }
        return {
            "cycle": cycle,
            "queries": queries,
            "trace": [entry],
            "events": [("agent_revision", event)],
        }

    async def _finalize(self, st: State) -> dict[str, Any]:
        draft, refl = st["draft"], st["reflection"]
        evidence = st.get("evidence", {})
        missing = list(dict.fromkeys([*refl["gaps"], *draft.get("gaps", [])]))
        if not self.tools.web_enabled:
            missing.append(P.WEB_SEARCH_OFF)
        text = "\n".join(
            [*draft["findings"], draft["diagnosis"], *draft["differential"], *draft["next_steps"]]
        )
        try:
            report = await self.tools.check_answer(text)
        except Exception as e:
            report = SafetyReport(
                warnings=(f"the answer's safety check failed: {type(e).__name__}",)
            )
        citations = [
            {k: v for k, v in evidence[lab].items() if k != "text"}
            | {"snippet": evidence[lab]["text"][:240]}
            for lab in draft["citations"]
            if lab in evidence
        ]
        final = {
            "findings": draft["findings"],
            "most_likely_diagnosis": draft["diagnosis"],
            "differential": draft["differential"],
            "severity": draft["severity"],
            "next_steps": draft["next_steps"],
            "citations": citations,
            "confidence": refl["confidence"],
            "missing": missing,
            "cycles": st.get("cycle", 0),
            "queries": st.get("queries_run", []),
            "web_search": {
                "enabled": self.tools.web_enabled,
                "note": None if self.tools.web_enabled else P.WEB_SEARCH_OFF,
            },
            "safety_report": report.to_dict(),
            "disclaimer": DISCLAIMER,
        }
        entry = {
            "step": "finalize",
            "cycle": st.get("cycle", 0),
            "input": {"citations": draft["citations"]},
            "output": {"confidence": final["confidence"], "risk_level": report.risk_level},
            "fallback": None,
        }
        final = honesty.settle(
            final,
            reasoning_ok=st.get("reasoning_ok", True),
            diagnoses_source=st.get("diagnoses_source", "none"),
            grounding=self._grounding(st, draft),
            trace=st.get("trace", []),
            parsed=st.get("parsed"),
        )
        entry["output"]["confidence"] = final["confidence"]
        return {"final": final, "trace": [entry], "events": [("agent_answer", final)]}

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


def _confidence(value: Any) -> float | None:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    if c != c:  # NaN
        return None
    if 1.0 < c <= 100.0:
        c /= 100.0
    return round(c, 3) if 0.0 <= c <= 1.0 else None
