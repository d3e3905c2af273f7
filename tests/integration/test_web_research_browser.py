"""The panel's research pages in a real Chromium against the real tree on simulated accounts (supervisord,
broker, scheduler, sim workers, the research modules, the ``web`` program): bless an insight; select
document text, comment, and see the running documenter address the comment and make a new version; diff
and revert a version; and an XSS payload planted in a sim answer, an insight, a document section, a
comment and a finding does not run (no dialog, no request to any address but the panel's)."""
from __future__ import annotations

import json
import re
import time

import pytest

from shared.client import BrokerClient
from tests.support import run_fanoctl, running_tree, wait_for
from tests.web_research_support import plant

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(300)]

ACCOUNTS = """
[accounts.quick-sim]
backend = "sim"
modes = ["standard"]
seed = 3
latency = { standard = { dist = "fixed", value = 0.2 } }

[accounts.other-sim]
backend = "sim"
modes = ["standard"]
seed = 4
latency = { standard = { dist = "fixed", value = 0.2 } }
"""
# each piece fits in the first 80 characters of a prompt, which the simulated provider echoes in its answer
PAYLOADS = ('<img src="http://127.0.0.1:9/x.png" onerror="alert(1)">', "<script>alert(2)</script>",
            "[click](javascript:alert(3))", "![t](http://127.0.0.1:9/t.png)", r"$\href{javascript:alert(4)}{x}$",
            '<a href="http://127.0.0.1:9/" onmouseover="alert(5)">hover</a>')
XSS = " ".join(PAYLOADS)


@pytest.fixture(scope="module")
def tree():
    with running_tree("fr", ACCOUNTS) as t:
        client = BrokerClient(t.config.broker_endpoint, name="test", timeout=5.0)
        try:
            t.planted = plant(client, 16, payload=XSS, now=time.time(), reviews=False)
        finally:
            client.close()
        yield t


@pytest.fixture(scope="module")
def url(tree) -> str:
    return tree.config.web.url.rstrip("/")


