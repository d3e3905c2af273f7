"""The web panel's security (docs/web.md § Security), against the real app on a real socket: sign-in by
form and cookie or by Bearer header, CSRF refusal, the security headers, and the refusal to serve beyond
loopback without a token. No broker runs: the pages used here do not need one (or show the 503 page)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from services.web.app import create_app
from shared.config import load_config
from shared.errors import ExitCode
from shared.settings import SettingsError
from tests.support import REPO, short_tmpdir
from tests.web_support import Session, serve

TOKEN = "correct-horse-battery-staple"


def _config(web: str = ""):
    root = short_tmpdir("fw")
    path = root / "fano.toml"
    path.write_text(f'[paths]\nrun_dir = "{root}/run"\ndata_dir = "{root}/data"\nlog_dir = "{root}/log"\n'
                    f"[web]\n{web}\n")
    return path


@pytest.fixture
def open_panel():
    with serve(create_app(load_config(_config()))) as url:
        yield url


@pytest.fixture
def locked_panel():
    with serve(create_app(load_config(_config(f'token = "{TOKEN}"')))) as url:
        yield url


def test_every_response_carries_a_strict_csp_and_the_other_security_headers(open_panel):
    s = Session(open_panel)
    for path in ("/login", "/static/panel.css", "/no-such-page"):
        r = s.get(path)
        csp = r.header("content-security-policy")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, (path, csp)
        assert r.header("x-content-type-options") == "nosniff", path
        assert r.header("x-frame-options") == "DENY", path


def test_pages_carry_no_inline_script_or_style(open_panel):
    body = Session(open_panel).get("/login").body
    assert '<script src="/static/panel.js"' in body
    assert "<script>" not in body and " style=" not in body and "<style" not in body


def test_without_a_token_the_loopback_panel_needs_no_sign_in(open_panel):
    r = Session(open_panel).get("/live/overview")    # past the gate (404: no live follower in this app)
    assert r.status == 404


def test_with_a_token_every_page_but_the_login_asks_to_sign_in(locked_panel):
    s = Session(locked_panel)
    r = s.get("/queue")
    assert r.status == 303 and r.header("location") == "/login?next=/queue"
    r = s.request("GET", "/live/overview")           # a script (no text/html): 401, not a redirect
    assert r.status == 401 and "Bearer" in r.body
    assert s.get("/login").status == 200 and s.get("/static/panel.js").status == 200


def test_the_bearer_header_signs_a_script_in_and_a_wrong_one_does_not(locked_panel):
    s = Session(locked_panel)
    assert s.request("GET", "/live/overview", headers={"Authorization": f"Bearer {TOKEN}"}).status == 404
    assert s.request("GET", "/live/overview", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status == 401
    assert s.request("GET", "/live/overview", headers={"Authorization": f"Basic {TOKEN}"}).status == 401


def test_the_login_form_sets_an_httponly_strict_cookie_that_is_not_the_token(locked_panel):
    s = Session(locked_panel)
    token = s.csrf("/login")
    r = s.post("/login", {"csrf": token, "token": "wrong-wrong-wrong-wrong", "next": "/queue"})
    assert r.status == 303 and "error=wrong+token" in r.header("location")
    assert "fano_session" not in s.cookies
    r = s.post("/login", {"csrf": token, "token": TOKEN, "next": "/queue"})
    assert r.status == 303 and r.header("location") == "/queue"
    cookie = next(c for c in r.set_cookies if c.startswith("fano_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    assert s.get("/live/overview").status == 404     # signed in
    s.post("/logout", {"csrf": token})
    assert s.get("/live/overview").status == 303     # signed out again


def test_the_login_never_redirects_off_the_panel(locked_panel):
    s = Session(locked_panel)
    token = s.csrf("/login")
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        r = s.post("/login", {"csrf": token, "token": TOKEN, "next": target})
        assert r.status == 303 and r.header("location") == "/", target


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(locked_panel):
    s = Session(locked_panel)
    token = s.csrf("/login")
    r = s.post("/login", {"token": TOKEN})                               # no field
    assert r.status == 403 and "CSRF" in r.body and "fano_session" not in s.cookies
    r = s.post("/login", {"csrf": "forged" + token, "token": TOKEN})     # a wrong one
    assert r.status == 403 and "fano_session" not in s.cookies
    other = Session(locked_panel)                                        # a page elsewhere: no cookie to match
    assert other.post("/login", {"csrf": token, "token": TOKEN}).status == 403
    s.post("/login", {"csrf": token, "token": TOKEN})
    assert "fano_session" in s.cookies
    assert s.post("/logout", {}).status == 403 and "fano_session" in s.cookies
    # the header form of the token (script-driven posts) works as the field does
    assert s.request("POST", "/logout", "", {"X-CSRF-Token": token}).status == 303


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_a_panel_beyond_loopback_without_a_token_is_refused(host):
    with pytest.raises(SettingsError, match="token") as exc:
        load_config(_config(f'host = "{host}"'))
    assert "loopback" in str(exc.value)
    load_config(_config(f'host = "{host}"\ntoken = "{TOKEN}"'))    # with a token it loads


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host):
    assert load_config(_config(f'host = "{host}"')).web.host == host


def test_a_short_token_is_refused():
    with pytest.raises(SettingsError, match="at least 16"):
        load_config(_config('token = "short"'))


def test_the_program_refuses_to_start_beyond_loopback_without_a_token():
    path = _config('host = "0.0.0.0"')
    out = subprocess.run([sys.executable, "-m", "services", "web", "--config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == ExitCode.CONFIG
    assert "web cannot run" in out.stderr and "token" in out.stderr and "loopback" in out.stderr
