"""WebProvider decisions that need no browser: reconcile from the records, refusals, registry wiring."""
import pytest

from services.backends.base import ProviderError, Turn
from services.backends.chatgpt import ChatGPTProvider
from services.backends.conversations import conversation_key
from services.backends.gemini import GeminiProvider
from services.backends.registry import make_provider
from services.backends.web.browser import ProfileLock
from services.backends.web.page import SiteProblem
from shared.clock import FakeClock
from shared.config import AccountConfig, ConfigError

SETTINGS = {"chromium": "/bin/true", "url": "http://127.0.0.1:9", "modes": ["standard", "deep"]}


def turn(task_id=1, mode="standard", prompt="hello", conversation=None, index=0):
    return Turn(task_id=task_id, epoch=1, attempt=1, account="acct", mode=mode, module="m", kind="ask",
                prompt=prompt, conversation=conversation, turn_index=index)


@pytest.fixture
def provider(tmp_path):
    p = ChatGPTProvider("acct", dict(SETTINGS), FakeClock(), tmp_path)
    yield p
    p.close()


def test_files_live_under_the_account_dir(provider, tmp_path):
    home = (tmp_path / "backends" / "acct").resolve()
    assert provider.profile == home / "profile" and provider.screenshots == home / "screenshots"
    assert provider.store.root == home / "conversations"


def test_reconcile_of_a_turn_never_marked_sent_is_none(provider):
    assert provider.reconcile(turn()) is None


def test_reconcile_marked_sent_without_its_page_recorded_is_unknown_not_resent(provider):
    t = turn()
    # no handle: sent_turn was never written
    provider.store.mark_sent(conversation_key(t), 0, t.prompt, task_id=t.task_id, attempt=t.attempt)
    with pytest.raises(ProviderError) as err:
        provider.reconcile(t)
    assert err.value.error_class == "unknown" and err.value.sent is True
    assert "not re-sent blindly" in err.value.message


def test_reconcile_returns_a_reply_already_captured(provider):
    t = turn(conversation="c1", index=2)
    provider.store.set_handle("c1", url="http://127.0.0.1:9/c/abcdef12-0000", title="T")
    provider.store.record_reply("c1", 2, t.prompt, "the answer", task_id=t.task_id, attempt=t.attempt)
    reply = provider.reconcile(t)
    assert reply.text == "the answer" and reply.meta["reconciled"] and reply.meta["url"].endswith("/c/abcdef12-0000")


def test_reconcile_never_answers_a_re_ask_with_another_tasks_reply(provider):
    """The explorer's re-ask after an unusable answer is a new task at the same thread and turn index: the
    first task's stored reply (and its send mark) are not this task's, so nothing is reconciled from them."""
    first = turn(task_id=1, conversation="explorer:s.t1", index=1, prompt="explore the seed")
    provider.store.set_handle("explorer:s.t1", url="http://127.0.0.1:9/c/abcdef12-0000", title="T", sent_turn=1,
                              prior_users=0)
    provider.store.mark_sent("explorer:s.t1", 1, first.prompt, task_id=1, attempt=1)
    provider.store.record_reply("explorer:s.t1", 1, first.prompt, "UNUSABLE answer of task 1", task_id=1, attempt=1)
    for prompt in (first.prompt, "explore the seed\n\nNOTE: re-ask 1"):
        assert provider.reconcile(turn(task_id=2, conversation="explorer:s.t1", index=1, prompt=prompt)) is None
    assert provider.reconcile(first).text == "UNUSABLE answer of task 1"


def test_send_refuses_unknown_mode_and_a_follow_up_without_url(tmp_path):
    p = ChatGPTProvider("acct", dict(SETTINGS, modes=["standard"]), FakeClock(), tmp_path)
    with pytest.raises(ProviderError) as err:
        p.send(turn(mode="deep"), lambda: False)
    assert err.value.error_class == "terminal" and err.value.sent is False
    p.store.record_reply("c9", 0, "first", "answered")   # an answered conversation whose page was never recorded
    with pytest.raises(ProviderError) as err:
        p.send(turn(conversation="c9", index=1), lambda: False)
    assert err.value.error_class == "terminal" and err.value.sent is False and "no recorded URL" in err.value.message
    p.close()


def test_a_held_profile_refuses_send_login_and_check(provider, tmp_path, monkeypatch):
    other = ProfileLock(provider.home / "profile.lock")
    assert other.acquire()                     # e.g. a login session in another process
    try:
        with pytest.raises(ProviderError) as err:
            provider.send(turn(), lambda: False)
        assert err.value.error_class == "auth" and err.value.sent is False
        monkeypatch.setenv("DISPLAY", ":99")
        with pytest.raises(ProviderError) as err:
            provider.login()
        assert err.value.error_class == "terminal" and "fanoctl backends pause acct" in err.value.message
        result = provider.check()
        assert result["ok"] is False and result["busy"] is True
    finally:
        other.release()


def test_login_without_a_screen_is_refused(provider, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ProviderError) as err:
        provider.login()
    assert err.value.error_class == "terminal" and "screen" in err.value.message


class FakeChat:
    """Stands in for the page object where only a screenshot is taken."""

    def screenshot(self, path):
        path.write_bytes(b"png")
        return True


