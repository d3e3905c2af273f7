"""ResearcherService effects on the modules' rig (tests/unit/modhelp.py: the in-process broker core), driven
directly (no scheduler, no workers): tasks are leased and completed by the test with the answers it wants,
then applied by the module."""
from __future__ import annotations

import json

import pytest

from services.modules.researcher import model as M
from services.modules.researcher.fetch import FetchError, Page
from services.modules.researcher.service import EVALUATE_SOURCE, EXTRACT_FINDINGS, GENERATE_QUESTIONS
from shared import txn
from shared.config import load_config

URL_A = "http://a.example/fano"
URL_B = "http://b.example/klein"


def get(svc, key):
    return svc.store.get(key)[1]


def tasks(svc, kind):
    return [t for t in svc.client.list(module="researcher", kind=kind, limit=1000, payloads=True)["tasks"]]


def settle(svc, task, text: str) -> dict:
    lease = svc.client.lease("w1", "acct", modes=["standard"], task_id=task["id"])
    svc.client.complete(task["id"], lease["epoch"], {"text": text})
    return svc.client.get(task["id"], history=False)


def page(url, body: bytes) -> Page:
    return Page(url, url, 200, "text/html", "utf-8", body, 0.0, "miss")


def fetched(svc, url, body=b"<title>T</title><p>The Fano plane has 168 symmetries.</p>") -> str:
    sid, ops = M.add_source_ops(url, "user", 1.0)
    svc.client.txn("researcher", ops)
    assert svc.apply_fetch(sid, page(M.canonical_url(url), body))
    return sid


FINDINGS = {"findings": [
    {"summary": "GL(3,2) acts on the Fano plane.", "quote": "acts", "type": "supporting", "confidence": 0.9,
     "concepts": ["GL(3,2)"], "numbers": [168]},
    {"summary": "A weak hint.", "quote": "", "type": "contextual", "confidence": 0.3, "concepts": [], "numbers": [7]}],
    "numbers": [{"value": 168, "context": "order", "significance": "high", "mention_type": "structural"}]}


# another site, another claim about the same number (a cross-reference, not a duplicate)
FINDINGS_B = {"findings": [
    {"summary": "The Klein quartic has 168 automorphisms.", "quote": "168", "type": "supporting", "confidence": 0.9,
     "concepts": ["Klein quartic"], "numbers": [168]}], "numbers": []}


def run_source(svc, url, score=80, findings=FINDINGS) -> str:
    sid = fetched(svc, url)
    ev = next(t for t in tasks(svc, EVALUATE_SOURCE) if t["payload"]["source_id"] == sid)
    assert svc.apply(settle(svc, ev, json.dumps({"score": score, "reasons": ["ok"]})))
    if get(svc, M.k_source(sid))["status"] == "trusted":
        ex = next(t for t in tasks(svc, EXTRACT_FINDINGS) if t["payload"]["source_id"] == sid)
        assert svc.apply(settle(svc, ex, "```json\n" + json.dumps(findings) + "\n```"))
    return sid


def test_fetch_evaluate_extract_crossref(make_researcher):
    svc = make_researcher(trusted_domains={"a.example": 90, "b.example": 90})
    sid = fetched(svc, URL_A)
    src = get(svc, M.k_source(sid))
    assert src["status"] == "fetched" and src["title"] == "T" and get(svc, M.k_fetch(sid)) is None
    assert "168 symmetries" in get(svc, M.k_content(sid))["text"]
    [ev] = tasks(svc, EVALUATE_SOURCE)
    assert ev["key"] == f"researcher:evaluate:{sid}" and ev["payload"]["url"] == M.canonical_url(URL_A)
    assert "168 symmetries" in ev["payload"]["prompt"]
    assert not svc.apply_fetch(sid, page(URL_A, b"<p>again</p>"))   # a second outcome changes nothing

    done = settle(svc, ev, json.dumps({"score": 70, "reasons": ["cites papers"]}))
    assert svc.apply(done) and not svc.apply(svc.client.get(ev["id"]))   # exactly once
    src = get(svc, M.k_source(sid))
    assert src["status"] == "trusted" and src["trust_score"] == 80 and src["trust_tier"] == 2
    [ex] = tasks(svc, EXTRACT_FINDINGS)
    assert ex["key"] == f"researcher:extract:{sid}"

    assert svc.apply(settle(svc, ex, json.dumps(FINDINGS)))
    src = get(svc, M.k_source(sid))
    assert src["status"] == "extracted" and src["findings"] == 2 and src["numbers"][0]["value"] == 168
    found = {v["summary"]: v for _, _, v in svc.store.scan("findings/")}
    assert found["A weak hint."]["status"] == "low_confidence"
    strong = found["GL(3,2) acts on the Fano plane."]
    assert strong["id"] == M.finding_id(sid, strong["summary"]) and strong["domain"] == "a.example"
    assert not get(svc, "crossrefs/number/168")["active"]

    sid_b = run_source(svc, URL_B, findings=FINDINGS_B)
    ref = get(svc, "crossrefs/number/168")
    assert ref["active"] and ref["domains"] == ["a.example", "b.example"] and len(ref["findings"]) == 2
    assert get(svc, "crossrefs/number/7") is None            # only in low-confidence findings
    assert get(svc, M.k_source(sid_b))["status"] == "extracted"
    assert list(svc.store.scan("promotions/")) == []          # auto-promotion is off by default


