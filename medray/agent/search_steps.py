"""The graph's retrieval steps: candidate diagnoses, search queries, the search itself and
the revision of queries after a low-confidence reflection."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medray.agent import prompts as P
from medray.agent.state import State
from medray.agent.steps import StepBase
from medray.agent.text import clean, gap_topic, item_text, str_list
from medray.safety import strip_injection


class SearchSteps(StepBase):
    """``extract_diagnoses``, ``generate_queries``, ``search`` and ``revise``."""

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
            "reasoning": clean(reasoning, 800),
            "summary": st["summary"],
        }
        res = await self._ask("extract_diagnoses", P.EXTRACT_DIAGNOSES, **inp)
        found = str_list((res["value"] or {}).get("diagnoses"), 5)
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
            line = clean(text.splitlines()[0] if text.strip() else "", 80)
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
        queries = str_list((res["value"] or {}).get("queries"), self.s.max_queries)
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
            out.append(clean(question, 120))
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
                text, patterns = strip_injection(item_text(h))
                if patterns:
                    injections.append({"label": label, "patterns": patterns})
                evidence[label] = {
                    "label": label,
                    "kind": {"K": "knowledge", "C": "case", "W": "web"}[kind],
                    "id": str(h.get("id")),
                    "title": clean(h.get("title") or ", ".join(h.get("labels") or []), 120),
                    "source": clean(h.get("source") or h.get("url") or "", 200),
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
                for q in (str_list((res["value"] or {}).get("queries")) or [])
                if q.lower() not in seen
            ]
            source = "llm"
        if not queries:
            source = "templates over the gaps and diagnoses"
            diag = st.get("diagnoses", [])
            errors = st.get("search_errors", [])
            topics = [t for g in refl["gaps"] if (t := gap_topic(g, errors))]
            cands = [
                t.format(gap=g, diagnosis=diag[0] if diag else st["question"])
                for g in topics[:2]
                for t in P.FALLBACK_REVISION_TEMPLATES
            ] + [t.format(diagnosis=d) for d in diag[1:3] for t in P.FALLBACK_QUERY_TEMPLATES]
            queries = [clean(q, 120) for q in dict.fromkeys(cands) if q.lower() not in seen]
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
