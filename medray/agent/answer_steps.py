"""The graph's answer steps: the draft answer, the reflection on it and the final answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medray import DISCLAIMER
from medray.agent import honesty
from medray.agent import prompts as P
from medray.agent.state import State
from medray.agent.steps import StepBase
from medray.agent.text import (
    LABEL,
    SEVERITIES,
    clean,
    confidence_value,
    evidence_block,
    redact_instructions,
    str_list,
    words,
)
from medray.safety import SafetyReport

NO_REVISION = (
    "no revision: the image's reasoning gave no candidate diagnosis, so no search can "
    "ground one (the answer names none)"
)


class AnswerSteps(StepBase):
    """``answer``, ``reflect`` and ``finalize``."""

    async def _answer(self, st: State) -> dict[str, Any]:
        cycle = st.get("cycle", 0)
        evidence = st.get("evidence", {})
        diagnoses = list(st.get("diagnoses", []))
        notes: list[str] = []
        if not diagnoses:  # retrieved titles are topics, not evidence about this image
            notes.append("no candidate diagnoses: none is named")
        inp = {
            "question": st["question"],
            "reasoning": clean(st.get("reasoning", ""), 600),
            "diagnoses": "; ".join(diagnoses) or "(none)",
            "evidence": evidence_block(evidence),
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
            out[k] = [redact_instructions(x) for x in (str_list(v.get(k)) or [])]
        d = v.get("diagnosis")
        out["diagnosis"] = redact_instructions(clean(d)) if isinstance(d, str) and clean(d) else ""
        sev = str(v.get("severity", "")).strip().lower()
        out["severity"] = sev if sev in SEVERITIES else ""
        cited: list[str] = []
        raw_cites = v.get("citations") if isinstance(v.get("citations"), list) else []
        text = " ".join([*out["findings"], out["diagnosis"], *map(str, raw_cites)])
        cited = list(dict.fromkeys(m.upper() for m in LABEL.findall(text)))
        out["citations"] = [c for c in cited if c in evidence]
        dropped = [c for c in cited if c not in evidence]
        return out, dropped

    @staticmethod
    def _fallback_answer(st: State, diagnoses: Sequence[str], evidence: Mapping[str, Any]):
        parsed = st.get("parsed") or {}
        findings = [
            clean(x) for x in [parsed.get("caption", ""), *parsed.get("reasoning", [])] if clean(x)
        ]
        dwords = words(" ".join(diagnoses))
        relevant = [
            lab for lab, e in evidence.items() if dwords & words(e["title"] + " " + e["text"])
        ]
        cites = relevant or list(evidence)[:4]
        gaps: list[str] = []
        if not any(e["kind"] == "knowledge" for e in evidence.values()):
            gaps.append(f"knowledge base: {P.NO_EVIDENCE}")
        for err in dict.fromkeys(st.get("search_errors", [])):
            gaps.append(err)
        for d in diagnoses:
            if not any(words(d) & words(e["title"] + " " + e["text"]) for e in evidence.values()):
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
            any(words(d) & words(e["title"] + " " + e["text"]) for e in evidence.values())
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
            "draft": clean(
                {k: draft[k] for k in ("findings", "diagnosis", "differential", "citations")}, 800
            ),
            "labels": ", ".join(st.get("evidence", {})) or "(none)",
            "queries": "; ".join(st.get("queries_run", [])) or "(none)",
        }
        res = await self._ask("reflect", P.REFLECT, **inp)
        v = res["value"] or {}
        grounding = self._grounding(st, draft)
        conf = confidence_value(v.get("confidence"))
        notes = []
        if conf is None:
            conf = grounding
            notes.append("the model's confidence was not readable: grounding score used")
        elif not any(e["kind"] == "knowledge" for e in st.get("evidence", {}).values()):
            conf = min(conf, grounding)
            notes.append("nothing was retrieved from the knowledge base: confidence capped")
        gaps = str_list(v.get("gaps")) or []
        if not gaps:
            gaps = list(draft.get("gaps", []))
            notes.append("the model named no readable gaps: the draft's gaps are used")
        queries = str_list(v.get("queries"), self.s.max_queries) or []
        # Without a candidate diagnosis from the image's reasoning the final answer names
        # none and its confidence is 0 (honesty.settle): more search cannot change that.
        candidate = honesty.has_candidate(
            st.get("reasoning_ok", True), st.get("diagnoses_source", "none")
        )
        low = conf < self.s.confidence_threshold
        revise = candidate and low and cycle < self.s.max_cycles
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
                if not low
                else NO_REVISION
                if not candidate
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