def test_a_scarce_mode_that_cannot_be_confirmed_cools_down_that_mode_only(provider):
    problem = SiteProblem("mode", "mode deep (Pro) could not be confirmed: the mode control shows 'ChatGPT Auto', "
                                  "not 'Pro'")
    err = provider._problem_error(FakeChat(), problem, sent=False, mode="deep")
    assert err.error_class == "quota" and err.sent is False and err.retry_after == 21600.0
    assert err.message.startswith("deep mode not available on this page: mode deep (Pro) could not be confirmed")
    assert "screenshot: " in err.message and "standard requests go on" in err.message
    # the standard mode itself cannot be confirmed: nothing can be sent, a person must look
    assert provider._problem_error(FakeChat(), problem, sent=False, mode="standard").error_class == "auth"


def test_a_problem_after_sending_stays_reconcilable_and_pauses_the_next_request(provider):
    layout = SiteProblem("layout", "the page layout may have changed: no assistant turn appeared")
    err = provider._problem_error(FakeChat(), layout, sent=True, mode="standard")
    assert err.error_class == "unknown" and err.sent is True and "never re-sent blindly" in err.message
    with pytest.raises(ProviderError) as paused:      # the next request, before any page is opened
        provider.send(turn(task_id=2), lambda: False)
    assert paused.value.error_class == "auth" and paused.value.sent is False
    assert "no assistant turn appeared" in paused.value.message and "backends resume acct" in paused.value.message
    provider._take_pause_request()                    # consumed once: nothing left
    # a reconcile takes the pause request as well (the runner reports it auth: paused, turn still unknown)
    t = turn(task_id=3)
    provider.store.set_handle(conversation_key(t), sent_turn=0, prior_users=0, url="http://127.0.0.1:9/c/abcdef12-0")
    provider.store.mark_sent(conversation_key(t), 0, t.prompt, task_id=t.task_id, attempt=t.attempt)
    provider._problem_error(FakeChat(), SiteProblem("login", "the site asks to sign in"), sent=True)
    with pytest.raises(ProviderError) as paused:
        provider.reconcile(t)
    assert paused.value.error_class == "auth" and "fanoctl backends login acct" in paused.value.message
    # while reconciling, the same problems are auth at once (the turn stays unknown at the broker)
    err = provider._problem_error(FakeChat(), layout, sent=True, reconciling=True)
    assert err.error_class == "auth" and not provider.pause_file.exists()


def test_registry_builds_both_web_providers(tmp_path):
    for backend, cls in (("chatgpt", ChatGPTProvider), ("gemini", GeminiProvider)):
        account = AccountConfig(f"{backend}-1", backend, ("standard", "deep"), {"chromium": "/bin/true"})
        p = make_provider(account, FakeClock(), tmp_path)
        assert isinstance(p, cls) and p.modes == ["standard", "deep"] and p.site.name == backend
    bad = AccountConfig("bad", "chatgpt", ("standard",), {"chromium": "/bin/true", "colour": "blue"})
    with pytest.raises(ConfigError, match="accounts.bad"):
        make_provider(bad, FakeClock(), tmp_path)


def test_history_candidates_are_the_new_conversations_best_title_first():
    from services.backends.web.recover import candidates, folded
    items = [{"url": "u/4", "title": "Something else"}, {"url": "u/3", "title": "Why does the Fano plane"},
             {"url": "u/2", "title": "New chat"}, {"url": "u/1", "title": "Why does the Fano plane"}]
    got = candidates(items, ["u/1", "u/2"], "Why does the Fano plane have 168 symmetries?")
    assert [i["url"] for i in got] == ["u/3", "u/4"]          # u/1 was there before sending
    assert [i["url"] for i in candidates(items, None, "Why does  the Fano\nplane")] == ["u/3", "u/1", "u/4", "u/2"]
    assert folded(" a\n b  c ") == "a b c" and len(folded("x" * 500)) == 200


def test_a_page_without_composer_is_read_for_a_sign_in_page_or_human_check():
    from services.backends.web.page import ChatPage, PageSample
    from services.backends.web.site import load_site
    gem = ChatPage(None, load_site("gemini"), "https://gemini.google.com")
    assert gem._wall(PageSample(url="https://gemini.google.com/app", title="Sign in - Google Accounts",
                                body="Sign in\nto continue to Gemini\nEmail or phone")) == "login"
    assert gem._wall(PageSample(url="https://gemini.google.com/sorry/index", body="Our systems have detected "
                                "unusual traffic from your computer network.")) == "challenge"
    assert gem._wall(PageSample(url="https://accounts.google.com/v3/signin", body="")) == "login"
    assert gem._wall(PageSample(url="https://gemini.google.com/app", body="")) is None      # still loading
    assert gem._wall(PageSample(url="https://gemini.google.com/app", composer=True,
                                body="to continue to Gemini")) is None
    gpt = ChatPage(None, load_site("chatgpt"), "https://chatgpt.com")
    assert gpt._wall(PageSample(url="https://chatgpt.com/", title="Just a moment...")) == "challenge"
    assert gpt._wall(PageSample(url="https://chatgpt.com/", title="ChatGPT",
                                body="Welcome back\nEmail address")) == "login"