def test_untrusted_source_is_ignored_and_never_extracted(make_researcher):
    svc = make_researcher(trusted_domains={})
    sid = run_source(svc, "http://blog.example/x", score=20)
    src = get(svc, M.k_source(sid))
    assert src["status"] == "ignored" and src["trust_score"] == 35 and src["trust_tier"] == 0
    assert tasks(svc, EXTRACT_FINDINGS) == []


def test_auto_promotion_of_crossreferenced_confident_findings(make_researcher):
    svc = make_researcher(trusted_domains={"a.example": 90, "b.example": 90}, auto_promote=True)
    run_source(svc, URL_A)
    assert list(svc.store.scan("promotions/")) == []     # no cross-reference yet
    run_source(svc, URL_B, findings=FINDINGS_B)
    promos = {v["finding_id"]: v for _, _, v in svc.store.scan("promotions/")}
    assert len(promos) == 2                               # the new finding and the earlier one it matches
    assert all(p["by"] == "auto" and p["type"] == "conjecture" and p["priority"] == 9 for p in promos.values())


def test_several_evaluations_are_averaged_and_an_unusable_one_is_recorded(make_researcher):
    svc = make_researcher(trusted_domains={}, evaluations=2)
    sid = fetched(svc, URL_A)
    evs = sorted(tasks(svc, EVALUATE_SOURCE), key=lambda t: t["key"])
    assert [t["key"] for t in evs] == [f"researcher:evaluate:{sid}", f"researcher:evaluate:{sid}:1"]
    assert svc.apply(settle(svc, evs[0], "I cannot evaluate this page."))
    assert get(svc, M.k_source(sid))["status"] == "fetched"        # waits for the second evaluation
    errors = [v for _, _, v in svc.store.scan("errors/")]
    assert len(errors) == 1 and "no JSON object" in errors[0]["error"]
    assert svc.apply(settle(svc, evs[1], json.dumps({"score": 90, "cites_primary": True, "reasons": []})))
    src = get(svc, M.k_source(sid))
    assert src["status"] == "trusted" and src["trust_score"] == 78   # (65 + 90) / 2, the unusable one left out


def test_unusable_extraction_marks_the_source(make_researcher):
    svc = make_researcher(trusted_domains={"a.example": 90})
    sid = fetched(svc, URL_A)
    [ev] = tasks(svc, EVALUATE_SOURCE)
    svc.apply(settle(svc, ev, json.dumps({"score": 90, "reasons": []})))
    [ex] = tasks(svc, EXTRACT_FINDINGS)
    assert svc.apply(settle(svc, ex, '{"findings": [{"summary": "cut off'))
    src = get(svc, M.k_source(sid))
    assert src["status"] == "extraction_failed" and "truncated" in src["error"]["message"]


def test_fetch_failures_retry_then_give_up(make_researcher):
    svc = make_researcher(fetch={"max_attempts": 2, "retry_backoff": 30.0})
    sid, ops = M.add_source_ops(URL_A, "user", 1.0)
    svc.client.txn("researcher", ops)
    assert svc.apply_fetch(sid, FetchError("timeout", "slow"))
    src, entry = get(svc, M.k_source(sid)), get(svc, M.k_fetch(sid))
    assert src["status"] == "new" and src["fetch_attempts"] == 1
    assert entry["not_before"] == src["next_fetch_at"] == svc.clock.world() + 30.0
    assert svc.apply_fetch(sid, FetchError("timeout", "slow again"))
    assert get(svc, M.k_source(sid))["status"] == "fetch_failed" and get(svc, M.k_fetch(sid)) is None
    sid2, ops = M.add_source_ops(URL_B, "user", 1.0)
    svc.client.txn("researcher", ops)
    svc.apply_fetch(sid2, FetchError("content_type", "image/png", permanent=True))
    assert get(svc, M.k_source(sid2))["error"]["reason"] == "content_type"
    assert get(svc, M.k_source(sid2))["status"] == "fetch_failed"


