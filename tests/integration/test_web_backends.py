"""The chatgpt and gemini backends in real headless Chromium against the stand-in chat site.

One site and one started provider per skin are shared by the module (a browser launch costs a second or
two on two cores); each test resets the site. Scenarios are picked per request with a prompt marker or
at run time with the site's control (see ops/standins/chat_site/scenarios.py).
"""
import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cli.render import local_time
from ops.standins.chat_site import ChatSiteServer
from ops.standins.chat_site.scenarios import PREAMBLE, SHORT_ANSWER
from services.backends.base import ProviderError, Turn
from services.backends.chatgpt import ChatGPTProvider
from services.backends.conversations import ConversationStore, conversation_key
from services.backends.gemini import GeminiProvider
from services.scheduler.queries import fmt_time
from shared.clock import Clock
from tests.browser_support import profile_alive
from tests.support import REPO, run_fanoctl, running_tree, short_tmpdir, wait_for, wait_paused_for_auth

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SKINS = {"chatgpt": ChatGPTProvider, "gemini": GeminiProvider}
DEEP_LABEL = {"chatgpt": "Pro", "gemini": "Deep Think"}
FAST = {"poll_interval": 0.1, "min_stable": 0.5, "bar_confirm_polls": 3, "timeout": 30, "ready_timeout": 8,
        "capacity_retry": 42, "quota_retry": 999, "mode_retry": 7777, "timezone": "America/New_York",
        "modes": ["standard", "deep"]}
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def site():
    s = ChatSiteServer().start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def fresh_site(request):
    if "site" in request.fixturenames:
        request.getfixturevalue("site").reset()
    yield


@pytest.fixture(scope="module")
def root():
    d = short_tmpdir("fw")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make(skin, site, root, chromium, account=None, **over):
    settings = dict(FAST, url=site.url, chromium=chromium, **over)
    return SKINS[skin](account or f"{skin}-1", settings, Clock(), root / "data")


@pytest.fixture(scope="module")
def providers(site, root, chromium_path):
    made = {skin: make(skin, site, root, chromium_path) for skin in SKINS}
    for p in made.values():
        p.start()
    yield made
    for p in made.values():
        p.close()
        assert profile_alive(p.profile) == [], "the browser outlived close()"


def turn(prompt, mode="standard", conversation=None, index=0, task_id=None):
    return Turn(task_id=task_id or next(_ids), epoch=1, attempt=1, account="x", mode=mode, module="test",
                kind="ask", prompt=prompt, conversation=conversation, turn_index=index)


def send(provider, t, cancelled=lambda: False):
    return provider.send(t, cancelled)


def failure(provider, t) -> ProviderError:
    with pytest.raises(ProviderError) as err:
        provider.send(t, lambda: False)
    return err.value


both = pytest.mark.parametrize("skin", list(SKINS))


# --- the normal path -------------------------------------------------------------------------------------

@both
def test_answer_with_the_url_recorded_before_the_reply(providers, site, skin, monkeypatch):
    p = providers[skin]
    events = []
    real_set, real_mark, real_record = p.store.set_handle, p.store.mark_sent, p.store.record_reply

    def set_handle(key, **fields):
        if fields.get("url"):
            events.append(("url", fields["url"]))
        real_set(key, **fields)

    monkeypatch.setattr(p.store, "set_handle", set_handle)
    monkeypatch.setattr(p.store, "mark_sent", lambda *a, **k: (events.append(("sent",)), real_mark(*a, **k)))
    monkeypatch.setattr(p.store, "record_reply", lambda *a, **k: (events.append(("reply",)), real_record(*a, **k)))
    t = turn("hello")
    reply = send(p, t)
    label = "Auto" if skin == "chatgpt" else "Fast"
    assert reply.text.startswith(f"Stand-in {skin} answer [{label}] to: hello"), reply.text
    assert "- second point" in reply.text and "x^2 + y^2" in reply.text    # innerText keeps lines and TeX
    kinds = [e[0] for e in events]
    assert kinds[0] == "sent" and kinds[-1] == "reply" and "url" in kinds[1:-1]
    url = reply.meta["url"]
    assert "WEB:" not in url and p.site.is_conversation(url.split(site.url, 1)[1])
    assert p.store.handle(conversation_key(t))["url"] == url
    assert site.prompts() == ["hello"] and site.submits[0]["conversation"] in url


@both
def test_a_follow_up_turn_reopens_the_conversation(providers, site, skin):
    p = providers[skin]
    first = send(p, turn("first question", conversation=f"conv-{skin}", index=0))
    second = send(p, turn("second question", conversation=f"conv-{skin}", index=1))
    assert second.text.startswith(f"Stand-in {skin} answer") and second.text.endswith("That is all.")
    assert "second question" in second.text and second.meta["url"] == first.meta["url"]
    assert [s["conversation"] for s in site.submits] == [site.submits[0]["conversation"]] * 2
    assert [e.index for e in p.store.turns(f"conv-{skin}")] == [0, 1]


@both
def test_a_new_conversation_whose_first_task_is_turn_1_starts_a_chat_then_continues_it(providers, site, skin):
    """The explorer numbers a thread's first explore turn 1 (services/modules/explorer/threads.py): a brand-new
    conversation's first task with turn 1 opens a new chat; turn 2 continues that chat. A first turn that was
    refused (nothing answered) is retried in a new chat too, not refused as "no recorded URL"."""
    p = providers[skin]
    conv = f"thread-{skin}-{next(_ids)}"
    err = failure(p, turn("[[scenario:busy]] explore first", conversation=conv, index=1))
    assert err.error_class == "transient" and err.sent is False
    first = send(p, turn("explore first", conversation=conv, index=1))
    assert first.text.startswith(f"Stand-in {skin} answer") and "explore first" in first.text
    second = send(p, turn("critique next", conversation=conv, index=2))
    assert "critique next" in second.text and second.meta["url"] == first.meta["url"]
    convs = [s["conversation"] for s in site.submits]
    assert len(set(convs)) == 2 and convs[1] == convs[2], convs      # the refused one, then one chat for both
    assert [e.index for e in p.store.turns(conv)] == [1, 2]