@pytest.fixture
def page(browser, url):
    """A page that records every dialog (dismissed), every request and every script error."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    p = ctx.new_page()
    p.set_default_timeout(15_000)
    p.dialogs, p.requests, p.errors = [], [], []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.on("request", lambda r: p.requests.append(r.url))
    p.on("pageerror", lambda exc: p.errors.append(str(exc)))
    yield p
    ctx.close()
    assert p.errors == [], f"script errors on the page: {p.errors}"


def _insight(tree, iid: str) -> dict:
    res = run_fanoctl(tree, "--json", "insights", "show", iid)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["insight"]


def test_bless_an_insight(tree, url, page):
    pending = [i for i in tree.planted["insights"] if _insight(tree, i)["status"] == "pending"]
    iid = pending[0]
    page.goto(f"{url}/insights?q={iid}")
    row = page.locator(f'tr[id="row-{iid}"]')
    row.locator("button.decide.blessed").click()
    assert f"insight {iid}: pending -> blessed" in page.inner_text(".flash.ok")
    assert page.locator(f'tr[id="row-{iid}"] .state.blessed').count() == 1
    rec = _insight(tree, iid)
    assert rec["status"] == "blessed" and rec["decided_by"] == "human"
    page.goto(f"{url}/insights/{iid}")
    assert page.locator("h1 .state.blessed").count() == 1 and page.locator("button.decide.blessed").is_disabled()


def _select(page, sid: str) -> str:
    """Select a few words of section ``sid``'s rendered text as a reader would (a range over a text node,
    then the mouse button coming up); returns them."""
    return str(page.evaluate("""(sid) => {
        const root = document.querySelector(`[data-comment-section="${sid}"] .md`);
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        let node;
        while ((node = walker.nextNode())) {
            const words = node.data.trim().split(/\\s+/).slice(0, 4).join(" ");
            if (words.length >= 12) {
                const at = node.data.indexOf(words);
                const range = document.createRange();
                range.setStart(node, at);
                range.setEnd(node, at + words.length);
                const sel = window.getSelection();
                sel.removeAllRanges();
                sel.addRange(range);
                root.dispatchEvent(new MouseEvent("mouseup", {bubbles: true}));
                return words;
            }
        }
        throw new Error("no text of 4 words in " + sid);
    }""", sid))


def test_select_text_comment_and_see_it_addressed_in_a_new_version(tree, url, page):
    sid = tree.planted["sections"][0]
    for attempt in range(4):   # the simulated author answers UNCHANGED one time in five: ask again
        page.goto(f"{url}/document")
        words = _select(page, sid)
        form = page.locator(f'[data-comment-form="{sid}"]')
        assert form.evaluate("d => d.open")
        assert form.locator("textarea[name=quote]").input_value() == words
        form.locator("textarea[name=text]").fill(f"Name the three points (try {attempt}).")
        form.locator("button[type=submit]").click()
        cid = re.search(r"comment (\S+) on", page.inner_text(".flash.ok")).group(1)
        box = page.locator(f"#comment-{cid}")
        assert box.locator("blockquote.quote").inner_text() == words

        def resolved(cid=cid):
            page.goto(f"{url}/document")
            return page.locator(f'#comment-{cid}[data-status="resolved"]').count() == 1
        wait_for(resolved, 90, interval=1.0, what=f"comment {cid} to be addressed by the documenter")
        applied = page.locator(f"#comment-{cid} a[href^='/document/diff']")
        if applied.count():
            break
    else:
        pytest.fail("four comments in a row were resolved without a change")
    version = int(re.search(r"version (\d+)", applied.inner_text()).group(1))
    applied.click()
    assert page.inner_text("h1") == f"Version {version - 1} → {version}"
    assert page.locator(f"#diff-{sid}.changed").count() == 1
    page.goto(f"{url}/document/versions")
    assert page.locator(f"#version-{version} td").nth(2).inner_text() == "comment"


def test_diff_and_revert_a_version(tree, url, page):
    page.goto(f"{url}/document/versions")
    page.fill("input[name=from]", "1")
    page.fill("input[name=to]", "3")
    page.click("form.filters button[type=submit]")
    assert page.inner_text("h1") == "Version 1 → 3"
    assert page.locator(".diff.added").count() >= 2 and page.locator("pre.diff .add").count() > 0
    page.goto(f"{url}/document/versions")
    page.click('button.revert[data-version="1"]')
    flash = page.inner_text(".flash.ok")
    new = int(re.search(r"version (\d+): the document equals version 1 again", flash).group(1))
    assert page.locator(f"#version-{new} td").nth(2).inner_text() == "revert"
    versions = {v["version"]: v for v in json.loads(run_fanoctl(tree, "--json", "document", "versions").stdout)[
        "versions"]}
    assert versions[new]["manifest"] == versions[1]["manifest"] and versions[new]["cause"]["ref"] == 1
    with page.expect_download() as dl:
        page.click("a[href='/document/download']")
    # the running documenter may have written more since (it incorporates the planted blessed insights)
    got = int(re.fullmatch(r"fano-document-v(\d+)\.md", dl.value.suggested_filename).group(1))
    assert got >= new
    assert open(dl.value.path(), encoding="utf-8").readline().startswith(f"<!-- fano document version {got}")


def test_an_xss_payload_does_not_run(tree, url, page):
    res = run_fanoctl(tree, "--json", "ask", PAYLOADS[0] + PAYLOADS[1])
    assert res.returncode == 0, res.stderr
    tid = json.loads(res.stdout)["task"]["id"]
    wait_for(lambda: json.loads(run_fanoctl(tree, "--json", "queue", "show", str(tid)).stdout)["state"] == "DONE",
             60, interval=0.5, what=f"the ask {tid} to be answered")
    iid = tree.planted["insights"][2]
    pages = [f"/queue/{tid}", "/insights", f"/insights/{iid}", "/document", "/document/versions/1",
             "/document/diff?from=0&to=2", "/research", "/research?tab=questions", "/research?tab=sources"]
    for path in pages:
        page.goto(url + path)
        page.mouse.move(5, 5)
        for link in page.locator("main a").all()[:60]:   # hover every link: an onmouseover would fire
            if link.is_visible():
                link.hover()
    assert page.goto(f"{url}/queue/{tid}").status == 200
    assert "<script>alert(2)</script>" in page.inner_text("main")           # the sim's answer, as text
    assert page.dialogs == [], f"a dialog opened: {page.dialogs}"
    foreign = [u for u in page.requests if not u.startswith(url + "/")]
    assert foreign == [], f"requests to unexpected addresses: {foreign}"
    page.goto(f"{url}/insights/{iid}")
    assert "<script>alert(2)</script>" in page.inner_text(".claim")   # shown as text
    assert page.locator(".claim img, .claim script, .claim [onerror], .claim [onmouseover]").count() == 0
    hrefs = page.locator(".claim a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
    assert hrefs == ["http://127.0.0.1:9/t.png"]          # the image became a plain link; javascript: stayed text