def test_excluded_domains_are_never_fetched(make_researcher):
    svc = make_researcher(excluded_domains=["a.example"], sources=[URL_A, "not a url"])
    svc.pool = None
    svc.add_configured_sources()
    sid = M.source_id(URL_A)
    assert get(svc, M.k_source(sid))["origin"] == "config"
    svc.schedule_fetches()
    assert get(svc, M.k_source(sid))["status"] == "excluded" and get(svc, M.k_fetch(sid)) is None


def insight(text, tags, status="pending"):
    return {"text": text, "tags": tags, "status": status}


def test_observe_questions_once_per_batch(make_researcher):
    svc = make_researcher(questions_batch=2)
    svc.client.txn("explorer", [
        txn.put("insights/i1", insight("The Fano plane has 7 points and 168 symmetries.", ["fano_plane"])),
        txn.put("insights/i2", insight("168 is the order of GL(3,2).", ["fano_plane"], "blessed")),
        txn.put("insights/i3", insight("Numerology about 7.", ["x"], "rejected")),
        txn.put("insights/i4", "not a map")])
    svc.client.txn("documenter",
                   [txn.put("sections/s1", {"title": "Klein quartic", "text": "It has 168 automorphisms."})])
    svc.observe()
    batch = get(svc, M.K_QUESTION_BATCH)
    assert batch["payload"]["observed"] == ["explorer/i1", "explorer/i2"]
    assert "168 (2x)" in batch["payload"]["prompt"]
    svc.observe()                                             # one batch at a time
    [t] = tasks(svc, GENERATE_QUESTIONS)
    answer = {"questions": [
        {"question": "Where else does 168 appear?", "type": "supporting", "numbers": [168], "priority": 8,
         "urls": ["https://oeis.org/A001349"]},
        {"question": "Is 7 forced?", "type": "challenging", "numbers": [7], "priority": 3},
        {"question": "", "type": "supporting"}]}
    assert svc.apply(settle(svc, t, json.dumps(answer)))
    qs = {v["question"]: v for _, _, v in svc.store.scan("questions/")}
    assert set(qs) == {"Where else does 168 appear?", "Is 7 forced?"}
    assert qs["Is 7 forced?"]["id"] == M.question_id("Is 7 forced?")
    assert get(svc, M.K_QUESTION_BATCH) is None and get(svc, "observed/explorer/i1")["task_id"] == t["id"]
    src = get(svc, M.k_source(M.source_id("https://oeis.org/A001349")))
    assert src["origin"] == f"question:{M.question_id('Where else does 168 appear?')}"
    assert [v["partial"] for _, _, v in svc.store.scan("errors/")] == [True]   # the empty question, visibly

    svc.observe()                                             # the next batch: the section
    batch = get(svc, M.K_QUESTION_BATCH)
    assert batch["payload"]["observed"] == ["documenter/s1/1"] and "Where else does 168" in batch["payload"]["prompt"]
    [_, t2] = sorted(tasks(svc, GENERATE_QUESTIONS), key=lambda x: x["id"])
    assert svc.apply(settle(svc, t2, "Sorry, no."))           # unusable: recorded, batch still observed
    assert get(svc, M.K_QUESTION_BATCH) is None and get(svc, "observed/documenter/s1/1") is not None
    svc.observe()
    assert get(svc, M.K_QUESTION_BATCH) is None               # nothing new to observe


