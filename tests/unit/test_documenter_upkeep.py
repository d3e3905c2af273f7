"""Author comments (revisions applied, comments resolved, never deleted) and section reviews."""
from services.modules.documenter import context as C
from services.modules.documenter import model as M
from services.modules.documenter import upkeep
from shared import txn
from tests.unit.dochelp import Run

REVISED = ("UNDERSTOOD: define flags\nRESOLUTION: added a definition\n"
           "REVISED_SECTION:\nA flag is a point on a line. There are 21.\n")


def with_sections(n=2, run=None):
    run = run or Run()
    for i in range(1, n + 1):
        doc = M.read_doc(run.store)
        ops, _ = M.commit(doc, {f"s{i:04d}": {"title": f"T{i}", "text": f"Text {i}.", "establishes": [f"c{i}"],
                                              "requires": []}}, {"kind": "test", "ref": i, "task": None}, "t", run.now)
        run.store.txn(ops)
        run.now += 10
    return run


def comment(run, sid, text, cid=None, quote=None):
    cid = cid or M.new_comment_id(run.now)
    run.store.txn([txn.put(M.comment_key(cid), {"id": cid, "section": sid, "text": text, "status": "open",
                                              "created": run.now, "attempts": 0, "failures": 0, "quote": quote},
                           if_version=0)])
    run.now += 1
    return cid


def comments_pending(run):
    return [s for s in run.pending() if s["kind"] == C.ADDRESS_COMMENT]


def get_comment(run, cid):
    return run.store.get(M.comment_key(cid))[1]


def test_a_revision_is_applied_as_a_new_version_and_the_comment_kept_resolved():
    run = with_sections()
    cid = comment(run, "s0001", "Please define a flag.")
    run.propose()
    [spec] = comments_pending(run)
    assert spec["key"] == f"documenter.address_comment/{cid}/1" and "Please define a flag." in spec["payload"]["prompt"]
    assert get_comment(run, cid)["status"] == "addressing"
    run.settle(spec, text=REVISED)
    c = get_comment(run, cid)
    assert (c["status"], c["changed"], c["version"], c["resolution"]) == ("resolved", True, 3, "added a definition")
    assert run.doc().sections["s0001"][1]["text"] == "A flag is a point on a line. There are 21."
    assert run.doc().sections["s0001"][1]["establishes"] == ["c1"]          # concepts kept
    assert run.store.get(M.version_key(3))[1]["cause"]["kind"] == "comment"
    run.propose()
    assert comments_pending(run) == []


def test_the_prompt_quotes_the_selected_passage():
    run = with_sections()
    comment(run, "s0001", "Why?", quote="Text 1.")
    comment(run, "s0002", "Longer, please.")
    run.propose()
    first, second = sorted(comments_pending(run), key=lambda s: s["payload"]["section_id"])
    assert 'THE PASSAGE THE COMMENT IS ABOUT:\n"Text 1."' in first["payload"]["prompt"]
    assert "THE PASSAGE THE COMMENT IS ABOUT:\nthe whole section" in second["payload"]["prompt"]


def test_unchanged_resolves_without_a_version():
    run = with_sections()
    cid = comment(run, "s0002", "Is this right?")
    run.propose()
    run.settle(comments_pending(run)[0],
               text="UNDERSTOOD: a check\nRESOLUTION: it is right\nREVISED_SECTION: UNCHANGED")
    assert get_comment(run, cid)["status"] == "resolved" and get_comment(run, cid)["changed"] is False
    assert run.doc().version == 2


def test_one_comment_per_section_at_a_time_oldest_first():
    run = with_sections()
    a = comment(run, "s0001", "first")
    b = comment(run, "s0001", "second")
    c = comment(run, "s0002", "other section")
    run.propose()
    assert {s["payload"]["comment_id"] for s in comments_pending(run)} == {a, c}
    run.settle([s for s in comments_pending(run) if s["payload"]["comment_id"] == a][0], text=REVISED)
    run.propose()
    spec = [s for s in comments_pending(run) if s["payload"]["comment_id"] == b][0]
    assert "A flag is a point on a line" in spec["payload"]["prompt"]    # b sees a's revision


def test_an_answer_about_an_older_text_is_not_applied_and_the_comment_is_addressed_again():
    run = with_sections()
    cid = comment(run, "s0001", "Shorter, please.")
    run.propose()
    [spec] = comments_pending(run)
    doc = M.read_doc(run.store)   # someone revises the section meanwhile
    ops, _ = M.commit(doc, {"s0001": {"title": "T1", "text": "Changed meanwhile.", "establishes": ["c1"],
                                      "requires": []}}, {"kind": "test", "ref": "x", "task": None}, "t", run.now)
    run.store.txn(ops)
    run.settle(spec, text=REVISED)
    assert get_comment(run, cid)["status"] == "open" and run.doc().sections["s0001"][1]["text"] == "Changed meanwhile."
    run.propose()
    assert [s["key"] for s in comments_pending(run)] == [f"documenter.address_comment/{cid}/2"]


def test_three_unusable_answers_wait_for_a_human_and_a_missing_section_too():
    run = with_sections()
    cid = comment(run, "s0001", "?")
    for n in range(1, 4):
        run.propose()
        [spec] = comments_pending(run)
        run.settle(spec, text="I am not sure what you mean.")
        assert get_comment(run, cid)["failures"] == n
    c = get_comment(run, cid)
    assert c["status"] == "needs_human" and "REVISED_SECTION" in c["last_error"]
    gone = comment(run, "s0099", "on a section that does not exist")
    run.propose()
    assert get_comment(run, gone)["status"] == "needs_human" and comments_pending(run) == []