@both
def test_a_later_turn_of_a_conversation_handed_off_here_opens_a_new_chat(providers, site, skin):
    # the conversation ran turns 0-2 on another account (services/broker/ops_handoff.py): this account
    # never held it, so it starts a new chat (the prompt carries its own context) instead of failing
    p = providers[skin]
    reply = send(p, turn("turn three, with its own context", conversation=f"moved-{skin}", index=3))
    assert reply.text.startswith(f"Stand-in {skin} answer") and reply.meta["url"]
    assert p.store.handle(f"moved-{skin}")["url"] == reply.meta["url"]
    nxt = send(p, turn("turn four", conversation=f"moved-{skin}", index=4))   # and then continues that chat
    assert nxt.meta["url"] == reply.meta["url"]
    assert [e.index for e in p.store.turns(f"moved-{skin}")] == [3, 4]


@both
def test_long_thinking_with_a_false_early_finish_returns_the_real_answer(providers, site, skin):
    p = providers[skin]
    started = time.monotonic()
    reply = send(p, turn("[[scenario:pro_long]] prove it", mode="deep"))
    assert reply.text.startswith(f"Stand-in {skin} answer [{DEEP_LABEL[skin]}] to: prove it"), reply.text
    assert PREAMBLE not in reply.text and time.monotonic() - started >= 4.5
    assert site.submits[0]["mode"] == DEEP_LABEL[skin] and reply.meta["mode_label"] == DEEP_LABEL[skin]
    assert not reply.meta["mode_after"].startswith("unconfirmed")


# --- notices ---------------------------------------------------------------------------------------------

@both
def test_a_limit_message_is_quota_until_the_parsed_reset(providers, site, skin):
    site.control(reset_in=2100, tz="America/New_York")
    err = failure(providers[skin], turn("[[scenario:rate_limit]] more please"))
    assert err.error_class == "quota" and err.sent is True
    # the site shows HH:MM (seconds cut) in New York time, the account's time zone
    assert 2100 - 90 <= err.retry_after <= 2100, err.retry_after
    assert len(site.prompts("more please")) == 1


@both
def test_capacity_is_a_short_transient_retry(providers, site, skin):
    err = failure(providers[skin], turn("[[scenario:capacity]] busy?"))
    # an overload refusal spent nothing (base.py): the unit is refunded and no attempt burned
    assert err.error_class == "transient" and err.retry_after == 42 and err.sent is False


@both
def test_an_overload_notice_in_the_reply_area_is_refunded_never_an_answer(providers, site, skin):
    """ChatGPT "A lot of people are using Pro right now. Please try again in a few minutes."; Gemini "... Fast
    right now ... didn't count against your Fast limit." rendered where the reply goes: a short transient retry
    with nothing counted (sent=False: the broker refunds the unit and burns no attempt), never an answer."""
    p = providers[skin]
    mode = "deep" if skin == "chatgpt" else "standard"
    t = turn("[[scenario:busy]] explore the seed", mode=mode)
    err = failure(p, t)
    assert err.error_class == "transient" and err.sent is False and err.retry_after == 42, err
    assert f"A lot of people are using {'Pro' if skin == 'chatgpt' else 'Fast'} right now" in err.message
    assert p.store.reply(conversation_key(t), 0) is None          # no transcript entry: it was no answer
    assert len(site.prompts("explore the seed")) == 1


@both
def test_a_limit_notice_in_the_reply_area_is_quota_until_its_reset(providers, site, skin):
    site.control(reset_in=3000, tz="America/New_York")
    p = providers[skin]
    t = turn("[[scenario:limit_in_reply]] one more", mode="deep")
    err = failure(p, t)
    assert err.error_class == "quota" and 3000 - 90 <= err.retry_after <= 3000, err
    assert err.message.startswith("You've reached") and p.store.reply(conversation_key(t), 0) is None


@both
def test_something_went_wrong_in_the_reply_area_is_a_refunded_retry(providers, site, skin):
    """"Something went wrong. There was an error generating a response. Please try again." as the reply: the
    site produced nothing, so nothing is charged (sent=False) and it is retried, never delivered."""
    p = providers[skin]
    t = turn("[[scenario:went_wrong]] critique it")
    err = failure(p, t)
    assert err.error_class == "transient" and err.sent is False, err
    assert err.message.startswith("Something went wrong. There was an error generating a response")
    assert p.store.reply(conversation_key(t), 0) is None


@both
@pytest.mark.parametrize("scenario", ["busy", "went_wrong"])
def test_a_reconcile_that_finds_a_refused_turn_gives_its_unit_back(providers, site, skin, scenario):
    """The worker died while the site showed an overload or "Something went wrong" notice where the reply
    goes (nothing served): the reconcile finds the notice, says send it again (None), and that nothing of
    the attempt was spent (Provider.unspent), so the broker refunds its unit when the turn is sent again."""
    p = providers[skin]
    t = turn(f"[[scenario:{scenario}]] critique it again", conversation=f"refused-{scenario}-{skin}")
    err = failure(p, t)
    assert err.sent is False, err
    assert p.reconcile(t) is None and p.unspent(t)
    assert len(site.prompts("critique it again")) == 1


@both
def test_an_error_message_is_transient(providers, site, skin):
    err = failure(providers[skin], turn("[[scenario:error]] fail please"))
    assert err.error_class == "transient" and err.retry_after is None
    assert "went wrong" in err.message or "wasn't able to finish" in err.message


@both
def test_a_login_wall_is_auth_with_a_screenshot_and_nothing_sent(providers, site, skin):
    p = providers[skin]
    site.control(login_required=True)
    before = set(p.screenshots.glob("*.png")) if p.screenshots.exists() else set()
    err = failure(p, turn("anyone there?"))
    assert err.error_class == "auth" and err.sent is False and "fanoctl backends login" in err.message
    assert set(p.screenshots.glob("*-login.png")) - before
    with pytest.raises(ProviderError) as checked:
        p.check()
    assert checked.value.error_class == "auth"
    assert site.prompts() == []


@pytest.mark.parametrize("skin", list(SKINS))
@pytest.mark.parametrize("wall, said", [("signin", "sign-in needed"), ("human_check", "human check")])
def test_a_sign_in_page_or_human_check_is_reported_as_such_at_once(providers, site, skin, wall, said):
    """The site's own sign-in page or a human check, told only by its text (no login button, no challenge
    frame the selectors know): auth "sign-in needed" / "human check" within seconds, nothing sent — not "the
    page layout may have changed" after ready_timeout."""
    p = providers[skin]
    site.control(wall=wall)
    started = time.monotonic()
    err = failure(p, turn("is anyone home?"))
    assert err.error_class == "auth" and err.sent is False, err
    assert err.message.startswith(said) and "layout" not in err.message, err.message
    assert f"fanoctl backends login {p.account}" in err.message
    assert time.monotonic() - started < 7, "it waited for the composer instead of reading the page"
    assert site.prompts() == []


