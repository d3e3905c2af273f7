"""Issue 16 through the running tree: what a web site says reaches the operator, and nothing it says is
recorded as research or as the scarce mode.

The worker programs run under a real supervisord (broker, scheduler, one ``backend-<account>`` program
per account driving real Chromium) against the stand-in chat site; the tests read back through the
broker and ``fanoctl`` only:

* ChatGPT's label-only downgrade: after sending in Pro, the page shows no banner, only its mode control
  (and the turn's model button) reading Auto. The task is not recorded as deep, the deep unit is
  refunded, deep cools with a "downgrade:" reason, and ``served.mode`` says what the page confirmed.
* Gemini's Deep Think limit snack bar (over the composer, when Deep Think is picked): deep cools until
  the time the notice names, nothing is sent, and ``backends ls`` / ``queue why`` show "until HH:MM"
  with the notice.
* ChatGPT's "A lot of people are using Pro right now" in the reply area of a deep task: refused, the deep
  unit given back in the broker's ledger, no attempt burned; answered in Pro once the site recovers.
* Gemini's notices in the reply area ("A lot of people are using Fast right now", "Something went
  wrong"): refused, not answered — no unit charged for them, ``queue why`` names the notice — and the task
  is answered once the site recovers; a human check pauses the account with "human check" shown.
"""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from cli.render import local_time
from services.scheduler.queries import fmt_time
from shared.client import BrokerClient
from tests.support import run_fanoctl, running_tree, wait_for, wait_paused_for_auth

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(300)]

ACCOUNT = """
[accounts.{name}]
backend = "{skin}"
modes = ["standard", "deep"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60
capacity_retry = 10
mode_retry = 3600
timezone = "UTC"

[quotas.{name}.standard]
windows = ["50/day@00:00 UTC"]

[quotas.{name}.deep]
windows = ["5/day@00:00 UTC"]
"""


@pytest.fixture
def site():
    from ops.standins.chat_site import ChatSiteServer
    s = ChatSiteServer().start()
    yield s
    s.stop()


def ctl_json(tree, *args):
    res = run_fanoctl(tree, "--json", *args)
    assert res.returncode == 0, res.stderr + res.stdout
    return json.loads(res.stdout)


def quota(tree, account: str, mode: str) -> dict:
    return next(q for q in ctl_json(tree, "quota", "show", account)["quotas"] if q["mode"] == mode)


def cooldowns(tree, account: str) -> dict:
    return next(b for b in ctl_json(tree, "backends", "ls")["backends"] if b["account"] == account)["cooldowns"]


def test_a_label_only_chatgpt_downgrade_through_the_tree(site, chromium_path):
    """No banner, only the mode label reads Auto after sending: never recorded as Pro."""
    config = ACCOUNT.format(name="web-pro", skin="chatgpt", url=site.url, chromium=chromium_path)
    site.control(downgrade=True, downgrade_banner=False)
    with running_tree("fwl", config) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test-web", timeout=5.0)
        try:
            tid = client.submit("deep-label-1", "adhoc", "ask", {"prompt": "think very hard"},
                                requires={"backends": ["web-pro"], "mode": "deep", "deep_fallback": True})["task"]["id"]
            wait_for(lambda: client.get(tid)["state"] in ("DONE", "PARKED"), 150, interval=0.5,
                     what="the deep ask to end")
            task = client.get(tid)
            assert task["state"] == "DONE", (task["state"], task["error"])
            # the page confirmed Auto: the task says standard, and its answer is the Auto one
            assert task["served"]["mode"] == "standard", task["served"]
            assert task["result"]["text"].startswith("Stand-in chatgpt answer [Auto] to: think very hard")
            assert [s["mode"] for s in site.submits] == ["Pro", "Auto"]
            # the page showed no banner: the mode label alone told
            with urllib.request.urlopen(f"{site.url}/api/conversation/{site.submits[0]['conversation']}",
                                        timeout=5) as resp:
                conv = json.load(resp)
            assert conv["turns"][0]["downgrade_banner"] is False
            # the deep unit came back, deep cools with the reason, standard paid for the answer
            deep = quota(tree, "web-pro", "deep")
            assert deep["windows"][0]["used"] == 0, deep
            reason = deep["cooldown"] and deep["cooldown"]["reason"]
            assert reason and reason.startswith("downgrade: Pro was selected and confirmed before sending"), deep
            assert "Auto" in reason, reason
            assert quota(tree, "web-pro", "standard")["windows"][0]["used"] == 1
            ls = run_fanoctl(tree, "backends", "ls").stdout
            assert "deep until" in ls and "downgrade: Pro was selected" in ls, ls
            # a task that must have Pro waits, and queue why says it is the downgrade, until when
            waiting = client.submit("deep-label-2", "adhoc", "ask", {"prompt": "only pro"},
                                    requires={"backends": ["web-pro"], "mode": "deep"})["task"]["id"]
            until = cooldowns(tree, "web-pro")["deep"]["until"]
            why = wait_for(lambda: (lambda w: w if "cooling down until" in w else None)(
                run_fanoctl(tree, "queue", "why", str(waiting)).stdout), 30, interval=0.5, what="queue why")
            assert f"web-pro deep cooling down until {fmt_time(until)}" in why and "downgrade: Pro" in why, why
        finally:
            client.close()


