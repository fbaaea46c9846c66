"""Scoring a call against the configured rules: phrases that must be said (by whom, how
early) and phrases that must not. Phrases are matched as whole words in order, after
folding case (and ``ё`` to its plain form); each rule's synonyms are its other phrases."""

from __future__ import annotations

import re
from typing import Any

import attrs

WORD = re.compile(r"\w+", re.UNICODE)


def words_of(text: str) -> list[str]:
    return WORD.findall(text.casefold().replace("\u0451", "\u0435"))  # yo: ye (Russian)


@attrs.define
class Rule:
    """``[[plugins.speech.rules]]``."""

    name: str
    phrases: list[str]
    kind: str = "must"  # must | must_not
    speaker: str = "agent"  # agent | customer | any
    within_s: float | None = None  # must be said this early (seconds into the call)
    weight: float = 1.0

    def problems(self, where: str) -> list[str]:
        out = []
        if self.kind not in ("must", "must_not"):
            out.append(f"{where}.kind: must or must_not, not {self.kind!r}")
        if self.speaker not in ("agent", "customer", "any"):
            out.append(f"{where}.speaker: agent, customer or any, not {self.speaker!r}")
        if not self.phrases or not all(words_of(p) for p in self.phrases):
            out.append(f"{where}.phrases: one or more phrases with words in them")
        if self.weight <= 0:
            out.append(f"{where}.weight: more than 0")
        return out


def _find(phrase: list[str], segment: dict[str, Any]) -> float | None:
    """When the phrase starts in the segment (seconds into the call), or None."""
    timed = segment.get("words") or []
    said = [(w, float(t[1])) for t in timed for w in words_of(str(t[0]))]
    if not said:
        said = [(w, float(segment["start"])) for w in words_of(str(segment["text"]))]
    n = len(phrase)
    for i in range(len(said) - n + 1):
        if [w for w, _ in said[i : i + n]] == phrase:
            return said[i][1]
    return None


def score(rules: list[Rule], segments: list[dict[str, Any]]) -> dict[str, Any]:
    """``score`` (0-100, weighted; None without rules) and each rule's outcome: ``passed``,
    and where the phrase was said (``at`` seconds, ``phrase``, ``said``: the passage)."""
    outcomes: list[dict[str, Any]] = []
    for rule in rules:
        hit: dict[str, Any] | None = None
        for segment in segments:
            if rule.speaker != "any" and segment["speaker"] not in (rule.speaker, "call"):
                continue
            for phrase in rule.phrases:
                at = _find(words_of(phrase), segment)
                if at is None or (rule.within_s is not None and at > rule.within_s):
                    continue
                if hit is None or at < hit["at"]:
                    hit = {"at": at, "phrase": phrase, "said": segment["text"]}
        passed: bool = (hit is not None) if rule.kind == "must" else (hit is None)
        outcomes.append(
            {"rule": rule.name, "kind": rule.kind, "weight": rule.weight, "passed": passed}
            | (hit or {})
        )
    total = sum(r.weight for r in rules)
    got = sum(o["weight"] for o in outcomes if o["passed"])
    return {"score": round(100 * got / total, 1) if total else None, "rules": outcomes}