@pytest.mark.parametrize("skin, deep", [("chatgpt", "missing"), ("gemini", "disabled")])
def test_an_unconfirmed_scarce_mode_is_never_sent(providers, site, skin, deep):
    """Only the deep mode cools down (quota, per mode); the account is not paused."""
    site.control(deep=deep)
    err = failure(providers[skin], turn("needs the deep mode", mode="deep"))
    assert err.error_class == "quota" and err.sent is False and err.retry_after == 7777
    assert "deep mode not available on this page" in err.message
    assert DEEP_LABEL[skin] in err.message and "screenshot" in err.message
    assert site.prompts() == []


@both
def test_a_scarce_mode_that_reads_back_differently_is_not_sent_and_standard_work_goes_on(providers, site, skin):
    """The option is offered and takes the click, but the page still shows the standard mode."""
    p = providers[skin]
    site.control(deep="unapplied")
    err = failure(p, turn("needs the deep mode", mode="deep"))
    assert err.error_class == "quota" and err.sent is False and err.retry_after == 7777
    assert "deep mode not available on this page" in err.message and "could not be confirmed" in err.message
    if skin == "chatgpt":     # the message says what the picker shows instead
        assert "shows 'ChatGPT Auto', not 'Pro'" in err.message, err.message
    shot = err.message.split("screenshot: ", 1)[1].split(")", 1)[0]
    assert Path(shot).is_file()
    assert site.prompts() == []
    reply = send(p, turn("standard still works"))
    assert reply.text.startswith(f"Stand-in {skin} answer") and site.prompts() == ["standard still works"]


@both
def test_a_silent_downgrade_is_never_delivered_as_the_scarce_mode(providers, site, skin):
    """The scarce mode is selected and confirmed, the prompt sent, and the site answers in the standard mode
    (ChatGPT: "switched you to the latest default model" and the picker reads Auto; Gemini: the Deep Think
    chip is gone): quota on the deep mode (the broker refunds the deep unit and cools it), with the evidence
    and a screenshot; the answer is not recorded. A standard turn on the same page is an answer."""
    p = providers[skin]
    site.control(downgrade=True)
    t = turn("a hard question", mode="deep")
    err = failure(p, t)
    assert err.error_class == "quota" and err.retry_after == 7777 and err.sent is True, err
    assert err.message.startswith(f"downgrade: {DEEP_LABEL[skin]} was selected and confirmed"), err.message
    if skin == "chatgpt":
        assert "switched you to the latest default model" in err.message
    else:
        assert "Deep Think" in err.message
    assert Path(err.message.split("screenshot: ", 1)[1].split(")", 1)[0]).is_file()
    assert p.store.reply(conversation_key(t), 0) is None
    assert site.submits[0]["mode"] == DEEP_LABEL[skin] and site.submits[0]["served"] != DEEP_LABEL[skin]
    reply = send(p, turn("an easy one"))
    assert reply.text.startswith(f"Stand-in {skin} answer")


@both
def test_a_deep_reply_whose_mode_cannot_be_read_back_is_not_recorded_as_deep(providers, site, skin, monkeypatch):
    """The browser fails while re-reading the mode after a deep reply: nothing confirms the scarce mode, so
    it is the downgrade path (quota on deep, the reply not recorded), never "deep, unconfirmed in meta". A
    standard reply needs no confirmation and is delivered."""
    from services.backends.web.page import ChatPage, playwright_error
    p = providers[skin]
    real = ChatPage.verify_mode

    def verify_mode(self, mode, spec, label, timeout=None):
        if timeout == 0.0:        # the read-back after the reply (the one before sending waits)
            raise playwright_error()("Target page, context or browser has been closed")
        return real(self, mode, spec, label) if timeout is None else real(self, mode, spec, label, timeout)

    monkeypatch.setattr(ChatPage, "verify_mode", verify_mode)
    t = turn("a hard question", mode="deep")
    err = failure(p, t)
    assert err.error_class == "quota" and err.retry_after == 7777 and err.sent is True, err
    assert err.message.startswith("downgrade: ") and "could not be read back" in err.message, err.message
    assert p.store.reply(conversation_key(t), 0) is None
    assert site.submits[0]["mode"] == DEEP_LABEL[skin]
    reply = send(p, turn("an easy one"))
    assert reply.text.startswith(f"Stand-in {skin} answer") and "could not be read back" in reply.meta["mode_after"]


def test_the_deep_think_limit_snack_bar_over_the_composer_cools_the_deep_mode_until_its_time(providers, site):
    """Gemini: picking Deep Think brings up "You've reached your limit for chats with Deep Think until <time>"
    as a snack bar over the composer. It is read (quota until the stated time, nothing sent; the broker cools
    the deep mode only), not clicked into until a timeout and retried as a browser error."""
    p = providers["gemini"]
    site.control(deep_limit=True, reset_in=5400, tz="America/New_York")
    started = time.monotonic()
    err = failure(p, turn("think deeply", mode="deep"))
    assert err.error_class == "quota" and err.sent is False, err
    assert "limit for chats with Deep Think until" in err.message and "browser error" not in err.message
    assert 5400 - 90 <= err.retry_after <= 5400, err.retry_after
    assert time.monotonic() - started < 10
    assert site.prompts() == []
    assert send(p, turn("a quick one")).text.startswith("Stand-in gemini answer [Fast]")


@both
def test_a_short_answer_mentioning_quota_and_an_error_is_an_answer(providers, site, skin):
    reply = send(providers[skin], turn("[[scenario:short]] what is the quota?"))
    assert reply.text == SHORT_ANSWER


