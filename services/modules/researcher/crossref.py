"""Numbers and concepts that recur: what questions are asked about, and cross-references between findings.

Two pure jobs:

* :func:`recurring` looks at what the explorer and the documenter wrote (insights with tags, sections
  with titles) and returns the numbers and concepts that appear in more than one of them — the
  subjects of research questions (docs/research.md § Researcher).
* :func:`merge` folds new findings into the cross-reference index (``crossrefs/number/<n>``,
  ``crossrefs/concept/<slug>``): one record per number or concept listing the findings and the source
  domains it was found in. A record becomes an *active* cross-reference once it spans two or more
  domains (a number that only one site mentions is a mention, not a cross-reference).
"""
from __future__ import annotations

import re
from collections import Counter

from services.modules.researcher.model import concept_slug, crossref_key, number_text

_NUMBER = re.compile(r"(?<![\w.^/])(\d{1,6})(?![\w.]\d|\d)")


def numbers_in(text: str) -> list[int]:
    """Integers worth researching in a text: 2..999999, excluding what looks like a year (1800-2100)."""
    out = []
    for m in _NUMBER.finditer(text or ""):
        n = int(m.group(1))
        if n < 2 or (len(m.group(1)) == 4 and 1800 <= n <= 2100):
            continue
        if n not in out:
            out.append(n)
    return out


def concepts_of(item: dict) -> list[str]:
    """Concepts of an observed item: its tags (explorer) or title and ``establishes`` (documenter)."""
    raw = []
    for field in ("tags", "establishes", "concepts"):
        value = item.get(field)
        if isinstance(value, str):
            value = re.split(r"[,;]", value)
        if isinstance(value, list):
            raw += [str(v) for v in value if isinstance(v, (str, int))]
    title = item.get("title")
    if isinstance(title, str) and title.strip():
        raw.append(title)
    seen, out = set(), []
    for c in raw:
        slug = concept_slug(c)
        if slug and slug not in seen:
            seen.add(slug)
            out.append(c.strip().replace("_", " "))
    return out


def recurring(items: list[dict], limit: int = 10) -> dict:
    """``{"numbers": [(n, count)], "concepts": [(concept, count)]}``: what appears in at least two items,
    most frequent first; when nothing recurs yet, the most frequent (so a first batch still has a subject)."""
    num_count: Counter = Counter()
    con_count: Counter = Counter()
    names: dict[str, str] = {}
    for item in items:
        text = " ".join(str(item.get(f) or "") for f in ("text", "title"))
        num_count.update(set(numbers_in(text)))
        slugs = set()
        for c in concepts_of(item):
            slug = concept_slug(c)
            names.setdefault(slug, c)
            slugs.add(slug)
        con_count.update(slugs)

    def top(counter: Counter, name=lambda x: x):
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        rec = [(name(k), c) for k, c in ranked if c >= 2]
        return (rec or [(name(k), c) for k, c in ranked])[:limit]
    return {"numbers": top(num_count), "concepts": top(con_count, lambda s: names[s])}


# --- cross-references between findings -------------------------------------------------------------------

def refs_of(finding: dict) -> list[tuple[str, object]]:
    """(kind, value) pairs a finding contributes to the index."""
    out = [("number", n) for n in finding.get("numbers") or []]
    out += [("concept", c) for c in finding.get("concepts") or [] if concept_slug(str(c))]
    return out


def merge(existing: dict[str, dict | None], findings: list[dict], now: float) -> dict[str, dict]:
    """Fold ``findings`` (kept ones only) into the index; ``existing`` maps crossref keys to their current
    record (None when absent) and must hold every key of :func:`keys_for`. Returns the changed records.

    Idempotent: a finding already listed in a record changes nothing (a replayed merge is a no-op).
    """
    changed: dict[str, dict] = {}
    for f in findings:
        if f.get("status", "kept") != "kept":
            continue
        for kind, value in refs_of(f):
            key = crossref_key(kind, value)
            rec = changed.get(key) or existing.get(key)
            if rec is None:
                rec = {"kind": kind, "value": number_text(value) if kind == "number" else str(value),
                       "domains": [], "findings": []}
            if f["id"] in rec["findings"] and f["domain"] in rec["domains"]:
                continue
            rec = dict(rec, findings=sorted(set(rec["findings"]) | {f["id"]}),
                       domains=sorted(set(rec["domains"]) | {f["domain"]}))
            n = len(rec["domains"])
            rec.update(active=n >= 2, strength=round(1 - 1 / n, 3), updated=now)
            changed[key] = rec
    return changed


def keys_for(findings: list[dict]) -> list[str]:
    return sorted({crossref_key(k, v) for f in findings for k, v in refs_of(f)})


def is_crossreferenced(finding: dict, index: dict[str, dict | None]) -> bool:
    """Whether any number or concept of ``finding`` is an active cross-reference in ``index``."""
    return any((index.get(crossref_key(k, v)) or {}).get("active") for k, v in refs_of(finding))
