"""The stand-in chat site without a browser: scenario timelines and the HTTP API."""
import json
import urllib.error
import urllib.request

import pytest

from ops.standins.chat_site import DEFAULT_PORT, ChatSiteServer, main
from ops.standins.chat_site.scenarios import PREAMBLE, SHORT_ANSWER, scenario_of, turn_state


def state(scenario, t, skin="chatgpt", **control):
    turn = {"skin": skin, "prompt": "p", "mode": "Pro", "scenario": scenario, "created": 1000.0}
    return turn_state(turn, 1000.0 + t, dict({"speed": 1.0, "reset_in": 2100, "tz": "UTC"}, **control))


def test_pro_long_has_a_settled_preamble_a_single_flash_then_thinking():
    settled = [state("pro_long", t / 100) for t in range(42, 198, 2)]
    assert all(s["text"] == PREAMBLE and not s["stop"] for s in settled)      # looks finished to a naive gate
    flashes = [t / 100 for t in range(42, 198, 2) if state("pro_long", t / 100)["bar"]]
    assert flashes and max(flashes) - min(flashes) < 0.15                    # one short flash only
    thinking = state("pro_long", 3.0)
    assert thinking["stop"] and thinking["thinking"] == "Pro thinking" and not thinking["bar"]
    final = state("pro_long", 5.5)
    assert final["done"] and final["bar"] and final["text"].startswith("Stand-in chatgpt answer [Pro] to: p")


def test_rate_limit_names_the_reset_time_in_the_controlled_zone():
    s = state("rate_limit", 1.0, tz="America/New_York")
    assert not s["reply"] and "try again after" in s["banner"]
    g = state("rate_limit", 1.0, skin="gemini")
    assert g["reply"] and g["text"].startswith("You've reached your limit for chats with Deep Think until")


def test_the_short_scenario_is_a_short_finished_answer_with_notice_words():
    s = state("short", 1.0, skin="gemini")
    assert s["done"] and s["bar"] and s["text"] == SHORT_ANSWER and len(SHORT_ANSWER) < 400
    assert "quota" in SHORT_ANSWER and "an error occurred" in SHORT_ANSWER


def test_the_foreground_command_listens_on_the_readme_port(monkeypatch):
    """README: url = "http://127.0.0.1:8300" for `python -m ops.standins chat-site` (no --port)."""
    served = []
    monkeypatch.setattr("ops.standins.chat_site.serve_in_foreground", lambda server: served.append(server) or 0)
    assert main([]) == 0 and served[0].port == DEFAULT_PORT == 8300
    assert main(["--port", "0", "--deep", "unapplied", "--layout", "changed-after-send"]) == 0
    assert served[1].port == 0 and served[1].control()["deep"] == "unapplied"
    assert main(["--port", "0", "--wall", "human_check", "--downgrade", "--deep-limit", "--real-url-after", "15",
                 "--no-downgrade-banner"]) == 0
    assert {k: served[2].control()[k] for k in ("wall", "downgrade", "deep_limit", "real_url_after",
                                                 "downgrade_banner")} == \
        {"wall": "human_check", "downgrade": True, "deep_limit": True, "real_url_after": 15.0,
         "downgrade_banner": False}


def test_scenario_selection():
    assert scenario_of("[[scenario:slow]] hi", None, "normal") == "slow"
    assert scenario_of("hi", "capacity", "normal") == "capacity"
    assert scenario_of("hi", None, "error") == "error"
    assert scenario_of("[[scenario:bogus]] hi", None, "error") == "normal"