@both
def test_a_layout_change_after_sending_is_reported_reconcilable_and_pauses_the_account(providers, site, skin,
                                                                                          monkeypatch):
    """The composer takes the prompt, then the reply is rendered in elements the selectors do not match: the
    turn fails unknown (reconcilable, never re-sent) with a screenshot within the grace period, not the
    turn timeout; the account's next request pauses it (auth, nothing sent); once the page matches again,
    reconcile reads the answer of the one prompt sent."""
    p = providers[skin]
    monkeypatch.setattr(p, "cfg", dataclasses.replace(p.cfg, progress_grace=2.0))
    site.control(layout="changed-after-send")
    t = turn("where did the reply go?")
    started = time.monotonic()
    err = failure(p, t)
    assert time.monotonic() - started < 15, "the wait ran out the turn timeout instead of the grace period"
    assert err.error_class == "unknown" and err.sent is True
    assert "layout may have changed" in err.message and "no assistant turn" in err.message
    shot = err.message.split("screenshot: ", 1)[1].split(")", 1)[0]
    assert Path(shot).is_file() and shot.endswith("-layout.png")
    assert p.store.handle(conversation_key(t)).get("url")        # reconcilable from its URL
    paused = failure(p, turn("the next task"))
    assert paused.error_class == "auth" and paused.sent is False and shot in paused.message
    with pytest.raises(ProviderError) as still:                  # reconciling a still-broken page: auth
        p.reconcile(t)
    assert still.value.error_class == "auth" and "layout may have changed" in still.value.message
    site.control(layout="normal")      # the selectors match the page again (in real life: a fixed site file)
    reply = p.reconcile(t)
    assert reply.meta["reconciled"] and reply.text.startswith(f"Stand-in {skin} answer")
    assert site.prompts() == ["where did the reply go?"]


def test_check_reports_a_missing_mode_control(providers, site, monkeypatch):
    p = providers["chatgpt"]
    deep = p.site.modes["deep"]
    moved = dataclasses.replace(deep, steps=(dataclasses.replace(deep.steps[0], selectors=("#model-picker-v2",)),)
                                + deep.steps[1:])
    monkeypatch.setattr(p, "site", dataclasses.replace(p.site, modes=dict(p.site.modes, deep=moved)))
    out = p.check()
    assert out["ok"] is False and "mode deep" in out["detail"] and "#model-picker-v2" in out["detail"]
    assert "screenshot" in out["detail"]


def test_a_changed_layout_fails_closed_with_a_screenshot(providers, site, monkeypatch):
    p = providers["chatgpt"]
    broken = dataclasses.replace(p.site, selectors=dict(p.site.selectors, composer=("#prompt-textarea-v2",)))
    monkeypatch.setattr(p, "site", broken)
    monkeypatch.setattr(p, "cfg", dataclasses.replace(p.cfg, ready_timeout=1.5))
    err = failure(p, turn("hello?"))
    assert err.error_class == "auth" and err.sent is False and "no composer" in err.message
    assert Path(err.message.rsplit("screenshot: ", 1)[1].rstrip(")")).is_file()
    assert site.prompts() == []


def test_a_dead_or_hung_browser_is_replaced_before_sending(providers, site, monkeypatch):
    p = providers["chatgpt"]
    send(p, turn("warm up"))
    crashed = profile_alive(p.profile)
    for pid in crashed:
        os.kill(pid, signal.SIGKILL)          # crashed between two requests
    wait_for(lambda: not profile_alive(p.profile), 10, what="the browser to die")
    assert send(p, turn("after a crash")).text.startswith("Stand-in chatgpt answer")
    hung = profile_alive(p.profile)
    assert hung and not set(hung) & set(crashed)
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)          # frozen: opening the page times out, the browser is killed
    monkeypatch.setattr(p, "cfg", dataclasses.replace(p.cfg, ready_timeout=2.0))
    assert send(p, turn("after a hang")).text.startswith("Stand-in chatgpt answer")
    assert not set(profile_alive(p.profile)) & set(hung)
    assert site.prompts() == ["warm up", "after a crash", "after a hang"]


def test_check_reports_a_signed_in_account(providers):
    out = providers["gemini"].check()
    assert out["ok"] is True and "/app" in out["url"]


# --- cancel, crash, reconcile ----------------------------------------------------------------------------

def test_cancel_mid_answer_then_reconcile_reads_the_reply(providers, site):
    p = providers["chatgpt"]
    site.control(speed=3.0)           # "slow" takes 3 s instead of 9
    t = turn("[[scenario:slow]] take your time")
    key = conversation_key(t)
    cancel_at = []

    def cancelled():
        if not cancel_at and p.store.handle(key).get("url"):
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    with pytest.raises(ProviderError) as err:
        p.send(t, cancelled)
    assert err.value.error_class == "unknown" and err.value.sent is True
    assert time.monotonic() - cancel_at[0] < 1.0, "cancel was not prompt"
    reply = p.reconcile(t)
    assert reply.meta["reconciled"] and reply.text.startswith("Stand-in chatgpt answer [Auto] to: take your time")
    assert reply.text.endswith("That is all.")
    assert len(site.prompts("take your time")) == 1


def _cancelled_mid_answer(p, t):
    """Send ``t`` and cancel it once its URL is recorded: the turn is left unknown, as a killed worker's."""
    key = conversation_key(t)
    cancel_at = []

    def cancelled():
        if not cancel_at and p.store.handle(key).get("url"):
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    with pytest.raises(ProviderError) as err:
        p.send(t, cancelled)
    assert err.value.error_class == "unknown" and err.value.sent is True


@both
@pytest.mark.parametrize("downgrade", [False, True], ids=["confirmed", "downgraded"])
def test_a_reconciled_deep_turn_reports_the_mode_the_page_confirms(providers, site, skin, downgrade):
    """Issue 16: a reconciled deep turn's served.mode came from the lease, whatever the page showed. The
    reopened conversation now decides: the turn's own model label naming the scarce mode confirms it (the
    reply says mode deep); a downgraded turn (the label reads Auto / Fast, or the page says another model
    answered) is never delivered as deep — a quota error that cools the deep mode (not sent: this lease sent
    nothing), and the next reconcile of that attempt lets it be sent afresh."""
    p = providers[skin]
    site.control(speed=3.0, downgrade=downgrade)
    t = turn("[[scenario:slow]] think it through", mode="deep")
    _cancelled_mid_answer(p, t)
    label, served = DEEP_LABEL[skin], {"chatgpt": "Auto", "gemini": "Fast"}[skin]
    if not downgrade:
        reply = p.reconcile(t)
        assert reply.meta["reconciled"] and reply.meta["mode"] == "deep", reply.meta
        assert reply.text.startswith(f"Stand-in {skin} answer [{label}] to: think it through")
        assert "confirmed by the turn's model label" in reply.meta["mode_after"] and label in reply.meta["mode_after"]
    else:
        with pytest.raises(ProviderError) as err:
            p.reconcile(t)
        e = err.value
        assert e.error_class == "quota" and e.sent is False and e.retry_after == FAST["mode_retry"], e
        assert e.message.startswith("downgrade: the reopened") and served in e.message or "another model" in e.message
        assert p.store.reply(conversation_key(t), 0) is None         # never recorded as the turn's answer
        assert p.reconcile(t) is None                               # settled: the next attempt sends afresh
    assert len(site.prompts("think it through")) == 1


