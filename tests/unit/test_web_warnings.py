"""Notice classification and reset-time parsing (services/backends/web/warnings.py), with a fixed now."""
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.backends.web.site import load_site
from services.backends.web.warnings import classify, classify_reply, parse_reset, says_not_counted

NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC
# Tuesday 10 March 2026, 13:00 in New York (17:00 UTC; DST started on Sunday 8 March)
NOW = dt.datetime(2026, 3, 10, 13, 0, tzinfo=NY).timestamp()
H, M = 3600.0, 60.0


@pytest.mark.parametrize("text, expected", [
    ("You've reached our limit of messages per hour. Please try again after 2:56 PM.", 1 * H + 56 * M),
    ("You've reached your limit for chats with Deep Think until 4 PM", 3 * H),
    ("Your limit resets at 14:56", 1 * H + 56 * M),
    ("try again at 2:56 p.m.", 1 * H + 56 * M),
    ("until 12:30 PM", 23 * H + 30 * M),                 # already past today: tomorrow
    ("until 12:30 AM", 11 * H + 30 * M),
    ("You can use it again in 35 minutes", 35 * M),
    ("Please try again in 1 hour and 5 minutes.", 1 * H + 5 * M),
    ("resets in 2h 30m", 2 * H + 30 * M),
    ("try again in an hour", 1 * H),
    ("in about 90 seconds", 90.0),
    ("Please try again tomorrow.", 11 * H),               # next local midnight
    ("tomorrow at 9 AM", 20 * H),
    ("until 4 PM tomorrow", 27 * H),
    ("until Mar 11, 2:56 PM", 25 * H + 56 * M),
    ("until March 11 at 2:56 PM", 25 * H + 56 * M),
    ("until 11 Mar 14:56", 25 * H + 56 * M),
    ("until Mar 10, 2026 at 3:00 PM", 2 * H),
    ("until Monday 9:00 AM", 6 * 24 * H - 4 * H),        # Tuesday 13:00 -> Monday 9:00
    ("until Jan 10, 14:56 UTC", None),                  # checked separately (next year)
    ("until 18:00 UTC", 1 * H),                         # the text names UTC: not the account's zone
])
def test_reset_times_in_new_york(text, expected):
    got = parse_reset(text, NOW, NY)
    if expected is None:
        assert got is not None
    else:
        assert got == pytest.approx(expected), text


def test_a_date_in_the_recent_past_is_zero_and_far_past_means_next_year():
    assert parse_reset("until Mar 9, 2026 at 3:00 PM", NOW, NY) == 0.0
    got = parse_reset("until Jan 10, 2:56 PM", NOW, NY)
    assert dt.datetime.fromtimestamp(NOW + got, NY) == dt.datetime(2027, 1, 10, 14, 56, tzinfo=NY)


def test_the_same_clock_time_means_different_waits_in_different_zones():
    # 13:00 in New York is 18:00 in Paris
    assert parse_reset("until 7:00 PM", NOW, NY) == pytest.approx(6 * H)
    assert parse_reset("until 7:00 PM", NOW, PARIS) == pytest.approx(1 * H)


def test_dst_jump_is_counted():
    # Saturday 7 March 2026 12:00 New York; clocks jump forward at 2:00 on Sunday 8 March
    now = dt.datetime(2026, 3, 7, 12, 0, tzinfo=NY).timestamp()
    assert parse_reset("until Mar 8, 12:00 PM", now, NY) == pytest.approx(23 * H)


def test_texts_without_a_reset_time():
    for text in ("You've hit the Free plan limit", "GPT-4 has a limit of 40 messages", "Something went wrong",
                 "", "error 1037"):
        assert parse_reset(text, NOW, NY) is None, text


@pytest.mark.parametrize("text, expected", [
    # the window of the limit ("in 3 hours" after "messages") is not its reset; the reset phrase is
    ("You've reached the limit of 40 messages in 3 hours. Try again after 2:56 PM", 1 * H + 56 * M),
    ("You've reached the limit of 40 messages in 3 hours.", None),
    ("You've used your 40 messages per 3 hours. Try again in 20 minutes.", 20 * M),
    ("In 3 hours you sent 40 messages. Try again after 2:56 PM.", 1 * H + 56 * M),   # a reset phrase wins
    ("Limit reached. Your limit resets in 2 hours.", 2 * H),
    ("Usage cap reached until 4 PM", 3 * H),
    ("Limit reached: available again at 14:56", 1 * H + 56 * M),
    ("You've hit the limit of 50 requests in 24 hours. Try again tomorrow.", 11 * H),
    ("You've reached your limit. Try again on Mar 12", 35 * H),              # a date alone: its start
    ("You've reached your limit until March 12", 35 * H),
    ("Try again on March 12 at 9:00 AM", 44 * H),
    ("Try again after 9:00 AM on March 12", 44 * H),                          # the date after the time
    ("Your weekly limit resets on Monday", 5 * 24 * H + 11 * H),              # Monday 16 March, 00:00
    ("Try again on Tuesday", 6 * 24 * H + 11 * H),                            # today is Tuesday: next week
    ("until Jan 10", None),                                                   # checked separately
    ("Please wait a few minutes", 3 * M),
    ("The storm on Saturn is at 9 AM", 20 * H),                               # no weekday in "Saturn"
])
def test_reset_phrases_are_preferred_to_other_times(text, expected):
    got = parse_reset(text, NOW, NY)
    if expected is None and "Jan" in text:
        assert dt.datetime.fromtimestamp(NOW + got, NY) == dt.datetime(2027, 1, 10, 0, 0, tzinfo=NY)
    elif expected is None:
        assert got is None, text
    else:
        assert got == pytest.approx(expected), text


