"""The panel's pages against a real broker (no browser): writes go through the operations layer and land
in the broker, a POST without its CSRF token changes nothing, lists are paged and filtered, and a broker
that does not answer is a 503 page that says so."""
from __future__ import annotations

import re
import time

import pytest

from services.modules.explorer import model as XM
from services.web.app import create_app
from shared.config import load_config
from tests.web_support import Session, serve

pytestmark = pytest.mark.integration


@pytest.fixture
def panel(broker):
    with serve(create_app(load_config(broker.config_path))) as url:
        yield Session(url)


def _seeds(client) -> dict:
    return {i["value"]["id"]: i["value"] for i in client.kv_scan("explorer", "seeds/")["items"]}


def test_a_seed_added_and_edited_through_the_form_is_the_operations_layers_record(panel, client):
    token = panel.csrf("/seeds")
    r = panel.post("/seeds/add", {"csrf": token, "text": "Is the Fano plane self-dual?", "type": "question",
                                  "priority": "high", "tags": "duality, fano", "notes": "from the panel"})
    seed_id = re.search(r"seed\+(\S+?)\+added", r.header("location")).group(1)
    seed = _seeds(client)[seed_id]
    assert (seed["type"], seed["priority"], seed["tags"], seed["notes"]) == ("question", 8, ["duality", "fano"],
                                                                             "from the panel")
    r = panel.post(f"/seeds/{seed_id}/edit", {"csrf": token, "text": "Is the Fano plane self-dual? Why?",
                                               "type": "conjecture", "priority": "3", "tags": "", "notes": "x"})
    assert "updated" in r.header("location")
    seed = _seeds(client)[seed_id]
    assert seed["text"].endswith("Why?") and seed["type"] == "conjecture" and seed["priority"] == 3
    page = panel.get(f"/seeds/{seed_id}")
    assert page.status == 200 and "Is the Fano plane self-dual? Why?" in page.body
    # the domain's refusal is shown, as fanoctl shows it, and nothing is written
    r = panel.post("/seeds/add", {"csrf": token, "text": "Too urgent", "priority": "11"})
    assert "priority+must+be+an+integer+1-10" in r.header("location") and len(_seeds(client)) == 1
    assert "removed" in panel.post(f"/seeds/{seed_id}/remove", {"csrf": token}).header("location")
    assert _seeds(client) == {}


def test_a_post_without_the_csrf_token_changes_nothing(panel, client):
    panel.csrf("/seeds")                                     # the browser has its CSRF cookie
    r = panel.post("/seeds/add", {"text": "Forged from another site", "type": "question"})
    assert r.status == 403 and _seeds(client) == {}
    task = client.submit("k", "adhoc", "adhoc.ask", {"prompt": "p"})["task"]
    assert panel.post(f"/queue/{task['id']}/cancel", {"csrf": "guessed"}).status == 403
    assert client.get(task["id"])["state"] == "PENDING"


def test_task_actions_go_through_the_broker(panel, client):
    tid = client.submit("k", "adhoc", "adhoc.ask", {"prompt": "<b>bold</b>"})["task"]["id"]
    token = panel.csrf(f"/queue/{tid}")
    page = panel.get(f"/queue/{tid}")
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.body and "<b>bold</b>" not in page.body
    panel.post(f"/queue/{tid}/priority", {"csrf": token, "priority": "77"})
    assert client.get(tid)["priority"] == 77
    panel.post(f"/queue/{tid}/pause", {"csrf": token})
    assert client.get(tid)["state"] == "PAUSED"
    panel.post(f"/queue/{tid}/resume", {"csrf": token})
    assert client.get(tid)["state"] == "PENDING"
    panel.post(f"/queue/{tid}/cancel", {"csrf": token, "reason": "not needed"})
    t = client.get(tid)
    assert t["state"] == "CANCELLED" and t["history"][-1]["why"] == "not needed"
    r = panel.post(f"/queue/{tid}/cancel", {"csrf": token})           # the broker's refusal, shown
    assert "error=INVALID_STATE" in r.header("location")
    assert panel.get("/queue/999999").status == 404