def call(url, method="GET", body=None, cookie=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


@pytest.fixture
def site():
    s = ChatSiteServer().start()
    yield s
    s.stop()


def test_submit_records_and_serves_the_conversation(site):
    status, out, _ = call(site.url + "/api/submit", "POST", {"skin": "chatgpt", "prompt": "hi there", "mode": "Auto"})
    assert status == 200 and out["title"] == "hi there"
    status, conv, _ = call(site.url + f"/api/conversation/{out['conversation']}")
    assert status == 200 and conv["turns"][0]["prompt"] == "hi there"
    assert site.prompts() == ["hi there"]
    assert call(site.url + "/__log")[1]["submits"][0]["mode"] == "Auto"
    # a follow-up of a conversation of the other skin is refused
    status, _, _ = call(site.url + "/api/submit", "POST", {"skin": "gemini", "prompt": "x",
                                                            "conversation": out["conversation"]})
    assert status == 404


def test_control_login_wall_and_cookie(site):
    assert call(site.url + "/__control", "POST", {"login_required": True})[1]["login_required"] is True
    assert call(site.url + "/api/config")[1]["logged_in"] is False
    assert call(site.url + "/api/submit", "POST", {"skin": "chatgpt", "prompt": "x"})[0] == 401
    assert call(site.url + "/__control", "POST", {"scenario": "nope"})[0] == 400
    assert call(site.url + "/__control", "POST", {"deep": "maybe"})[0] == 400
    assert call(site.url + "/__control", "POST", {"layout": "v3"})[0] == 400
    call(site.url + "/__control", "POST", {"deep": "unapplied", "layout": "changed-after-send"})
    assert {k: v for k, v in call(site.url + "/api/config")[1].items() if k in ("deep", "layout")} == \
        {"deep": "unapplied", "layout": "changed-after-send"}
    cookie = f"standin_session={site.session}"
    assert call(site.url + "/api/config", cookie=cookie)[1]["logged_in"] is True
    assert site.prompts() == []
    call(site.url + "/__reset", "POST", {})
    assert call(site.url + "/api/config")[1]["logged_in"] is True


def test_notices_in_the_reply_area_and_a_downgrade(site):
    busy = state("busy", 1.0, skin="gemini")
    assert busy["done"] and "using Pro right now" in busy["text"]
    assert "didn't count against your Pro limit" in busy["text"]
    assert state("went_wrong", 1.0)["text"].startswith("Something went wrong. There was an error generating")
    with pytest.raises(ValueError):
        site.control(downgrade="yes")
    site.control(downgrade=True)
    status, out, _ = call(site.url + "/api/submit", "POST", {"skin": "chatgpt", "prompt": "deep one", "mode": "Pro"})
    conv = call(site.url + f"/api/conversation/{out['conversation']}")[1]
    assert conv["turns"][0]["mode"] == "Pro" and conv["turns"][0]["served"] == "Auto"
    assert site.submits[0]["served"] == "Auto" and conv["turns"][0]["downgrade_banner"] is True
    # the label-only downgrade: the turn tells the page to show no banner
    with pytest.raises(ValueError):
        site.control(downgrade_banner="no")
    site.control(downgrade_banner=False)
    status, out, _ = call(site.url + "/api/submit", "POST", {"skin": "chatgpt", "prompt": "deep two", "mode": "Pro"})
    conv = call(site.url + f"/api/conversation/{out['conversation']}")[1]
    assert conv["turns"][0]["served"] == "Auto" and conv["turns"][0]["downgrade_banner"] is False


def test_the_deep_think_limit_control(site):
    assert call(site.url + "/api/config")[1]["deep_limit"] is None
    site.control(deep_limit=True, reset_in=3600, tz="UTC")
    text = call(site.url + "/api/config")[1]["deep_limit"]
    assert text.startswith("You've reached your limit for chats with Deep Think until ")
    with pytest.raises(ValueError):
        site.control(deep_limit=1)


def test_the_history_list_is_newest_first_and_the_transient_url_period_is_controlled(site):
    first = call(site.url + "/api/submit", "POST", {"skin": "chatgpt", "prompt": "older", "mode": "Auto"})[1]
    second = call(site.url + "/api/submit", "POST", {"skin": "chatgpt", "prompt": "newer", "mode": "Auto"})[1]
    call(site.url + "/api/submit", "POST", {"skin": "gemini", "prompt": "other skin", "mode": "Fast"})
    items = call(site.url + "/api/history?skin=chatgpt")[1]
    assert [i["id"] for i in items] == [second["conversation"], first["conversation"]]
    assert items[0]["title"] == "newer"
    site.control(real_url_after=15)
    assert call(site.url + "/api/config")[1]["real_url_after"] == 15
    with pytest.raises(ValueError):
        site.control(real_url_after=-1)


def test_the_wall_control_serves_a_page_known_only_by_its_text(site):
    site.control(wall="signin")
    with urllib.request.urlopen(site.url + "/app", timeout=5) as r:
        page = r.read().decode()
    assert "to continue to Gemini" in page and "prompt" not in page
    with pytest.raises(ValueError):
        site.control(wall="captcha")


def test_a_limit_in_the_reply_area_names_the_mode_and_the_reset():
    g = state("limit_in_reply", 1.0)
    assert g["done"] and g["text"].startswith("You've reached the Pro limit for now. Try again after ")
    assert state("limit_in_reply", 1.0, skin="gemini")["text"].startswith(
        "You've reached your limit for chats with Pro until ")


def test_a_client_gone_mid_answer_is_no_traceback_but_a_bug_still_is(capsys):
    from ops.standins.chat_site import ChatSiteServer
    site = ChatSiteServer().start()
    try:
        for exc, shown in ((BrokenPipeError(32, "Broken pipe"), False), (ConnectionResetError(104, "reset"), False),
                           (ValueError("a bug in the stand-in"), True)):
            try:
                raise exc
            except Exception:
                site._httpd.handle_error(None, ("127.0.0.1", 1))
            err = capsys.readouterr().err
            assert (type(exc).__name__ in err) == shown, err
    finally:
        site.stop()