def test_gemini_deep_think_limit_notices_in_the_reply_and_a_human_check_through_the_tree(site, chromium_path):
    config = ACCOUNT.format(name="web-gem", skin="gemini", url=site.url, chromium=chromium_path)
    with running_tree("fwg", config) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test-web", timeout=5.0)
        try:
            # 1. the Deep Think limit snack bar: deep cools until the time it names, nothing is sent
            site.control(deep_limit=True, reset_in=3600, tz="UTC")
            deep_tid = client.submit("gem-deep-1", "adhoc", "ask", {"prompt": "a deep question"},
                                     requires={"backends": ["web-gem"], "mode": "deep"})["task"]["id"]
            wait_for(lambda: "deep" in cooldowns(tree, "web-gem"), 120, interval=0.5,
                     what="the Deep Think limit to cool deep")
            cool = cooldowns(tree, "web-gem")["deep"]
            notice = "You've reached your limit for chats with Deep Think until"
            assert notice in cool["reason"] and abs(cool["until"] - (time.time() + 3600)) < 150, cool
            assert "Timeout" not in cool["reason"], cool
            ls = run_fanoctl(tree, "backends", "ls").stdout
            assert f"deep until {local_time(cool['until'], with_date=False)}" in ls and notice in ls, ls
            why = wait_for(lambda: (lambda w: w if "cooling down until" in w else None)(
                run_fanoctl(tree, "queue", "why", str(deep_tid)).stdout), 30, interval=0.5, what="queue why")
            assert f"web-gem deep cooling down until {fmt_time(cool['until'])}" in why and notice in why, why
            assert site.prompts() == [] and quota(tree, "web-gem", "deep")["windows"][0]["used"] == 0
            assert client.get(deep_tid)["state"] == "PENDING"

            # 2. notices in the reply area are refused, never answers: no unit for them, queue why names them
            for scenario, said in (("busy", "A lot of people are using Fast right now"),
                                   ("went_wrong", "Something went wrong")):
                site.control(scenario=scenario)
                tid = client.submit(f"gem-{scenario}", "adhoc", "ask", {"prompt": f"are you there ({scenario})?"},
                                    requires={"backends": ["web-gem"]})["task"]["id"]
                wait_for(lambda tid=tid: client.get(tid).get("refusals", 0) >= 1, 90, interval=0.3,
                         what=f"the {scenario} notice to be refused")
                task = client.get(tid)
                assert task["state"] == "PENDING" and task.get("result") is None, task
                assert task["error"]["class"] == "transient" and said in task["error"]["message"], task["error"]
                assert task["error"]["sent"] is False, task["error"]
                why = run_fanoctl(tree, "queue", "why", str(tid)).stdout
                assert said in why, why
                site.control(scenario="normal")
                wait_for(lambda tid=tid: client.get(tid)["state"] == "DONE", 90, interval=0.5,
                         what=f"the ask refused by {scenario} to be answered")
                task = client.get(tid)
                assert task["result"]["text"].startswith("Stand-in gemini answer"), task["result"]
                assert task["attempts"] == 1, task["attempts"]
            assert quota(tree, "web-gem", "standard")["windows"][0]["used"] == 2    # the two answers only

            # 3. a human check pauses the account for a person; both commands say so
            site.control(wall="human_check")
            tid = client.submit("gem-check", "adhoc", "ask", {"prompt": "behind the check"},
                                requires={"backends": ["web-gem"]})["task"]["id"]
            row = wait_paused_for_auth(tree, "web-gem", timeout=90)
            assert "human check" in row["pause_reason"], row
            assert "human check" in run_fanoctl(tree, "backends", "ls").stdout
            why = run_fanoctl(tree, "queue", "why", str(tid)).stdout
            assert "human check" in why, why
            assert "behind the check" not in " ".join(site.prompts())
        finally:
            client.close()


def test_chatgpt_pro_overload_notice_in_the_reply_gives_the_deep_unit_back_through_the_tree(site, chromium_path):
    """Issue 16, items 1 and 8 as observed on Pro: "A lot of people are using Pro right now. Please try
    again in a few minutes." where the reply goes, on a deep task. It is no answer: the task stays PENDING
    with the notice as its error, the deep unit comes back (the broker's ledger, not only the task record)
    and no attempt is burned; once the site recovers the task is answered in Pro, one deep unit in all."""
    config = ACCOUNT.format(name="web-pro", skin="chatgpt", url=site.url, chromium=chromium_path)
    site.control(scenario="busy")
    with running_tree("fwb", config) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test-web", timeout=5.0)
        try:
            tid = client.submit("pro-busy-1", "adhoc", "ask", {"prompt": "a question for pro"},
                                requires={"backends": ["web-pro"], "mode": "deep"})["task"]["id"]
            # (or delivered as the answer, or parked: then the assertions below say what happened)
            wait_for(lambda: (lambda t: t.get("refusals", 0) >= 1 or t["state"] in ("DONE", "PARKED"))(
                client.get(tid)), 90, interval=0.3, what="the Pro overload notice to be refused")
            task = client.get(tid)
            assert task["state"] == "PENDING" and task.get("result") is None, task
            assert "A lot of people are using Pro right now" in task["error"]["message"], task["error"]
            assert task["error"]["sent"] is False, task["error"]
            assert quota(tree, "web-pro", "deep")["windows"][0]["used"] == 0
            assert "A lot of people are using Pro right now" in run_fanoctl(tree, "queue", "why", str(tid)).stdout
            site.control(scenario="normal")
            wait_for(lambda: client.get(tid)["state"] == "DONE", 90, interval=0.5, what="the Pro ask to be answered")
            task = client.get(tid)
            assert task["served"]["mode"] == "deep" and task["attempts"] == 1, (task["served"], task["attempts"])
            assert task["result"]["text"].startswith("Stand-in chatgpt answer [Pro] to: a question for pro")
            assert quota(tree, "web-pro", "deep")["windows"][0]["used"] == 1
            assert quota(tree, "web-pro", "standard")["windows"][0]["used"] == 0
            assert len(site.prompts("a question for pro")) >= 2
        finally:
            client.close()