def test_a_reconciled_deep_turn_without_a_model_label_is_unconfirmed(providers, site, monkeypatch):
    """A site file that names no turn_mode element cannot confirm a reconciled scarce turn: unconfirmed is
    treated as not deep (quota: deep cools), never delivered as deep."""
    p = providers["chatgpt"]
    site.control(speed=3.0)
    t = turn("[[scenario:slow]] no label here", mode="deep")
    _cancelled_mid_answer(p, t)
    monkeypatch.setitem(p.site.selectors, "turn_mode", ())     # a page object is made per request
    with pytest.raises(ProviderError) as err:
        p.reconcile(t)
    assert err.value.error_class == "quota" and "names no model for the turn" in err.value.message


_WORKER = textwrap.dedent("""
    import sys
    from services.backends.base import Turn
    from services.backends.chatgpt import ChatGPTProvider
    from shared.clock import Clock
    import json
    settings = json.loads(sys.argv[1])
    p = ChatGPTProvider("crashy", settings, Clock(), sys.argv[2])
    p.start()
    p.send(Turn(task_id=7, epoch=1, attempt=1, account="crashy", mode="standard", module="test", kind="ask",
                prompt="[[scenario:slow]] survive the crash"), lambda: False)
    print("finished: the test should have killed me", flush=True)
""")