# --- section reviews --------------------------------------------------------------------------------------

def reviews_pending(run):
    return [s for s in run.pending() if s["kind"] == C.REVIEW_SECTION]


def test_never_reviewed_first_then_stale_after_seven_days():
    run = with_sections(3)
    doc = M.read_doc(run.store)
    assert [s["id"] for s in upkeep.due_sections(doc, run.now)] == ["s0001", "s0002", "s0003"]
    for sid, at in (("s0001", run.now - 8 * 86400), ("s0002", run.now - 86400), ("s0003", None)):
        v, sec = run.store.get(M.section_key(sid))
        run.store.txn([txn.put(M.section_key(sid), {**sec, "reviewed_at": at}, if_version=v)])
    assert [s["id"] for s in upkeep.due_sections(M.read_doc(run.store), run.now)] == ["s0003", "s0001"]


def test_reviews_keep_to_their_share_while_there_is_other_work():
    assert upkeep.review_allowed({"plans": 0, "reviews": 0}, True)
    assert not upkeep.review_allowed({"plans": 2, "reviews": 1}, True)
    assert upkeep.review_allowed({"plans": 3, "reviews": 1}, True)
    assert upkeep.review_allowed({"plans": 0, "reviews": 9}, False)


def test_confirmed_marks_the_section_stable_and_reviewed():
    run = with_sections(1)
    run.propose()
    [spec] = reviews_pending(run)
    assert spec["payload"]["section_id"] == "s0001" and spec["key"] == "documenter.review_section/1"
    run.settle(spec, text="DECISION: CONFIRMED\nACCURACY: fine")
    sec = run.doc().sections["s0001"][1]
    assert (sec["status"], sec["reviewed_at"], sec["review_count"]) == ("stable", run.now, 1)
    assert run.doc().version == 1 and run.store.get(M.MIX)[1]["reviews"] == 1
    run.propose()
    assert reviews_pending(run) == []                  # reviewed: not due for seven days
    run.now += upkeep.STALE
    run.propose()
    assert [s["key"] for s in reviews_pending(run)] == ["documenter.review_section/2"]


def test_revise_applies_the_revised_section_as_a_new_version():
    run = with_sections(1)
    run.propose()
    run.settle(reviews_pending(run)[0],
               text="DECISION: REVISE\nREVISION_NOTES: sharper\nREVISED_SECTION:\nSharper text.")
    sec = run.doc().sections["s0001"][1]
    assert (sec["text"], sec["status"], sec["review_count"]) == ("Sharper text.", "provisional", 1)
    assert run.doc().version == 2 and run.store.get(M.version_key(2))[1]["cause"]["kind"] == "review"


def test_an_unusable_review_is_recorded_and_the_section_is_not_retried_at_once():
    run = with_sections(2)
    run.propose()
    run.settle(reviews_pending(run)[0], text="DECISION: REVISE\nREVISION_NOTES: too vague")
    assert run.errors and run.doc().sections["s0001"][1]["review_attempted_at"] == run.now
    assert run.store.get(M.REVIEW_STATE)[1]["last"]["error"].startswith("unusable answer")
    run.propose()
    assert [s["payload"]["section_id"] for s in reviews_pending(run)] == ["s0002"]


# --- the limits are settings ([modules.documenter]) -------------------------------------------------------

def test_the_comment_failure_limit_is_a_setting():
    from services.modules.documenter.settings import Settings
    run = with_sections(run=Run(settings=Settings(comment_max_failures=1)))
    cid = comment(run, "s0001", "?")
    run.propose()
    [spec] = comments_pending(run)
    run.settle(spec, text="I am not sure what you mean.")
    c = get_comment(run, cid)
    assert c["failures"] == 1 and c["status"] == "needs_human"     # the default (3) would reopen it
    run = with_sections(run=Run(settings=Settings(comment_max_failures=5)))
    cid = comment(run, "s0001", "?")
    for n in range(1, 5):
        run.propose()
        [spec] = comments_pending(run)
        run.settle(spec, text="I am not sure what you mean.")
        assert get_comment(run, cid)["status"] == "open" and get_comment(run, cid)["failures"] == n
    run.propose()
    run.settle(comments_pending(run)[0], text="still unsure")
    assert get_comment(run, cid)["status"] == "needs_human"


def test_section_staleness_is_a_setting():
    from services.modules.documenter.settings import Settings
    run = with_sections(1, Run(settings=Settings(section_stale_days=2)))
    run.propose()
    run.settle(reviews_pending(run)[0], text="DECISION: CONFIRMED\nACCURACY: fine")
    run.now += 2 * 86400 - 60
    run.propose()
    assert reviews_pending(run) == []
    run.now += 60                                      # two days, not the default seven
    run.propose()
    assert [s["key"] for s in reviews_pending(run)] == ["documenter.review_section/2"]
    doc = M.read_doc(run.store)
    assert upkeep.due_sections(doc, run.now) == []     # the default (7 days) would not be due yet
    assert [s["id"] for s in upkeep.due_sections(doc, run.now, 2 * 86400)] == ["s0001"]