def test_settings_defaults_sizes_and_unknown_keys(tmp_path):
    from services.modules.researcher.settings import load_settings
    from shared.config import ConfigError
    cfg = tmp_path / "f.toml"
    cfg.write_text("[paths]\n")
    s = load_settings(load_config(cfg))
    assert not s.auto_promote and s.trust_min == 50 and s.fetch.max_bytes == 2 * 1024 * 1024
    cfg.write_text('[modules.researcher]\nauto_promote = true\n[modules.researcher.fetch]\nmax_bytes = "64KiB"\n')
    s = load_settings(load_config(cfg))
    assert s.auto_promote and s.fetch.max_bytes == 65536
    for bad in ("auto_promte = true", "auto_promote = 1", "evaluations = 0", 'sources = "http://x/"',
                'trusted_domains = { "a.org" = 120 }'):
        cfg.write_text(f"[modules.researcher]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_settings(load_config(cfg))


# --- dedup (shared services.modules.dedup, lexical) -----------------------------------------------------------

Q168 = "What is the significance of 168 in the automorphism group of the Fano plane?"


def question(text, **kw):
    return {"question": text, "type": "supporting", "numbers": [168], "priority": 5, **kw}


def answer_batch(svc, questions) -> dict:
    svc.observe()
    t = next(t for t in tasks(svc, GENERATE_QUESTIONS) if not t["consumed"])
    assert svc.apply(settle(svc, t, json.dumps({"questions": questions})))
    return t


def test_a_reworded_question_is_counted_on_the_stored_one_not_stored_again(make_researcher):
    svc = make_researcher()
    svc.client.txn("explorer", [txn.put("insights/i1", insight("The Fano plane has 168 symmetries.", ["fano"]))])
    answer_batch(svc, [question(Q168)])
    svc.client.txn("explorer", [txn.put("insights/i2", insight("GL(3,2) has order 168.", ["fano"]))])
    reworded = "What is the significance of the number 168 in the Fano plane automorphism group?"
    other = "What is the significance of 336 in the automorphism group of the Fano plane?"
    t2 = answer_batch(svc, [question(reworded, urls=["https://oeis.org/A001349"]), question(other, numbers=[336]),
                            question(other.upper(), numbers=[336])])
    qs = {v["id"]: v for _, _, v in svc.store.scan("questions/")}
    q1, q2 = M.question_id(Q168), M.question_id(other)
    assert set(qs) == {q1, q2}                                       # the rewording is not stored again
    assert qs[q1]["question"] == Q168 and qs[q1]["duplicate_count"] == 1
    [dup] = qs[q1]["duplicates"]
    assert dup["question"] == reworded and dup["batch"] == t2["key"] and 0.8 <= dup["score"] < 1
    assert qs[q2]["duplicate_count"] == 1 and qs[q2]["duplicates"][0]["score"] == 1.0   # repeated in one answer
    src = get(svc, M.k_source(M.source_id("https://oeis.org/A001349")))
    assert src["origin"] == f"question:{q1}"                         # its URLs still count, for the stored one


def test_a_finding_found_again_is_counted_on_the_stored_one_and_still_cross_referenced(make_researcher):
    svc = make_researcher(trusted_domains={"a.example": 90, "b.example": 90})
    sid_a = run_source(svc, URL_A)
    again = {"findings": [
        {"summary": "The group GL(3,2) acts on the Fano plane.", "quote": "acts", "type": "supporting",
         "confidence": 0.8, "concepts": ["GL(3,2)"], "numbers": [168]},
        {"summary": "Seven lines of three points.", "quote": "", "type": "contextual", "confidence": 0.9,
         "concepts": ["lines"], "numbers": [7]},
        {"summary": "Seven lines of three points!", "quote": "", "type": "contextual", "confidence": 0.9,
         "concepts": ["lines"], "numbers": [7]}], "numbers": []}
    sid_b = run_source(svc, URL_B, findings=again)
    found = {v["summary"]: v for _, _, v in svc.store.scan("findings/")}
    assert set(found) == {"GL(3,2) acts on the Fano plane.", "A weak hint.", "Seven lines of three points."}
    strong = found["GL(3,2) acts on the Fano plane."]
    assert strong["source_id"] == sid_a and strong["duplicate_count"] == 1
    [dup] = strong["duplicates"]
    assert (dup["source_id"], dup["domain"], dup["summary"]) == (sid_b, "b.example", again["findings"][0]["summary"])
    assert found["Seven lines of three points."]["duplicate_count"] == 1          # repeated in one answer
    src_b = get(svc, M.k_source(sid_b))
    assert (src_b["findings"], src_b["duplicates"]) == (1, 2)
    ref = get(svc, "crossrefs/number/168")                 # the same claim on a second site: cross-referenced
    assert ref["active"] and ref["domains"] == ["a.example", "b.example"] and ref["findings"] == [strong["id"]]


# --- observation: most recent first, a revised section again -------------------------------------------------

def section(title, text, rev, updated, **kw):
    return {"id": title, "title": title, "text": text, "rev": rev, "created": 1.0, "updated": updated, **kw}


def observe_and_close(svc) -> list[str] | None:
    """Propose a batch, answer it (unusably: it still marks its items observed), return what it observed."""
    svc.observe()
    batch = get(svc, M.K_QUESTION_BATCH)
    if batch is None:
        return None
    t = next(t for t in tasks(svc, GENERATE_QUESTIONS) if t["key"] == batch["key"])
    assert svc.apply(settle(svc, t, "Sorry, no."))
    return batch["payload"]["observed"]


def test_observe_takes_the_most_recent_first_and_a_revised_section_again(make_researcher):
    svc = make_researcher(questions_batch=2)
    svc.client.txn("explorer", [
        txn.put("insights/i1", dict(insight("Old: 7 points.", ["a"]), created_at=100.0)),
        txn.put("insights/i2", dict(insight("Newest: 168 symmetries.", ["a"]), created_at=300.0)),
        txn.put("insights/i3", dict(insight("Middle: 21 flags.", ["a"]), created_at=200.0))])
    svc.client.txn("documenter", [txn.put("sections/s0001", section("s0001", "Klein quartic, 168.", 1, 250.0))])
    assert observe_and_close(svc) == ["explorer/i2", "documenter/s0001/1"]      # not i1, i2 (key order)
    assert observe_and_close(svc) == ["explorer/i3", "explorer/i1"]
    assert observe_and_close(svc) is None

    sec = svc.client.kv_get("documenter", "sections/s0001")["value"]
    svc.client.txn("documenter", [txn.put("sections/s0001", dict(sec, reviewed_at=400.0, status="stable"))])
    assert observe_and_close(svc) is None                  # reviewed, not revised: nothing new to observe
    svc.client.txn("documenter", [txn.put("sections/s0001", section("s0001", "Klein quartic, 168 = 2^3*3*7.",
                                                                      2, 500.0))])
    svc.observe()
    assert "revision 2" in get(svc, M.K_QUESTION_BATCH)["payload"]["prompt"]
    assert observe_and_close(svc) == ["documenter/s0001/2"]
    assert get(svc, "observed/documenter/s0001/2")["version"] == 2
    svc.client.txn("documenter", [txn.put("sections/s0001", section("s0001", "Klein quartic, 168.", 1, 600.0))])
    assert observe_and_close(svc) is None                  # a revert to an observed revision: once per revision


def test_a_section_observed_before_revisions_were_keyed_is_not_observed_twice(make_researcher):
    svc = make_researcher()
    svc.client.txn("documenter", [txn.put("sections/s0001", section("s0001", "Seen at rev 1.", 1, 50.0)),
                                  txn.put("sections/s0002", section("s0002", "Revised since.", 2, 150.0))])
    svc.client.txn("researcher", [txn.put("observed/documenter/s0001", {"version": 1, "at": 100.0}),
                                  txn.put("observed/documenter/s0002", {"version": 1, "at": 100.0})])
    assert observe_and_close(svc) == ["documenter/s0002/2"]


def test_page_text_becomes_working_data_once_its_source_is_decided(make_researcher):
    svc = make_researcher(trusted_domains={"a.example": 90})

    def expiry(sid):
        return svc.store.expiry(M.k_content(sid))
    waiting = fetched(svc, URL_B)
    assert get(svc, M.k_content(waiting)) and expiry(waiting) is None   # the evaluation prompts need it
    sid = run_source(svc, URL_A)
    assert get(svc, M.k_source(sid))["status"] == "extracted" and expiry(sid) is not None
    assert svc.store.expiry(M.k_source(sid)) is None and get(svc, M.k_source(sid))   # the record: kept
    ignored = run_source(svc, "https://c.example/page", score=5)
    assert get(svc, M.k_source(ignored))["status"] == "ignored" and expiry(ignored) is not None
    assert expiry(waiting) is None


def test_a_fetch_outcome_lost_to_endless_races_is_counted_and_logged(make_researcher, monkeypatch, caplog):
    """Another writer changes the source after every read (a real write through the core): the outcome
    cannot be recorded within the retries; that is logged and counted, not swallowed (issue 12)."""
    from services.modules.researcher import sources
    svc = make_researcher()
    sid, ops = M.add_source_ops(URL_A, "user", 1.0)
    svc.client.txn("researcher", ops)
    real = sources.fetch_outcome

    def raced(env, sid_, result):
        out = real(env, sid_, result)
        src = get(svc, M.k_source(sid_))
        svc.client.txn("researcher", [txn.put(M.k_source(sid_), dict(src, note="touched"))])
        return out
    monkeypatch.setattr(sources, "fetch_outcome", raced)
    with caplog.at_level("WARNING"):
        assert not svc.apply_fetch(sid, page(M.canonical_url(URL_A), b"<p>x</p>"))
    assert svc.tolerated["recording a fetch outcome"] == 1
    assert any("recording a fetch outcome failed" in r.getMessage() for r in caplog.records)
    assert get(svc, M.k_source(sid))["status"] == "new"   # nothing recorded: the next pass fetches again
