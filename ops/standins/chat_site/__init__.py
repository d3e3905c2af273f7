"""Stand-in for the ChatGPT and Gemini web UIs: a stdlib HTTP server plus static pages for two skins.

The pages imitate the real sites' DOM closely enough that the selectors in
``services/backends/web/sites/*.toml`` are realistic (ChatGPT: ``#prompt-textarea`` contenteditable,
``send-button``/``stop-button`` in the composer form, a model switcher with a Pro item, the
``copy-turn-action-button`` action bar, ``/c/<id>`` URLs reached through a transient ``/c/WEB:...``;
Gemini: ``rich-textarea .ql-editor``, a Tools drawer with a Deep Think ``menuitemcheckbox`` and its
deselect chip, ``model-response`` with ``.response-footer.complete``, ``/app/<id>`` URLs).

Both skins have a history list (sidebar, newest first). Controls reproduce what the real sites do to a
client: notices in the reply area (scenarios ``busy``, ``went_wrong``), a silent downgrade, Gemini's Deep
Think limit snack bar over the composer, ChatGPT's transient ``/c/WEB:...`` URL for ``real_url_after``
seconds, and sign-in pages / human checks told only by their text (``wall``).

The server owns the conversations (so a reload of a conversation URL mid-answer shows its progress) and
records every prompt submitted (``GET /__log``), so tests can assert that nothing was sent twice.

Routes::

    GET  /  /c/<id>  /app  /app/<id>     the ChatGPT / Gemini skin (a login wall when signed out)
    GET  /auth/login?next=PATH           signs this browser in (a cookie) and goes to PATH
    GET  /api/config                     {logged_in, deep, auto_login, layout, deep_limit}
    POST /api/submit                     {skin, conversation, prompt, mode} -> {conversation, title}
    GET  /api/conversation/<id>          the conversation with each turn's current state
    GET|POST /__control                  scenario, login_required, auto_login,
                                         deep (ok|missing|disabled|unapplied),
                                         layout (normal|changed-after-send), reset_in (s), tz, speed,
                                         downgrade (a Pro / Deep Think prompt is served in Auto / Fast:
                                         ChatGPT shows "switched you to the latest default model" and its
                                         picker reads Auto; Gemini drops the Deep Think chip),
                                         downgrade_banner (default true; false: ChatGPT shows no banner,
                                         only its mode control and the turn's model button read Auto),
                                         deep_limit (Gemini: picking Deep Think shows its limit snack bar,
                                         "until <reset_in from now>", over the composer),
                                         wall (none|signin|human_check: every page is the site's
                                         sign-in page or a human check, told only by its text),
                                         real_url_after (s: how long ChatGPT shows the transient
                                         /c/WEB:... URL before the conversation's real one; real: ~15),
                                         reviews (research prompts of prompts/ are answered in their
                                         format by the sim's generator; this tunes its review verdicts,
                                         e.g. {"good": 1.0, "agree": 1.0}: every panel blesses)
    GET  /api/history?skin=S             the sidebar's history list, newest first: [{id, title}]
    GET  /__log    POST /__reset         submitted prompts / forget everything

``python -m ops.standins chat-site [--port N] [--scenario NAME] [--login-required]`` runs it in the
foreground on port 8300 by default (the README's example ``url = "http://127.0.0.1:8300"``; ``--port 0``
picks a free port); tests use :class:`ChatSiteServer` in-process (``start()``/``stop()``/``url``, a free
port).
"""
from __future__ import annotations

import argparse
import http.cookies
import json
import re
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ops.standins.chat_site.scenarios import SCENARIOS, clean, reset_clock, scenario_of, turn_state
from ops.standins.server import StandinServer, reviews_option, serve_in_foreground

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"chatgpt.html", "chatgpt.js", "gemini.html", "gemini.js", "common.js", "site.css"}
COOKIE = "standin_session"
DEFAULT_CONTROL: dict[str, Any] = {"scenario": "normal", "login_required": False, "auto_login": False, "deep": "ok",
                   "layout": "normal", "reset_in": 2100.0, "tz": "UTC", "speed": 1.0, "downgrade": False,
                   "downgrade_banner": True, "deep_limit": False, "real_url_after": 0.3, "wall": "none",
                   "reviews": None}