def test_worker_killed_mid_answer_then_a_fresh_provider_reconciles(site, root, chromium_path):
    """kill -9 of the worker while the site is still answering; its browser is left hanging (stopped, like
    a frozen Chromium). A new incarnation kills that browser at start, reopens the URL and reads the
    answer; the site saw the prompt exactly once."""
    settings = dict(FAST, url=site.url, chromium=chromium_path)
    data = root / "crash"
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(settings), str(data)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    profile = (data / "backends" / "crashy" / "profile").resolve()
    store = ConversationStore(data / "backends" / "crashy" / "conversations")
    try:
        wait_for(lambda: store.handle("task-7").get("url"), 30, interval=0.05, what="the conversation URL")
        browser = profile_alive(profile)
        assert browser, "no browser on the profile"
        for pid in browser:       # a frozen browser: it will not notice its driver dying
            os.kill(pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert profile_alive(profile), "the hung browser should still be there"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert store.reply("task-7", 0) is None   # it died before the answer
    fresh = ChatGPTProvider("crashy", settings, Clock(), data)
    try:
        fresh.start()
        assert profile_alive(profile) == [], "start() must kill the previous incarnation's browser"
        reply = fresh.reconcile(Turn(task_id=7, epoch=2, attempt=1, account="crashy", mode="standard",
                                     module="test", kind="ask", prompt="[[scenario:slow]] survive the crash"))
        assert reply is not None and reply.meta["reconciled"]
        assert reply.text.startswith("Stand-in chatgpt answer [Auto] to: survive the crash")
        assert reply.text.endswith("That is all.")
    finally:
        fresh.close()
    assert len(site.prompts("survive the crash")) == 1


_URL_WORKER = textwrap.dedent("""
    import sys
    from services.backends.base import Turn
    from services.backends.chatgpt import ChatGPTProvider
    from shared.clock import Clock
    import json
    settings = json.loads(sys.argv[1])
    p = ChatGPTProvider("urlless", settings, Clock(), sys.argv[2])
    p.start()
    p.send(Turn(task_id=8, epoch=1, attempt=1, account="urlless", mode="standard", module="test", kind="ask",
                prompt=sys.argv[3]), lambda: False)
    print("finished: the test should have killed me", flush=True)
""")


def test_worker_killed_before_the_real_url_showed_finds_the_turn_in_the_history(site, root, chromium_path):
    """ChatGPT shows a transient /c/WEB:... URL first and the real one seconds later (~15 s on the real site);
    a kill -9 in between leaves the turn marked sent with no URL. A fresh worker finds the conversation in the
    site's history list by its first prompt (an older conversation with another prompt is not taken), records
    its URL and reads the answer: nothing is re-sent."""
    site.control(real_url_after=20)
    settings = dict(FAST, url=site.url, chromium=chromium_path)
    data = root / "urlless"
    fresh = ChatGPTProvider("urlless", settings, Clock(), data)
    try:      # an older conversation in the history list
        fresh.start()
        send(fresh, turn("an older question", task_id=99))
    finally:
        fresh.close()
    prompt = "[[scenario:slow]] which conversation was I in?"
    proc = subprocess.Popen([sys.executable, "-c", _URL_WORKER, json.dumps(settings), str(data), prompt], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = ConversationStore(data / "backends" / "urlless" / "conversations")
    try:
        wait_for(lambda: site.prompts(prompt), 30, interval=0.05, what="the prompt to reach the site")
        time.sleep(2.0)       # the answer is streaming, the real URL not shown yet
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    handle = store.handle("task-8")
    assert handle.get("sent_turn") == 0 and not handle.get("url") and len(handle["history_before"]) == 1
    fresh = ChatGPTProvider("urlless", settings, Clock(), data)
    try:
        fresh.start()
        reply = fresh.reconcile(Turn(task_id=8, epoch=2, attempt=1, account="urlless", mode="standard",
                                     module="test", kind="ask", prompt=prompt))
        assert reply is not None and reply.meta["reconciled"] and not fresh.unspent(Turn(
            task_id=8, epoch=1, attempt=1, account="urlless", mode="standard", module="test", kind="ask",
            prompt=prompt))
        assert reply.text.startswith("Stand-in chatgpt answer [Auto] to: which conversation was I in?")
        assert reply.text.endswith("That is all.")
        url = store.handle("task-8")["url"]
        assert url == reply.meta["url"] and url.endswith("/c/" + site.submits[-1]["conversation"])
    finally:
        fresh.close()
    assert site.prompts(prompt) == [prompt]


def test_an_answer_before_the_real_url_waits_for_it_so_the_next_turn_continues(providers, site):
    """The answer is complete while ChatGPT still shows the transient /c/WEB:... URL: the real URL is awaited
    and recorded (never the transient one), so the conversation's next turn reopens it."""
    p = providers["chatgpt"]
    site.control(real_url_after=3)
    first = send(p, turn("quick one", conversation="early-conv", index=0))
    assert "WEB:" not in first.meta["url"] and first.meta["url"].endswith("/c/" + site.submits[0]["conversation"])
    second = send(p, turn("and a follow-up", conversation="early-conv", index=1))
    assert second.meta["url"] == first.meta["url"]
    assert site.submits[1]["conversation"] == site.submits[0]["conversation"]


def test_a_new_chat_missing_from_the_history_is_sent_only_once_it_is_certainly_lost(providers, site, monkeypatch):
    """Marked sent with no URL, and no new conversation in the history list holds the prompt: while the send
    is younger than HISTORY_GRACE the list is looked at again (it may lag), then None (send it)."""
    p = providers["chatgpt"]
    send(p, turn("already in the history"))
    t = turn("lost before it left")
    key = conversation_key(t)
    listed = [site.url + "/c/" + site.submits[0]["conversation"]]
    p.store.set_handle(key, sent_turn=0, prior_users=0, url=None, sent_at=time.time(), history_before=listed)
    p.store.mark_sent(key, 0, t.prompt, task_id=t.task_id, attempt=t.attempt)
    monkeypatch.setattr("services.backends.web.recover.HISTORY_GRACE", 4.0)
    monkeypatch.setattr("services.backends.web.recover.HISTORY_POLL", 1.0)
    started = time.monotonic()
    assert p.reconcile(t) is None
    assert time.monotonic() - started >= 3.5, "a recent send was called lost without looking again"
    p.store.set_handle(key, sent_at=time.time() - 3600)
    with monkeypatch.context() as m:      # a history list the site file cannot find: it cannot tell
        m.setattr(p, "site", dataclasses.replace(p.site, selectors=dict(p.site.selectors, history_item=("#nope a",))))
        with pytest.raises(ProviderError) as err:
            p.reconcile(t)
        assert err.value.error_class == "unknown" and "no history list" in err.value.message
    assert p.reconcile(t) is None and p.unspent(t)      # certainly lost: its unit is refunded
    assert site.prompts("lost before it left") == []


def test_reconcile_of_a_follow_up_that_never_arrived_is_safe_to_send(providers, site):
    """Marked sent, but the reopened conversation does not show the prompt: None (send it)."""
    p = providers["gemini"]
    send(p, turn("opening question", conversation="conv-lost", index=0))
    lost = turn("lost in transit", conversation="conv-lost", index=1)
    p.store.set_handle("conv-lost", sent_turn=1, prior_users=1)
    p.store.mark_sent("conv-lost", 1, lost.prompt, task_id=lost.task_id, attempt=lost.attempt)
    assert p.reconcile(lost) is None
    assert p.unspent(lost)          # it never arrived: the worker has the broker refund that attempt's unit
    assert site.prompts("lost in transit") == []


@both
def test_a_re_ask_at_the_same_turn_is_never_answered_with_the_first_tasks_reply(providers, site, skin):
    """The explorer re-asks after an unusable answer: a new task at the same thread and turn index. Its
    outcome unknown, reconcile reads its own prompt's reply from the page, never the first task's."""
    p = providers[skin]
    conv = f"explorer:reask.{skin}"
    first = send(p, turn("explore the seed", conversation=conv, index=1))
    assert "to: explore the seed" in first.text
    # marked sent, then the worker died before the prompt left: nothing to reconcile, send it
    again = turn("[[scenario:slow]] explore the seed, asked differently", conversation=conv, index=1)
    p.store.set_handle(conv, sent_turn=1, prior_users=1)
    p.store.mark_sent(conv, 1, again.prompt, task_id=again.task_id, attempt=1)
    assert p.reconcile(again) is None
    # sent for real and cut off mid-answer: reconcile reads this prompt's answer from the reopened page
    site.control(speed=3.0)
    again = dataclasses.replace(again, attempt=2)
    with pytest.raises(ProviderError) as err:
        p.send(again, lambda: bool(site.prompts("asked differently")))
    assert err.value.error_class == "unknown" and err.value.sent is True
    reply = p.reconcile(again)
    assert reply.meta["reconciled"] and "to: explore the seed, asked differently" in reply.text
    assert reply.text != first.text and len(site.prompts("asked differently")) == 1


# --- login ------------------------------------------------------------------------------------------------

def test_login_then_check_uses_the_persistent_profile(site, root, chromium_path):
    site.control(login_required=True, auto_login=True)    # the wall signs itself in, like a person would
    p = make("chatgpt", site, root, chromium_path, account="login-1")
    try:
        out = p.login(headless=True)
        assert out["ok"] is True, out
        assert not p.lock.held and profile_alive(p.profile) == []     # login cleans up after itself
        assert p.check()["ok"] is True        # a new browser on the same profile is still signed in
        other = make("chatgpt", site, root, chromium_path, account="login-2")
        site.control(auto_login=False)
        with pytest.raises(ProviderError) as err:
            other.check()                      # a profile that never signed in meets the wall
        assert err.value.error_class == "auth"
    finally:
        p.close()


# --- the whole tree -----------------------------------------------------------------------------------------

TREE_ACCOUNTS = """
[accounts.web-gpt]
backend = "chatgpt"
modes = ["standard"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60

[accounts.web-gem]
backend = "gemini"
modes = ["standard"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60
"""


def test_fanoctl_ask_through_a_chatgpt_and_a_gemini_account_and_an_expired_login_pauses(site, chromium_path):
    with running_tree("fwt", TREE_ACCOUNTS.format(url=site.url, chromium=chromium_path)) as tree:
        profiles = [(tree.root / "data" / "backends" / name / "profile").resolve() for name in ("web-gpt", "web-gem")]
        res = run_fanoctl(tree, "ask", "hello", "--backend", "web-gpt", "--wait", timeout=90)
        assert res.returncode == 0, res.stderr + res.stdout
        assert res.stdout.startswith("Stand-in chatgpt answer [Auto] to: hello"), res.stdout
        res = run_fanoctl(tree, "ask", "hi gemini", "--backend", "web-gem", "--wait", timeout=90)
        assert res.returncode == 0, res.stderr + res.stdout
        assert res.stdout.startswith("Stand-in gemini answer"), res.stdout
        assert site.prompts() == ["hello", "hi gemini"]

        # the site logs everyone out: the next ask meets a login wall, the account is paused for the
        # operator (shown by backends ls), nothing is sent; signing in again and resuming finishes it
        site.control(login_required=True)
        res = run_fanoctl(tree, "--json", "ask", "after logout", "--backend", "web-gpt")
        assert res.returncode == 0, res.stderr
        tid = json.loads(res.stdout)["task"]["id"]
        row = wait_paused_for_auth(tree, "web-gpt")       # by the login wall
        assert "log" in row["pause_reason"].lower()
        text = run_fanoctl(tree, "backends", "ls").stdout
        assert "web-gpt" in text and "paused" in text and "sign-in needed" in text, text
        why = run_fanoctl(tree, "queue", "why", str(tid)).stdout
        assert "sign-in needed" in why, why
        task = json.loads(run_fanoctl(tree, "--json", "queue", "show", str(tid)).stdout)
        assert task["state"] == "PENDING" and task["error"]["class"] == "auth" and task["error"]["sent"] is False
        assert site.prompts() == ["hello", "hi gemini"]
        site.control(login_required=False)
        assert run_fanoctl(tree, "backends", "resume", "web-gpt").returncode == 0
        wait_for(lambda: json.loads(run_fanoctl(tree, "--json", "queue", "show", str(tid)).stdout)["state"] == "DONE",
                 90, interval=0.5, what="the ask to finish after the account was resumed")
        assert site.prompts() == ["hello", "hi gemini", "after logout"]
    # the tree is stopped (no orphaned program); no browser of either profile may outlive it either
    assert [pid for profile in profiles for pid in profile_alive(profile)] == []


DOWNGRADE_TREE = """
[accounts.web-pro]
backend = "chatgpt"
modes = ["standard", "deep"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60
capacity_retry = 1
mode_retry = 3600
timezone = "UTC"

[quotas.web-pro.standard]
windows = ["50/day@00:00 UTC"]

[quotas.web-pro.deep]
windows = ["5/day@00:00 UTC"]
"""


def test_refunds_and_a_downgrade_through_the_broker(site, chromium_path):
    """Through the whole tree: an overload notice in the reply area gives its attempt and unit back (a
    refusal), and the task is answered once the site recovers, one unit charged in all; a deep task the site
    silently downgrades is never recorded as deep — the deep unit is refunded, deep cools with the reason
    "downgrade: ...", and the task (which allows it) falls back to standard: served.mode says standard."""
    from shared.client import BrokerClient
    with running_tree("fwd", DOWNGRADE_TREE.format(url=site.url, chromium=chromium_path)) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test-web", timeout=5.0)
        try:
            def used(mode):
                q = json.loads(run_fanoctl(tree, "--json", "quota", "show", "web-pro").stdout)["quotas"]
                return next(x for x in q if x["mode"] == mode)

            site.control(scenario="busy")
            tid = client.submit("busy-1", "adhoc", "ask", {"prompt": "are you free?"},
                                requires={"backends": ["web-pro"]})["task"]["id"]
            wait_for(lambda: client.get(tid).get("refusals", 0) >= 2, 90, interval=0.5,
                     what="the overload notice to be refused twice")
            task = client.get(tid)
            assert task["error"]["class"] == "transient" and task["error"]["sent"] is False
            assert "A lot of people are using Auto right now" in task["error"]["message"]
            site.control(scenario="normal")
            wait_for(lambda: client.get(tid)["state"] == "DONE", 90, interval=0.5, what="the ask to be answered")
            task = client.get(tid)
            assert task["attempts"] == 1 and task["result"]["text"].startswith("Stand-in chatgpt answer [Auto]")
            assert used("standard")["windows"][0]["used"] == 1, used("standard")
            assert len(site.prompts("are you free?")) >= 3          # two refused, one answered

            site.control(downgrade=True)
            tid = client.submit("deep-1", "adhoc", "ask", {"prompt": "think hard"},
                                requires={"backends": ["web-pro"], "mode": "deep", "deep_fallback": True})["task"]["id"]
            wait_for(lambda: client.get(tid)["state"] == "DONE", 120, interval=0.5, what="the deep ask to end")
            task = client.get(tid)
            assert task["served"]["mode"] == "standard", task["served"]
            assert task["result"]["text"].startswith("Stand-in chatgpt answer [Auto] to: think hard")
            deep = used("deep")
            assert deep["windows"][0]["used"] == 0, deep            # the downgraded deep request was refunded
            assert deep["cooldown"] and deep["cooldown"]["reason"].startswith("downgrade: Pro was selected"), deep
            assert [s["mode"] for s in site.submits if "think hard" in s["prompt"]] == ["Pro", "Auto"]
            status = run_fanoctl(tree, "status").stdout        # the operator sees why deep is cooling
            assert "account web-pro: deep cooling until" in status and "downgrade: Pro was selected" in status, status
            # backends ls says why deep cools, although the standard fallback answered since (LAST is clean)
            ls = run_fanoctl(tree, "backends", "ls").stdout
            assert "deep until" in ls and "downgrade: Pro was selected" in ls, ls
            rows = json.loads(run_fanoctl(tree, "--json", "backends", "ls").stdout)["backends"]
            cooling = next(b for b in rows if b["account"] == "web-pro")["cooldowns"]
            assert cooling["deep"]["reason"].startswith("downgrade: Pro was selected"), cooling
            # a deep task that may not fall back waits for deep: queue why names the downgrade and its time
            waiting = client.submit("deep-2", "adhoc", "ask", {"prompt": "only pro will do"},
                                    requires={"backends": ["web-pro"], "mode": "deep"})["task"]["id"]
            why = wait_for(lambda: (lambda w: w if "cooling down until" in w else None)(
                run_fanoctl(tree, "queue", "why", str(waiting)).stdout), 30, interval=0.5, what="queue why")
            assert "web-pro deep cooling down until" in why and "downgrade: Pro was selected" in why, why
            assert fmt_time(cooling["deep"]["until"]) in why, why
            # a limit notice: standard cools until the time the notice names, and both commands say so
            site.control(scenario="rate_limit", reset_in=2100, tz="UTC")
            limited = client.submit("limited-1", "adhoc", "ask", {"prompt": "one more please"},
                                    requires={"backends": ["web-pro"]})["task"]["id"]
            wait_for(lambda: "standard" in next(b for b in json.loads(run_fanoctl(
                tree, "--json", "backends", "ls").stdout)["backends"] if b["account"] == "web-pro")["cooldowns"],
                90, interval=0.5, what="the limit notice to cool standard")
            rows = json.loads(run_fanoctl(tree, "--json", "backends", "ls").stdout)["backends"]
            standard = next(b for b in rows if b["account"] == "web-pro")["cooldowns"]["standard"]
            notice = "You've reached our limit of messages per hour. Please try again after"
            assert notice in standard["reason"] and abs(standard["until"] - (time.time() + 2100)) < 150, standard
            ls = run_fanoctl(tree, "backends", "ls").stdout
            until = local_time(standard["until"], with_date=False)
            assert f"standard until {until}" in ls and notice in ls, ls
            why = run_fanoctl(tree, "queue", "why", str(limited)).stdout
            assert f"web-pro standard cooling down until {fmt_time(standard['until'])}" in why, why
            assert notice in why, why
        finally:
            client.close()


KILL_TREE = """
[broker]
lease_ttl = 6

[scheduler]
lease_ttl = 6

[accounts.web-kill]
backend = "chatgpt"
modes = ["standard"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60

[quotas.web-kill.standard]
windows = ["50/day@00:00 UTC"]
"""


def test_a_worker_killed_before_the_real_url_through_the_broker_is_answered_once_and_charged_once(site,
                                                                                                  chromium_path):
    """Issue 16, item 3 as observed: kill -9 of the worker a couple of seconds after sending, while ChatGPT
    still shows the transient URL. The restarted worker reconciles from the history list: the task ends DONE
    with the answer, the prompt reached the site once, one unit is charged — not PARKED with units charged
    for sends that did not happen."""
    from shared.client import BrokerClient
    site.control(real_url_after=30)
    with running_tree("fwk", KILL_TREE.format(url=site.url, chromium=chromium_path)) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test-web", timeout=5.0)
        try:
            prompt = "[[scenario:slow]] explore the seed (first turn)"
            tid = client.submit("thread-1#1", "adhoc", "ask", {"prompt": prompt, "turn": 1},
                                requires={"backends": ["web-kill"], "conversation": "thread-1"})["task"]["id"]
            wait_for(lambda: site.prompts(prompt), 90, interval=0.1, what="the prompt to reach the site")
            time.sleep(2.0)
            tree.kill("backend-web-kill")
            wait_for(lambda: client.get(tid)["state"] in ("DONE", "PARKED"), 120, interval=0.5,
                     what="the killed turn to be reconciled")
            task = client.get(tid)
            assert task["state"] == "DONE", (task["state"], task["error"], task["history"][-4:])
            assert task["result"]["text"].startswith("Stand-in chatgpt answer [Auto] to: explore the seed")
            assert task["result"]["meta"]["reconciled"] is True
            assert "/c/WEB:" not in task["result"]["meta"]["url"]
            assert site.prompts(prompt) == [prompt]
            q = json.loads(run_fanoctl(tree, "--json", "quota", "show", "web-kill").stdout)["quotas"]
            assert next(x for x in q if x["mode"] == "standard")["windows"][0]["used"] == 1
        finally:
            client.close()


DEEP_KILL_TREE = """
[broker]
lease_ttl = 6

[scheduler]
lease_ttl = 6

[accounts.web-deep]
backend = "chatgpt"
modes = ["standard", "deep"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60
mode_retry = 3600

[quotas.web-deep.standard]
windows = ["50/day@00:00 UTC"]

[quotas.web-deep.deep]
windows = ["5/day@00:00 UTC"]
"""


@pytest.mark.parametrize("downgrade", [False, True], ids=["confirmed", "downgraded"])
def test_a_deep_turn_reconciled_through_the_broker_is_served_in_the_mode_the_page_confirms(site, chromium_path,
                                                                                             downgrade):
    """Issue 16 through the whole tree: kill -9 of the worker while a Pro answer is being written; the
    restarted worker reconciles it from the conversation. Confirmed by the turn's model label, the task ends
    DONE with served.mode deep, one deep unit charged (the reconciling lease's refunded), nothing re-sent.
    Silently downgraded (the page served it in Auto), it is never delivered as deep: the deep mode cools
    ("downgrade: ..."), no deep unit stays counted (the first attempt's is refunded when the turn is sent
    again), and the task, which allows it, is sent again in standard: served.mode standard."""
    from shared.client import BrokerClient
    site.control(speed=2.0, downgrade=downgrade)
    with running_tree("fwr", DEEP_KILL_TREE.format(url=site.url, chromium=chromium_path)) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test-web", timeout=5.0)
        try:
            prompt = "[[scenario:slow]] a deep question (first turn)"
            tid = client.submit("deep-thread#1", "adhoc", "ask", {"prompt": prompt, "turn": 1},
                                requires={"backends": ["web-deep"], "conversation": "deep-thread", "mode": "deep",
                                          "deep_fallback": True})["task"]["id"]
            wait_for(lambda: site.prompts(prompt), 90, interval=0.1, what="the prompt to reach the site")
            time.sleep(1.5)
            tree.kill("backend-web-deep")
            wait_for(lambda: client.get(tid)["state"] in ("DONE", "PARKED"), 150, interval=0.5,
                     what="the killed deep turn to be reconciled")
            task = client.get(tid)
            assert task["state"] == "DONE", (task["state"], task["error"], task["history"][-4:])
            quotas = {q["mode"]: q for q in json.loads(run_fanoctl(tree, "--json", "quota", "show",
                                                                    "web-deep").stdout)["quotas"]}
            if not downgrade:
                assert task["served"]["mode"] == "deep" and task["result"]["meta"]["reconciled"] is True
                assert task["result"]["text"].startswith("Stand-in chatgpt answer [Pro] to: a deep question")
                assert site.prompts(prompt) == [prompt]
                assert quotas["deep"]["windows"][0]["used"] == 1 and quotas["standard"]["windows"][0]["used"] == 0
            else:
                assert task["served"]["mode"] == "standard", task["served"]
                assert task["result"]["text"].startswith("Stand-in chatgpt answer [Auto] to: a deep question")
                assert [s["mode"] for s in site.submits] == ["Pro", "Auto"]
                deep = quotas["deep"]
                assert deep["cooldown"] and "downgrade: the reopened Pro turn" in deep["cooldown"]["reason"], deep
                # no deep answer was served: the first attempt's deep unit came back when the turn was sent
                # again (turn_begin refund_unknown), the reconcile's was never charged; standard paid for it
                assert deep["windows"][0]["used"] == 0 and quotas["standard"]["windows"][0]["used"] == 1
        finally:
            client.close()
