"""Document versions: every change is a version, every version can be shown, a revert is a new version
equal to the old one, and racing writers are caught by version checks."""
import pytest

from services.modules.documenter import model as M
from shared import txn
from shared.errors import ErrorCode, FanoError
from tests.unit.dochelp import Run

T = 1_700_000_000.0


def content(title, text, est=(), req=()):
    return {"title": title, "text": text, "establishes": list(est), "requires": list(req)}


def change(store, changes, kind="test", ref="x", order=None, now=T):
    doc = M.read_doc(store)
    ops, version = M.commit(doc, changes, {"kind": kind, "ref": ref, "task": None}, f"{kind} {ref}", now, order)
    store.txn(ops)
    return version


def texts(store, version=None):
    if version is None:
        return [(s["id"], s["text"]) for s in M.read_doc(store).ordered()]
    _, ver = store.get(M.version_key(version))
    return [(s["id"], s["text"]) for s in M.version_text(store, ver["manifest"])]


@pytest.fixture
def store():
    s = Run().store
    change(s, {"s0001": content("Points", "Seven points.", ["point"])}, ref="a")
    change(s, {"s0002": content("Lines", "Seven lines.", ["line"], ["point"])}, ref="b")
    change(s, {"s0001": content("Points", "Seven points, revised.", ["point", "flag"])}, ref="c")
    return s


def test_every_change_is_a_version_with_its_full_text(store):
    doc = M.read_doc(store)
    assert doc.version == 3 and doc.head["next_section"] == 3
    assert doc.head["manifest"] == [["s0001", 2], ["s0002", 1]]
    assert texts(store, 1) == [("s0001", "Seven points.")]
    assert texts(store, 2) == [("s0001", "Seven points."), ("s0002", "Seven lines.")]
    assert texts(store, 3) == texts(store) == [("s0001", "Seven points, revised."), ("s0002", "Seven lines.")]
    assert [v["cause"]["ref"] for v in (store.get(M.version_key(n))[1] for n in (1, 2, 3))] == ["a", "b", "c"]
    assert set(doc.established()) == {"point", "flag", "line"}
    assert store.get("concepts/flag")[1] == {"name": "flag", "sections": ["s0001"]}


def test_a_changed_section_is_provisional_again(store):
    doc = M.read_doc(store)
    sec = doc.sections["s0002"][1]
    store.txn([txn.put(M.section_key("s0002"), {**sec, "status": "stable", "reviewed_at": T},
                     if_version=doc.sections["s0002"][0])])
    change(store, {"s0002": content("Lines", "Seven lines, again.", ["line"])})
    sec = M.read_doc(store).sections["s0002"][1]
    assert sec["status"] == "provisional" and sec["reviewed_at"] == T and sec["rev"] == 2


def test_revert_is_a_new_version_equal_to_the_old_one(store):
    doc = M.read_doc(store)
    changes, order = M.revert_changes(doc, store, 1)
    assert changes == {"s0001": {**content("Points", "Seven points.", ["point"]), "restore": 1}, "s0002": None}
    v = change(store, changes, kind="revert", ref=1, order=order)
    assert v == 4 and texts(store) == texts(store, 1) == texts(store, 4)
    doc = M.read_doc(store)
    assert doc.head["manifest"] == store.get(M.version_key(1))[1]["manifest"] == [["s0001", 1]]
    assert doc.sections["s0001"][1]["rev"] == 1 and list(store.scan("revisions/s0001/"))[-1][0].endswith("0002")
    assert store.get(M.section_key("s0002")) == (0, None)   # gone from the document ...
    assert store.get(M.revision_key("s0002", 1))[1]["text"] == "Seven lines."   # ... not from history
    assert set(doc.established()) == {"point"} and store.get("concepts/line") == (0, None)
    # and forward again: revert to 3 brings both sections back, in order
    changes, order = M.revert_changes(doc, store, 3)
    change(store, changes, kind="revert", ref=3, order=order)
    assert texts(store) == texts(store, 3) and M.read_doc(store).version == 5
    change(store, {"s0001": content("Points", "A third text.", ["point"])})
    assert M.read_doc(store).head["manifest"][0] == ["s0001", 3]   # the next revision does not collide
    assert M.read_doc(store).head["next_section"] == 3     # a restored sid does not move the counter


def test_revert_to_the_empty_document_and_to_the_current_version(store):
    changes, order = M.revert_changes(M.read_doc(store), store, 0)
    change(store, changes, kind="revert", ref=0, order=order)
    assert texts(store) == [] and list(store.scan("concepts/")) == []
    changes, order = M.revert_changes(M.read_doc(store), store, 4)
    assert changes == {} and order == []                    # already equal: still a version of its own
    assert change(store, changes, kind="revert", ref=4, order=order) == 5


def test_revert_to_a_missing_version_is_refused(store):
    with pytest.raises(M.RevertError, match="no version 9"):
        M.revert_changes(M.read_doc(store), store, 9)
    with pytest.raises(M.RevertError):
        M.revert_changes(M.read_doc(store), store, -1)


def test_a_change_computed_from_a_stale_read_does_not_apply(store):
    stale = M.read_doc(store)
    change(store, {"s0003": content("Flags", "21 flags.")})
    ops, _ = M.commit(stale, {"s0002": content("Lines", "changed on a stale read")}, {"kind": "t"}, "t", T)
    with pytest.raises(FanoError) as refused:
        store.txn(ops)
    assert refused.value.code == ErrorCode.CONDITION_FAILED
    assert M.read_doc(store).version == 4 and texts(store)[1] == ("s0002", "Seven lines.")


def test_comment_ids_sort_by_time_and_differ():
    a, b = M.new_comment_id(T), M.new_comment_id(T)
    assert a != b and M.new_comment_id(T + 1) > max(a, b)


def test_history_is_bounded():
    rec = {}
    for n in range(M.HISTORY_LIMIT + 5):
        M.note(rec, T, "e", n=n)
    assert len(rec["history"]) == M.HISTORY_LIMIT and rec["history"][-1]["n"] == M.HISTORY_LIMIT + 4