WALLS = ("none", "signin", "human_check")
# the pages a signed-out or suspicious browser gets instead of the chat (no composer, none of the site files'
# login/challenge selectors: only their text tells)
WALL_PAGES = {
    ("gemini", "signin"): ("Sign in - Google Accounts", "<h1>Sign in</h1><p>to continue to Gemini</p>"
                           "<label>Email or phone <input type='email'></label><a>Forgot email?</a>"
                           "<button type='button'>Next</button>"),
    ("gemini", "human_check"): ("https://gemini.google.com/app", "<p>Our systems have detected unusual traffic from "
                                "your computer network. This page checks to see if it's really you sending the "
                                "requests, and not a robot.</p><div class='g-recaptcha'>I'm not a robot</div>"),
    ("chatgpt", "signin"): ("Log in - OpenAI", "<h1>Welcome back</h1><label>Email address <input type='email'>"
                            "</label><button type='button'>Continue</button><p>Continue with Google</p>"),
    ("chatgpt", "human_check"): ("Just a moment...", "<h1>chatgpt.com</h1><p>Verify you are human by completing the "
                                 "action below.</p><div class='cf-box'>chatgpt.com needs to review the security of "
                                 "your connection before proceeding.</div>"),
}
# downgrade: a prompt sent in the scarce mode is served in the standard one (what the page then shows)
DOWNGRADED = {"Pro": "Auto", "Deep Think": "Fast"}
DEEP_STATES = ("ok", "missing", "disabled", "unapplied")
LAYOUTS = ("normal", "changed-after-send")
DEFAULT_PORT = 8300   # the foreground command's; the README's example account url uses it
_CHATGPT_PAGE = re.compile(r"^/(?:c/[^/]+)?$")
_GEMINI_PAGE = re.compile(r"^/app(?:/[^/]+)?$")