def test_the_queue_is_paged_and_filtered(panel, client):
    for i in range(120):
        client.submit(f"a{i}", "adhoc", "adhoc.ask", {"prompt": str(i)})
    client.submit("e1", "explorer", "explorer.explore", {})
    def rows(path: str) -> tuple[list[int], str | None]:
        body = panel.get(path).body
        nxt = re.search(r'href="(/queue\?[^"]*)" rel="next"', body)
        return [int(i) for i in re.findall(r'<tr data-task="(\d+)"', body)], \
            nxt.group(1).replace("&amp;", "&") if nxt else None
    newest, nxt = rows("/queue?module=adhoc")                       # newest first by default
    assert newest == list(range(120, 70, -1)) and "before=71" in nxt
    seen = newest
    while nxt:
        page, nxt = rows(nxt)
        seen += page
    assert seen == list(range(120, 0, -1))                             # every task once, then the end
    oldest, nxt = rows("/queue?module=adhoc&order=oldest")
    assert oldest == list(range(1, 51)) and "after=50" in nxt and "order=oldest" in nxt
    assert rows(nxt)[0] == list(range(51, 101))
    only = re.findall(r'<tr data-task="(\d+)"', panel.get("/queue?module=explorer").body)
    assert only == ["121"]
    assert re.findall(r'<tr data-task="(\d+)"', panel.get("/queue?kind=explorer.explore&state=PENDING").body) == ["121"]


def test_a_broker_that_does_not_answer_is_a_503_page_that_says_so(panel, broker):
    assert panel.get("/queue").status == 200
    broker.kill()
    start = time.monotonic()
    for path in ("/", "/queue", "/seeds", "/threads"):
        r = panel.get(path)
        assert r.status == 503 and "The broker is unavailable" in r.body, path
    assert time.monotonic() - start < 4 * 3
    broker.start()
    assert panel.get("/queue").status == 200                       # and back, without restarting the panel


def test_threads_list_and_transcript(panel, client):
    from shared import txn
    thread = {"id": "s1.t1", "seed_id": "s1", "seed_type": "question", "seed_text": "Why 7?", "priority": 5,
              "status": "active", "exchanges": 1, "created_at": 1.0, "updated_at": 2.0}
    exchange = {"thread_id": "s1.t1", "turn": 1, "role": "explore", "backend": "acct-a", "mode": "deep",
                "response": "Because <script>alert(1)</script> of $x^2$.", "task_id": 3, "at": 3.0}
    client.txn("explorer", [txn.put(XM.thread_key("s1.t1"), thread), txn.put(XM.exchange_key("s1.t1", 1), exchange)])
    assert 'data-thread="s1.t1"' in panel.get("/threads?status=active").body
    assert 'data-thread="s1.t1"' not in panel.get("/threads?status=paused").body
    page = panel.get("/threads/s1.t1").body
    assert "acct-a" in page and "deep" in page and "turn 1" in page
    assert "<script>alert(1)</script>" not in page
    token = panel.csrf("/threads/s1.t1")
    panel.post("/threads/s1.t1/pause", {"csrf": token})
    assert client.kv_get("explorer", XM.thread_key("s1.t1"))["value"]["status"] == "paused"


def test_a_task_page_without_the_schedulers_explanation_says_so_in_the_log(broker, client, monkeypatch):
    """The scheduler refusing ``why`` leaves the explanation out of the page, counted and logged by the
    web program (shared.service.Tolerance), never dropped silently."""
    from services.web.pages import queue
    from shared.errors import ErrorCode, FanoError

    def refused(*_a, **_k):
        raise FanoError(ErrorCode.FORBIDDEN, "not for you")
    monkeypatch.setattr(queue, "why", refused)
    app = create_app(load_config(broker.config_path))
    tid = client.submit("k2", "adhoc", "adhoc.ask", {"prompt": "p"})["task"]["id"]
    with serve(app) as url:
        assert Session(url).get(f"/queue/{tid}").status == 200
    assert app.state.tolerance.counts == {"the scheduler's why for a task page": 1}
