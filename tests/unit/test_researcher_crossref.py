"""Recurring numbers/concepts (what questions are about) and cross-references between findings."""
from services.modules.researcher import crossref as X


def finding(fid, domain, numbers=(), concepts=(), status="kept"):
    return {"id": fid, "domain": domain, "numbers": list(numbers), "concepts": list(concepts), "status": status}


def test_numbers_in_skips_years_ones_and_parts_of_words():
    text = "The 7 points, 168 symmetries (1888: Klein), PG(2,2), x^2, item-1, 3.5 and 42."
    assert X.numbers_in(text) == [7, 168, 2, 42]


def test_recurring_prefers_what_appears_in_several_items():
    items = [{"text": "The Fano plane has 7 points and 168 symmetries.", "tags": ["fano_plane", "symmetry"]},
             {"text": "168 = |GL(3,2)|, and 7 lines.", "tags": ["Symmetry"]},
             {"text": "The Heawood graph has 14 vertices.", "title": "Heawood graph", "tags": "graph"}]
    rec = X.recurring(items)
    assert rec["numbers"] == [(7, 2), (168, 2)]
    assert rec["concepts"] == [("symmetry", 2)]
    # nothing recurs yet: the most frequent still give the first batch a subject
    single = X.recurring(items[2:])
    assert single["numbers"] == [(14, 1)] and {c for c, _ in single["concepts"]} == {"graph", "Heawood graph"}


def test_a_number_in_two_domains_becomes_an_active_crossref():
    a = finding("f1", "oeis.org", [168], ["GL(3,2)"])
    b = finding("f2", "oeis.org", [168])
    c = finding("f3", "music.example", [168, 7])
    index = X.merge({}, [a, b], now=1.0)
    assert index["crossrefs/number/168"]["domains"] == ["oeis.org"]
    assert not index["crossrefs/number/168"]["active"]        # one domain: a mention, not a cross-reference
    assert not X.is_crossreferenced(a, index)
    changed = X.merge(index, [c], now=2.0)
    rec = changed["crossrefs/number/168"]
    assert rec["active"] and rec["domains"] == ["music.example", "oeis.org"] and rec["strength"] == 0.5
    assert rec["findings"] == ["f1", "f2", "f3"]
    full = {**index, **changed}
    assert X.is_crossreferenced(a, full) and not X.is_crossreferenced(finding("f9", "z", [3]), full)
    assert set(X.keys_for([c])) == {"crossrefs/number/168", "crossrefs/number/7"}


def test_merge_is_idempotent_and_ignores_low_confidence():
    a = finding("f1", "a.org", [7], ["Fano plane"])
    index = X.merge({}, [a], now=1.0)
    assert X.merge(index, [a], now=2.0) == {}                 # a replay changes nothing
    low = finding("f2", "b.org", [7], status="low_confidence")
    assert X.merge(index, [low], now=3.0) == {}
    assert index["crossrefs/concept/fano-plane"]["value"] == "Fano plane"


def test_concepts_are_matched_by_slug():
    a = finding("f1", "a.org", concepts=["Steiner triple system"])
    b = finding("f2", "b.org", concepts=["steiner_triple_system"])
    index = X.merge({}, [a, b], now=1.0)
    assert list(index) == ["crossrefs/concept/steiner-triple-system"]
    assert index["crossrefs/concept/steiner-triple-system"]["active"]