class ChatSiteServer(StandinServer):
    """The stand-in site, startable in-process. ``control(**kw)`` switches behaviour at run time."""

    thread_name = "chat-site"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **control):
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.session = secrets.token_hex(8)
        self._control = dict(DEFAULT_CONTROL)
        self.control(**control)
        self.conversations: dict[str, dict] = {}
        self.submits: list[dict] = []

    # --- in-process API ----------------------------------------------------------------------------------

    def handler_class(self):
        return _Handler

    def control(self, **changes) -> dict:
        bad = set(changes) - set(DEFAULT_CONTROL)
        if bad:
            raise ValueError(f"unknown control key(s): {', '.join(sorted(bad))}")
        if "scenario" in changes and changes["scenario"] not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
        if "deep" in changes and changes["deep"] not in DEEP_STATES:
            raise ValueError(f"deep must be one of {', '.join(DEEP_STATES)}")
        if "wall" in changes and changes["wall"] not in WALLS:
            raise ValueError(f"wall must be one of {', '.join(WALLS)}")
        if "real_url_after" in changes and not (isinstance(changes["real_url_after"], (int, float))
                                                and 0 <= changes["real_url_after"] <= 120):
            raise ValueError("real_url_after must be seconds in [0, 120]")
        for key in ("downgrade", "downgrade_banner", "deep_limit"):
            if key in changes and not isinstance(changes[key], bool):
                raise ValueError(f"{key} must be true or false")
        if "reviews" in changes and not (changes["reviews"] is None or isinstance(changes["reviews"], dict)):
            raise ValueError("reviews must be a table like {\"good\": 1.0, \"agree\": 1.0} or null")
        if "layout" in changes and changes["layout"] not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        with self.lock:
            self._control.update(changes)
            return dict(self._control)

    def reset(self) -> None:
        with self.lock:
            self._control = dict(DEFAULT_CONTROL)
            self.conversations.clear()
            self.submits.clear()

    def prompts(self, containing: str = "") -> list[str]:
        """Prompts submitted so far (those containing ``containing``)."""
        with self.lock:
            return [s["prompt"] for s in self.submits if containing in s["prompt"]]

    # --- state -------------------------------------------------------------------------------------------

    def submit(self, skin: str, conversation: str | None, prompt: str, mode: str, header: str | None) -> dict:
        with self.lock:
            now = time.time()
            if conversation:
                conv = self.conversations.get(conversation)
                if conv is None or conv["skin"] != skin:
                    return {"error": "conversation not found"}
            else:
                conversation = uuid.uuid4().hex[:16] if skin == "gemini" else str(uuid.uuid4())
                conv = {"id": conversation, "skin": skin, "title": clean(prompt)[:40] or "New chat", "turns": []}
                self.conversations[conversation] = conv
            scenario = scenario_of(prompt, header, self._control["scenario"])
            served = DOWNGRADED.get(mode, mode) if self._control["downgrade"] else mode
            conv["turns"].append({"skin": skin, "prompt": prompt, "mode": mode, "served": served,
                                  "scenario": scenario, "created": now,
                                  "downgrade_banner": self._control["downgrade_banner"]})
            self.submits.append({"at": now, "skin": skin, "conversation": conversation, "prompt": prompt,
                                 "mode": mode, "served": served, "scenario": scenario})
            return {"conversation": conversation, "title": conv["title"]}

    def history(self, skin: str) -> list[dict]:
        """The history list of a skin: its conversations, newest first (as the sites' sidebars show them)."""
        with self.lock:
            convs = [c for c in self.conversations.values() if c["skin"] == skin]
            convs.sort(key=lambda c: c["turns"][0]["created"] if c["turns"] else 0, reverse=True)
            return [{"id": c["id"], "title": c["title"]} for c in convs]

    def conversation(self, conv_id: str) -> dict | None:
        with self.lock:
            conv = self.conversations.get(conv_id)
            if conv is None:
                return None
            now = time.time()
            control = dict(self._control)
            turns = [dict(prompt=t["prompt"], mode=t["mode"], served=t["served"],
                          downgrade_banner=t.get("downgrade_banner", True),
                          **turn_state(dict(t, mode=t["served"]), now, control)) for t in conv["turns"]]
            return {"id": conv["id"], "skin": conv["skin"], "title": conv["title"], "turns": turns}


