"""WebProvider decisions that need no browser: reconcile from the records, refusals, registry wiring."""
import pytest

from services.backends.base import ProviderError, Turn
from services.backends.chatgpt import ChatGPTProvider
from services.backends.conversations import conversation_key
from services.backends.gemini import GeminiProvider
from services.backends.registry import make_provider
from services.backends.web.browser import ProfileLock
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


def test_reconcile_marked_sent_without_url_is_unknown_not_resent(provider):
    t = turn()
    provider.store.set_handle(conversation_key(t), sent_turn=0, prior_users=0, url=None)
    provider.store.mark_sent(conversation_key(t), 0, t.prompt)
    with pytest.raises(ProviderError) as err:
        provider.reconcile(t)
    assert err.value.error_class == "unknown" and err.value.sent is True
    assert "not re-sent blindly" in err.value.message


def test_reconcile_returns_a_reply_already_captured(provider):
    t = turn(conversation="c1", index=2)
    provider.store.set_handle("c1", url="http://127.0.0.1:9/c/abcdef12-0000", title="T")
    provider.store.record_reply("c1", 2, t.prompt, "the answer")
    reply = provider.reconcile(t)
    assert reply.text == "the answer" and reply.meta["reconciled"] and reply.meta["url"].endswith("/c/abcdef12-0000")


def test_send_refuses_unknown_mode_and_a_follow_up_without_url(tmp_path):
    p = ChatGPTProvider("acct", dict(SETTINGS, modes=["standard"]), FakeClock(), tmp_path)
    with pytest.raises(ProviderError) as err:
        p.send(turn(mode="deep"), lambda: False)
    assert err.value.error_class == "terminal" and err.value.sent is False
    with pytest.raises(ProviderError) as err:       # turn 1 of a conversation whose URL was never recorded
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


def test_registry_builds_both_web_providers(tmp_path):
    for backend, cls in (("chatgpt", ChatGPTProvider), ("gemini", GeminiProvider)):
        account = AccountConfig(f"{backend}-1", backend, ("standard", "deep"), {"chromium": "/bin/true"})
        p = make_provider(account, FakeClock(), tmp_path)
        assert isinstance(p, cls) and p.modes == ["standard", "deep"] and p.site.name == backend
    bad = AccountConfig("bad", "chatgpt", ("standard",), {"chromium": "/bin/true", "colour": "blue"})
    with pytest.raises(ConfigError, match="accounts.bad"):
        make_provider(bad, FakeClock(), tmp_path)