@pytest.mark.parametrize("site, text, kind", [
    ("chatgpt", "You've reached our limit of messages per hour. Please try again after 2:56 PM.", "quota"),
    ("chatgpt", "Too many requests in 1 hour. Try again later.", "quota"),
    ("chatgpt", "You're sending messages too quickly", "quota"),
    ("chatgpt", "ChatGPT is at capacity right now", "capacity"),
    ("chatgpt", "Something went wrong while generating the response.", "transient"),
    ("chatgpt", "There was an error generating a response", "transient"),
    ("chatgpt", "Verify you are human", "auth"),
    ("chatgpt", "Just a moment...", "auth"),
    ("chatgpt", "Our systems have detected unusual activity from your system. Please try again later.", "auth"),
    ("gemini", "You've reached your limit for chats with Deep Think until Jan 10, 2:56 PM", "quota"),
    ("gemini", "A lot of people are using Deep Think right now and I need a moment to catch up.", "capacity"),
    ("gemini", "Sorry, I ran into an issue and wasn't able to finish thinking. This attempt didn't count "
               "against your Deep Think limit.", "transient"),
    ("gemini", "Sign in to continue", "auth"),
])
def test_classification_with_the_site_files(site, text, kind):
    notice = classify([text], load_site(site).messages)
    assert notice is not None and notice.kind == kind, (text, notice)


def test_classification_precedence_and_ordinary_text():
    msgs = load_site("chatgpt").messages
    assert classify(["Here is the proof you asked for.", "x = 2"], msgs) is None
    # a login wall outranks an error toast shown with it
    notice = classify(["Something went wrong", "Your session has expired. Please log in again."], msgs)
    assert notice.kind == "auth"
    assert classify(["  You've reached\n our   limit of messages "], msgs).kind == "quota"   # whitespace folded



@pytest.mark.parametrize("text, kind", [
    ("You've reached your limit for chats with Deep Think until Jan 10, 2:56 PM. Try again then.", "quota"),
    ("You\u2019ve reached your limit for chats with Deep Think until Jan 10, 2:56 PM", "quota"),
    ("A lot of people are using Deep Think right now and I need a moment to catch up.", "capacity"),
    ("Sorry, I ran into an issue and wasn't able to finish thinking. This attempt didn't count against your "
     "Deep Think limit.", "transient"),
    ("Something went wrong.", "transient"),
])
def test_gemini_refusals_rendered_as_the_reply_are_notices(text, kind):
    notice = classify_reply(text, load_site("gemini").reply_notices)
    assert notice is not None and notice.kind == kind, (text, notice)


@pytest.mark.parametrize("site", ["chatgpt", "gemini"])
@pytest.mark.parametrize("text", [
    "Short answer: the quota of this group is 7, and an error occurred only in the first draft of the proof.",
    "Yes: the quota is per day, and something went wrong in step 2 of your argument.",
    "The bound is sharp. Note that you've reached your limit of 3 cases; a fourth is impossible.",
    "A lot of people are using this lemma, but it needs care.",
])
def test_a_genuine_short_answer_is_not_a_notice(site, text):
    """Words of the notice patterns inside the model's own answer do not make it a notice."""
    assert classify_reply(text, load_site(site).reply_notices) is None


def test_reply_area_notices_of_both_sites_and_what_says_not_counted():
    for name in ("chatgpt", "gemini"):
        notices = load_site(name).reply_notices
        assert classify_reply("A lot of people are using Pro right now. Please try again in a few minutes.",
                              notices).kind == "capacity"
        assert classify_reply("Something went wrong. There was an error generating a response. Please try again.",
                              notices).kind == "transient"
        assert classify_reply("Something went wrong in the second step of the proof, so redo it.", notices) is None
    assert says_not_counted("This didn't count against your Fast limit.")
    assert says_not_counted("This attempt did not count toward your limit")
    assert not says_not_counted("Each of these counts against the total: 7 lines.")


def test_a_limit_in_chatgpts_reply_area_is_quota_with_its_reset():
    notices = load_site("chatgpt").reply_notices
    n = classify_reply("You've reached the Pro limit for now. Try again after 2:56 PM.", notices)
    assert n.kind == "quota"
    assert parse_reset(n.text, NOW, UTC) is not None
    assert classify_reply("You've reached the end of the proof: the limit is 7.", notices) is None
