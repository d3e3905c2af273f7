"""The failure rules every API provider shares (services/backends/api_errors.py): one rule of "about
money", read alike by the Claude and the OpenAI-compatible classifiers."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from services.backends import api_errors as AE
from services.backends import claude_errors as ce
from services.backends.openai_wire import classify_http

NOW = 1_790_000_000.0
ROOT = Path(__file__).resolve().parents[2]
REGAIN = "You have reached your specified API usage limits. You will regain access on 2031-01-01 at 00:00 UTC."


def test_a_spend_limit_naming_its_end_cools_every_api_provider_until_then():
    """The same spend-limit message, as each API sends it: both cool the whole account until the named
    time (the OpenAI-compatible classifier used to wait its fixed 6 h instead)."""
    until = AE.regain_at(REGAIN)
    assert until is not None and until > NOW
    claude = ce.classify_status(400, {"retry-after": "5"}, {"type": "error", "error": {
        "type": "invalid_request_error", "message": REGAIN}}, NOW)
    openai = classify_http(429, json.dumps({"error": {"message": REGAIN, "type": "insufficient_quota",
                                                      "code": "insufficient_quota"}}), 5.0, now=NOW)
    for err in (claude, openai):
        assert err.error_class == "quota" and err.scope == "account" and err.sent is False, err
        assert err.retry_after == pytest.approx(until - NOW), err
        assert err.message.startswith("billing: spend limit or credit exhausted, no quick retry"), err.message


@pytest.mark.parametrize("status, etype, code, message, billing", [
    (402, None, None, "payment required", True),
    (429, "insufficient_quota", "insufficient_quota", "quota", True),
    (400, "invalid_request_error", None, "Your credit balance is too low", True),
    (429, "rate_limit_error", None, "too many requests", False),
    (500, "api_error", None, "billing system down", False),
])
def test_is_billing(status, etype, code, message, billing):
    assert AE.is_billing(status, etype, code, message) is billing


def test_the_rules_live_in_one_module_that_each_api_provider_imports():
    """No API provider borrows another provider's error module: each imports the shared one."""
    for name in ("claude_errors.py", "openai_wire.py"):
        tree = ast.parse((ROOT / "services" / "backends" / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "services.backends.api_errors" in imported, name
        others = {"services.backends.claude_errors", "services.backends.openai_wire"}
        others.discard(f"services.backends.{name[:-3]}")
        assert not imported & others, (name, imported & others)
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert not defined & {"is_billing", "parse_retry_after", "billing_error"}, name