class _Handler(BaseHTTPRequestHandler):
    owner: ChatSiteServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):   # quiet: tests read /__log, not stderr
        pass

    # --- helpers ---

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= 5_000_000:
            return {}
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _logged_in(self) -> bool:
        with self.owner.lock:
            if not self.owner._control["login_required"]:
                return True
        jar = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        return COOKIE in jar and jar[COOKIE].value == self.owner.session

    def _static(self, name: str) -> None:
        if name not in STATIC_FILES:
            self._send(404, b"not found", "text/plain")
            return
        ctype = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
        self._send(200, (STATIC / name).read_bytes(), ctype)

    # --- routes ---

    def do_GET(self):
        parts = urlsplit(self.path)
        path = parts.path
        if _CHATGPT_PAGE.match(path) or _GEMINI_PAGE.match(path):
            skin = "chatgpt" if _CHATGPT_PAGE.match(path) else "gemini"
            with self.owner.lock:
                wall = self.owner._control["wall"]
            if wall != "none":
                title, body = WALL_PAGES[(skin, wall)]
                page = f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
                return self._send(200, page.encode(), "text/html; charset=utf-8")
            return self._static(f"{skin}.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/auth/login":
            target = (parse_qs(parts.query).get("next") or ["/"])[0]
            if not target.startswith("/") or target.startswith("//"):
                target = "/"
            cookie = f"{COOKIE}={self.owner.session}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
            return self._send(302, b"", "text/plain", {"Location": target, "Set-Cookie": cookie})
        if path == "/api/config":
            with self.owner.lock:
                control = dict(self.owner._control)
            limit = None
            if control["deep_limit"]:
                limit = ("You've reached your limit for chats with Deep Think until "
                         f"{reset_clock(time.time(), control, True)}. Upgrade for higher limits.")
            return self._json(200, {"logged_in": self._logged_in(), "deep": control["deep"],
                                    "auto_login": control["auto_login"], "layout": control["layout"],
                                    "deep_limit": limit, "real_url_after": control["real_url_after"]})
        if path == "/api/history":
            if not self._logged_in():
                return self._json(401, {"error": "not signed in"})
            skin = (parse_qs(parts.query).get("skin") or [""])[0]
            return self._json(200, self.owner.history(skin))
        if path.startswith("/api/conversation/"):
            if not self._logged_in():
                return self._json(401, {"error": "not signed in"})
            conv = self.owner.conversation(path.rsplit("/", 1)[1])
            return self._json(200, conv) if conv else self._json(404, {"error": "conversation not found"})
        if path == "/__control":
            return self._json(200, self.owner.control())
        if path == "/__log":
            with self.owner.lock:
                return self._json(200, {"submits": list(self.owner.submits)})
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        self._send(404, b"not found", "text/plain")

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        body = self._body()
        if path == "/api/submit":
            if not self._logged_in():
                return self._json(401, {"error": "not signed in"})
            prompt, skin = body.get("prompt"), body.get("skin")
            if not isinstance(prompt, str) or not prompt.strip() or skin not in ("chatgpt", "gemini"):
                return self._json(400, {"error": "prompt and skin required"})
            out = self.owner.submit(skin, body.get("conversation") or None, prompt, str(body.get("mode") or ""),
                                   self.headers.get("X-Standin-Scenario"))
            return self._json(404 if "error" in out else 200, out)
        if path == "/__control":
            try:
                return self._json(200, self.owner.control(**body))
            except ValueError as exc:
                return self._json(400, {"error": str(exc)})
        if path == "/__reset":
            self.owner.reset()
            return self._json(200, {"ok": True})
        self._send(404, b"not found", "text/plain")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.standins chat-site",
                                     description="Stand-in ChatGPT (/) and Gemini (/app) web UIs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"default {DEFAULT_PORT} (an account's url = \"http://127.0.0.1:{DEFAULT_PORT}\"); "
                             "0: a free port (printed)")
    parser.add_argument("--scenario", default="normal", choices=SCENARIOS)
    parser.add_argument("--login-required", action="store_true")
    parser.add_argument("--deep", default="ok", choices=DEEP_STATES)
    parser.add_argument("--layout", default="normal", choices=LAYOUTS)
    parser.add_argument("--wall", default="none", choices=WALLS, help="every page is a sign-in page or a human check")
    parser.add_argument("--downgrade", action="store_true", help="serve Pro / Deep Think prompts in Auto / Fast")
    parser.add_argument("--no-downgrade-banner", dest="downgrade_banner", action="store_false",
                        help="ChatGPT: a downgrade shows no banner, only the mode label reads Auto")
    parser.add_argument("--deep-limit", action="store_true", help="Gemini: picking Deep Think shows its limit")
    parser.add_argument("--real-url-after", type=float, default=DEFAULT_CONTROL["real_url_after"],
                        help="seconds ChatGPT shows a new chat's transient /c/WEB:... URL (real site: ~15)")
    reviews_option(parser)
    args = parser.parse_args(argv)
    server = ChatSiteServer(args.host, args.port, scenario=args.scenario, login_required=args.login_required,
                            deep=args.deep, layout=args.layout, wall=args.wall, downgrade=args.downgrade,
                            downgrade_banner=args.downgrade_banner, deep_limit=args.deep_limit,
                            real_url_after=args.real_url_after, reviews=args.reviews)
    return serve_in_foreground(server)
