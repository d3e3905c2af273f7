"""Trust of a source: an allow-list of trusted domains plus the LLM's evaluation (0-100 with reasons).

The rule (the original's, made explicit):

* a domain on the deny list (``excluded_domains``) scores 0 and is never fetched nor evaluated;
* a domain on the allow-list (``trusted_domains``, domain -> listed score; a listed domain also covers
  its subdomains) scores the mean of its listed score and the LLM's score;
* any other domain scores the mean of a base score and the LLM's score, where the base is 50, +15 when
  the LLM says the page cites primary sources, +10 for an academic domain (``.edu``, ``.ac.<cc>``,
  arxiv.org);
* with several evaluations (``evaluations`` > 1) the LLM's score is their mean and the reasons are
  pooled.

A source scoring below ``trust_min`` (50) is ignored: no findings are extracted from it.
"""
from __future__ import annotations

import re

from services.modules.researcher.model import trust_tier

# mathematical reference works; users extend or override this list in [modules.researcher]
DEFAULT_TRUSTED = {
    "oeis.org": 95, "arxiv.org": 90, "ams.org": 90, "encyclopediaofmath.org": 90, "mathworld.wolfram.com": 85,
    "ncatlab.org": 85, "maa.org": 85, "mathoverflow.net": 80, "en.wikipedia.org": 75, "planetmath.org": 70,
    "math.stackexchange.com": 70, "plato.stanford.edu": 90, "jstor.org": 85, "gutenberg.org": 75,
}
ACADEMIC = re.compile(r"(\.edu|\.ac\.[a-z]{2}|(^|\.)arxiv\.org)$")


def _host(domain: str) -> str:
    """The host part of ``host[:port]`` (an allow-list entry may name a port or not)."""
    if domain.startswith("["):
        return domain.split("]")[0] + "]"
    return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain


def _match(domain: str, table) -> str | None:
    """The entry of ``table`` that covers ``domain`` (exact host:port, host, or a parent domain)."""
    domain = domain.lower()
    host = _host(domain)
    for cand in (domain, host):
        if cand in table:
            return cand
    parts = host.split(".")
    for i in range(1, len(parts) - 1):
        parent = ".".join(parts[i:])
        if parent in table:
            return parent
    return None


class TrustPolicy:
    def __init__(self, trusted: dict | None = None, excluded=(), trust_min: float = 50.0):
        table = trusted if trusted is not None else DEFAULT_TRUSTED
        self.trusted = {str(k).lower(): float(v) for k, v in table.items()}
        self.excluded = {str(d).lower() for d in excluded}
        self.trust_min = float(trust_min)

    def excluded_domain(self, domain: str) -> bool:
        return _match(domain, self.excluded) is not None

    def listed_score(self, domain: str) -> float | None:
        key = _match(domain, self.trusted)
        return None if key is None else self.trusted[key]

    def base_score(self, domain: str, cites_primary: bool | None) -> float:
        return 50.0 + (15.0 if cites_primary else 0.0) + (10.0 if ACADEMIC.search(_host(domain.lower())) else 0.0)

    def score(self, domain: str, evaluations: list[dict]) -> dict:
        """``{"trust_score", "trust_tier", "trusted", "listed_score", "llm_score", "trust_reasons"}``."""
        if self.excluded_domain(domain):
            return {"trust_score": 0, "trust_tier": 0, "trusted": False, "listed_score": None, "llm_score": None,
                    "trust_reasons": [f"{domain} is on the deny list"]}
        if not evaluations:
            raise ValueError("a trust score needs at least one evaluation")
        llm = sum(e["score"] for e in evaluations) / len(evaluations)
        cites = sum(1 for e in evaluations if e.get("cites_primary")) * 2 > len(evaluations)
        listed = self.listed_score(domain)
        prior = listed if listed is not None else self.base_score(domain, cites)
        score = round(min(100.0, max(0.0, (prior + llm) / 2)))
        reasons = [f"allow-list: {domain} {listed:g}" if listed is not None
                   else f"not on the allow-list: base {prior:g}", f"LLM evaluation {llm:g}"]
        for e in evaluations:
            reasons += [r for r in e.get("reasons") or [] if r not in reasons]
        trusted = score >= self.trust_min
        return {"trust_score": score, "trust_tier": trust_tier(score) if trusted else 0, "trusted": trusted,
                "listed_score": listed, "llm_score": round(llm, 1), "trust_reasons": reasons[:12]}
