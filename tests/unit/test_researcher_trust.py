"""Trust scoring (allow-list + LLM evaluation), and the ids and promotion rule of the researcher's model."""
import pytest

from services.modules.researcher import model as M
from services.modules.researcher.trust import DEFAULT_TRUSTED, TrustPolicy


def ev(score, cites=False, reasons=("r",)):
    return {"score": score, "scholarly_tone": score >= 50, "cites_primary": cites, "reasons": list(reasons)}


def test_listed_domain_averages_list_and_llm_and_covers_subdomains():
    p = TrustPolicy({"oeis.org": 95})
    v = p.score("oeis.org", [ev(75)])
    assert v["trust_score"] == 85 and v["trust_tier"] == 1 and v["trusted"] and v["listed_score"] == 95
    assert p.score("www2.oeis.org", [ev(75)])["listed_score"] == 95
    assert p.score("notoeis.org", [ev(75)])["listed_score"] is None   # a suffix is not a parent domain
    # even a listed domain is ignored when the page itself is judged worthless
    assert not p.score("oeis.org", [ev(0)])["trusted"]


def test_unlisted_domain_uses_a_base_with_primary_citations_and_academic_bonus():
    p = TrustPolicy({})
    assert p.score("blog.example.com", [ev(40)])["trust_score"] == 45          # (50 + 40) / 2: ignored
    assert not p.score("blog.example.com", [ev(40)])["trusted"]
    assert p.score("blog.example.com", [ev(60, cites=True)])["trust_score"] == 62   # (65 + 60) / 2 = 62.5
    assert p.score("math.mit.edu", [ev(60, cites=True)])["trust_score"] == 68       # (75 + 60) / 2 = 67.5
    assert p.score("math.cam.ac.uk", [ev(50)])["trust_score"] == 55


def test_threshold_and_tiers():
    p = TrustPolicy({}, trust_min=50)
    assert p.score("x.org", [ev(50)])["trust_score"] == 50 and p.score("x.org", [ev(50)])["trust_tier"] == 3
    assert not p.score("x.org", [ev(48)])["trusted"] and p.score("x.org", [ev(48)])["trust_tier"] == 0
    strict = TrustPolicy({}, trust_min=70)
    assert not strict.score("x.org", [ev(80)])["trusted"]   # 65 < 70
    assert [M.trust_tier(s) for s in (None, 10, 50, 70, 85, 100)] == [0, 0, 3, 2, 1, 1]


def test_several_evaluations_average_and_pool_reasons():
    v = TrustPolicy({"a.org": 80}).score("a.org", [ev(60, reasons=["x"]), ev(100, reasons=["y", "x"])])
    assert v["llm_score"] == 80 and v["trust_score"] == 80
    assert "x" in v["trust_reasons"] and "y" in v["trust_reasons"]


def test_deny_list_and_ports():
    p = TrustPolicy({"127.0.0.1": 90}, excluded=["spam.example"])
    assert p.excluded_domain("cdn.spam.example") and not p.excluded_domain("example")
    assert p.score("spam.example", [])["trust_score"] == 0
    assert p.listed_score("127.0.0.1:8123") == 90          # a host entry covers every port
    assert TrustPolicy({"127.0.0.1:9": 70}).listed_score("127.0.0.1:8123") is None
    with pytest.raises(ValueError):
        p.score("a.org", [])
    assert TrustPolicy().trusted == {k: float(v) for k, v in DEFAULT_TRUSTED.items()}


def test_canonical_urls_and_ids():
    assert M.canonical_url("HTTP://Example.COM:80/a?b=1#frag") == "http://example.com/a?b=1"
    assert M.canonical_url("https://example.com") == "https://example.com/"
    assert M.canonical_url("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080/x"
    assert M.source_id("http://example.com/a#x") == M.source_id("HTTP://EXAMPLE.com/a")
    assert M.domain_of("https://www.oeis.org/A1") == "oeis.org"
    for bad in ("ftp://x/y", "example.com/a", "", "http:///nohost"):
        with pytest.raises(ValueError):
            M.canonical_url(bad)
    assert M.question_id("Where is 7?") == M.question_id("  where IS 7 ") and len(M.question_id("q")) == 12
    assert M.finding_id("s1", "A claim.") == M.finding_id("s1", "a claim") != M.finding_id("s2", "a claim")
    assert M.crossref_key("number", 168.0) == "crossrefs/number/168"
    assert M.crossref_key("concept", "Projective plane of order_2") == "crossrefs/concept/projective-plane-of-order-2"


def test_promotion_defaults_and_overrides():
    f = {"id": "abc", "summary": "GL(3,2) has 168 elements.", "type": "supporting", "confidence": 0.83,
         "concepts": ["GL(3,2)", "automorphism group"], "numbers": [168], "url": "http://x/"}
    p = M.promotion(f, "user", 5.0)
    assert p["type"] == "conjecture" and p["text"] == f["summary"] and p["priority"] == 8
    assert p["source"] == "researcher:finding:abc" and p["by"] == "user" and "automorphism-group" in p["tags"]
    q = M.promotion(dict(f, type="challenging"), "auto", 5.0, priority=42,
                    question={"question": "Why 168?"})
    assert q["type"] == "question" and q["text"] == "Why 168?" and q["priority"] == 10
    assert M.promotion(f, "user", 0, kind="question")["text"].startswith("What explains this finding")
    with pytest.raises(ValueError):
        M.promotion(f, "user", 0, kind="axiom")
