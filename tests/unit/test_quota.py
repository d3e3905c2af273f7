"""shared.quota: compact specs, validation, calendar arithmetic across zones and DST, the reserve rule."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from shared import quota as Q
from shared.errors import ErrorCode

UTC = dt.UTC
HOUR = 3600.0
DAY = 86400.0


def ts(y, mo, d, h=0, mi=0, s=0, tz="UTC") -> float:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo(tz)).timestamp()


def local(t: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def W(text: str) -> dict:
    return Q.normalize_window(text)


# --- parsing and describing ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("50/3h", {"kind": "rolling", "limit": 50, "seconds": 10800.0}),
    ("10/90m", {"kind": "rolling", "limit": 10, "seconds": 5400.0}),
    ("5/30s", {"kind": "rolling", "limit": 5, "seconds": 30.0}),
    ("7/1.5h", {"kind": "rolling", "limit": 7, "seconds": 5400.0}),
    ("3/2d", {"kind": "rolling", "limit": 3, "seconds": 172800.0}),
    ("20/day", {"kind": "daily", "limit": 20, "reset": "00:00", "tz": "UTC"}),
    ("20/day@04:00", {"kind": "daily", "limit": 20, "reset": "04:00", "tz": "UTC"}),
    ("20/day@4:05 Europe/Berlin", {"kind": "daily", "limit": 20, "reset": "04:05", "tz": "Europe/Berlin"}),
    ("100/week", {"kind": "weekly", "limit": 100, "weekday": "mon", "reset": "00:00", "tz": "UTC"}),
    ("100/week@fri", {"kind": "weekly", "limit": 100, "weekday": "fri", "reset": "00:00", "tz": "UTC"}),
    ("100/week@09:00", {"kind": "weekly", "limit": 100, "weekday": "mon", "reset": "09:00", "tz": "UTC"}),
    ("100/week@mon 09:00 UTC", {"kind": "weekly", "limit": 100, "weekday": "mon", "reset": "09:00", "tz": "UTC"}),
    ("100/week@sun 23:30 Europe/Berlin",
     {"kind": "weekly", "limit": 100, "weekday": "sun", "reset": "23:30", "tz": "Europe/Berlin"}),
    ("100/week@tue 09:00", {"kind": "weekly", "limit": 100, "weekday": "tue", "reset": "09:00", "tz": "UTC"}),
    ("20/day@00:00 America/Los_Angeles reserve explorer=10,documenter=5",
     {"kind": "daily", "limit": 20, "reset": "00:00", "tz": "America/Los_Angeles",
      "reserves": {"explorer": 10, "documenter": 5}}),
    ("0/day", {"kind": "daily", "limit": 0, "reset": "00:00", "tz": "UTC"}),
])
def test_compact_parse(text, expected):
    assert W(text) == expected


@pytest.mark.parametrize("text", [
    "50/3h", "10/90m", "5/30s", "7/1.5h", "3/2d", "1/45s", "20/day@04:00 Europe/Berlin", "20/day",
    "100/week@mon 09:00 UTC", "100/week@sat 17:45 Asia/Kolkata",
    "20/day@00:00 America/Los_Angeles reserve documenter=5,explorer=10",
    "40/5h reserve a=1,b=2",
])
def test_describe_round_trip(text):
    window = W(text)
    text2 = Q.describe(window)
    assert W(text2) == window
    assert Q.describe(W(text2)) == text2


def test_dict_and_compact_forms_agree():
    assert W("20/day@04:00 Europe/Berlin reserve explorer=10") == Q.normalize_window(
        {"kind": "daily", "limit": 20, "reset": "4:00", "tz": "Europe/Berlin", "reserves": {"explorer": 10}})
    assert Q.normalize_windows("50/3h; 20/day") == [W("50/3h"), W("20/day")]
    assert Q.normalize_windows([]) == []


@pytest.mark.parametrize("spec", [
    "20/day@04:00 Mars/Olympus",                   # unknown time zone
    "20/day@04:00 ../../etc/passwd",
    {"kind": "daily", "limit": 1, "tz": 5},        # tz not a string
    {"kind": "daily", "limit": 1, "tz": None},
    {"kind": "daily", "limit": 1, "tz": ""},
    "20/day@24:00", "20/day@4", "20/day@04:60", "20/day@noon", "20/day@-1:00",
    {"kind": "daily", "limit": 1, "reset": 400},
    "20/day reserve a=15,b=6",                     # reserves exceed the limit
    {"kind": "daily", "limit": 5, "reserves": {"a": 6}},
    {"kind": "daily", "limit": 5, "reserves": {"a": -1}},
    {"kind": "daily", "limit": 5, "reserves": {"": 1}},
    {"kind": "daily", "limit": 5, "reserves": [1]},
    {"kind": "daily", "limit": 5, "colour": "red"},  # unknown field
    {"kind": "daily", "limit": 5, 7: "red", "b": 1},  # unknown fields off the wire: an int key beside a str
    {"kind": "daily", "limit": 5, b"tz": "UTC"},
    {"kind": "rolling", "limit": 5, "seconds": 60, "tz": "UTC"},
    {"kind": "daily", "limit": 5, "seconds": 60},
    {"kind": "daily", "limit": -1},                 # negative limit
    {"kind": "daily", "limit": 2.5},
    {"kind": "daily", "limit": True},
    {"kind": "daily"},
    {"kind": "rolling", "limit": 5, "seconds": 0},
    {"kind": "rolling", "limit": 5, "seconds": -3},
    {"kind": "rolling", "limit": 5, "seconds": "60"},
    {"kind": "rolling", "limit": 5, "seconds": float("nan")},
    {"kind": "rolling", "limit": 5, "seconds": float("inf")},
    {"kind": "monthly", "limit": 5},
    {"limit": 5},
    "100/week@someday 09:00",
    "100/week@mon 09:00 UTC extra", "100/week@09:00 10:00", "100/week@mon 9 UTC",
    "", "   ", "hello", "50", "/3h", "-5/3h", "5/-3h", "5/3y", "5/h", "five/day", "5/3h UTC",
    "5/3h@04:00", "²/day", "5/day reserve a=²", "5/day reserve a", "5/day reserve =1", "5/day reserve a=-1",
    "5//day", "5/day/day", "5/ day",
    42, None, ["50/3h"],
])
def test_invalid_specs_raise_quota_spec_error(spec):
    with pytest.raises(Q.QuotaSpecError) as info:
        Q.normalize_window(spec)
    assert info.value.code == ErrorCode.INVALID_QUOTA


def test_normalize_windows_rejects_non_list():
    with pytest.raises(Q.QuotaSpecError):
        Q.normalize_windows({"kind": "daily", "limit": 1})


# --- daily windows ----------------------------------------------------------------------------------------

def test_daily_utc_around_reset_hour():
    w = W("20/day@04:00 UTC")
    reset = ts(2024, 5, 10, 4)
    assert Q.period_start(w, reset - 1) == reset - DAY
    assert Q.next_reset(w, reset - 1) == reset
    assert Q.period_start(w, reset) == reset          # the reset instant opens the new period
    assert Q.next_reset(w, reset) == reset + DAY      # strictly after t
    assert Q.period_start(w, reset + 1) == reset
    assert Q.next_reset(w, reset + DAY - 1) == reset + DAY


def test_daily_across_midnight():
    w = W("3/day@22:00 UTC")
    t = ts(2024, 5, 11, 1, 30)  # after midnight, before 22:00: the period began yesterday at 22:00
    assert Q.period_start(w, t) == ts(2024, 5, 10, 22)
    assert Q.next_reset(w, t) == ts(2024, 5, 11, 22)
    w0 = W("3/day")
    assert Q.period_start(w0, ts(2024, 12, 31, 23, 59, 59)) == ts(2024, 12, 31)
    assert Q.next_reset(w0, ts(2024, 12, 31, 23, 59, 59)) == ts(2025, 1, 1)


@pytest.mark.parametrize("tz,reset,utc_reset", [
    # local 00:00 in Los Angeles in May (PDT, UTC-7) is 07:00 UTC
    ("America/Los_Angeles", "00:00", (2024, 5, 10, 7, 0)),
    # 04:00 in Berlin in May (CEST, UTC+2) is 02:00 UTC
    ("Europe/Berlin", "04:00", (2024, 5, 10, 2, 0)),
    # 04:00 in Kolkata (UTC+5:30) is 22:30 UTC on the previous day
    ("Asia/Kolkata", "04:00", (2024, 5, 9, 22, 30)),
    ("Asia/Kolkata", "00:00", (2024, 5, 9, 18, 30)),
])
def test_daily_non_utc_zones(tz, reset, utc_reset):
    w = W(f"10/day@{reset} {tz}")
    boundary = ts(*utc_reset)
    assert local(boundary, tz).endswith(f"{reset} " + local(boundary, tz).split()[-1])
    assert Q.period_start(w, boundary) == boundary
    assert Q.period_start(w, boundary - 1) == boundary - DAY
    assert Q.next_reset(w, boundary - 1) == boundary
    assert Q.next_reset(w, boundary + 5 * HOUR) == boundary + DAY


def test_daily_los_angeles_local_evening_is_next_utc_day():
    w = W("10/day@00:00 America/Los_Angeles")
    t = ts(2024, 5, 11, 3)  # 20:00 PDT on May 10
    assert local(Q.period_start(w, t), "America/Los_Angeles") == "2024-05-10 00:00 PDT"
    assert local(Q.next_reset(w, t), "America/Los_Angeles") == "2024-05-11 00:00 PDT"


@pytest.mark.parametrize("tz,day,hours", [
    ("Europe/Berlin", (2024, 3, 31), 23),      # spring forward: 02:00 CET -> 03:00 CEST
    ("Europe/Berlin", (2024, 10, 27), 25),     # fall back: 03:00 CEST -> 02:00 CET
    ("America/New_York", (2024, 3, 10), 23),
    ("America/New_York", (2024, 11, 3), 25),
])
def test_daily_period_length_across_dst(tz, day, hours):
    """The period that contains the transition is 23 or 25 hours long; resets stay at local 04:00."""
    w = W(f"10/day@04:00 {tz}")
    noon = ts(*day, 12, tz=tz)
    start, end = Q.period_start(w, noon), Q.next_reset(w, noon)
    assert local(start, tz).split()[1] == "04:00" and local(end, tz).split()[1] == "04:00"
    # the transition happens between the previous day's 04:00 and this day's 04:00
    before = Q.period_start(w, start - 1)
    assert start - before == hours * HOUR
    assert end - start == DAY  # the next one is back to 24 h
    assert Q.next_reset(w, start - 1) == start


@pytest.mark.parametrize("tz,day,reset,expect_local", [
    # 02:30 does not exist on the spring-forward day: the reset happens at the first instant after the gap
    ("Europe/Berlin", (2024, 3, 31), "02:30", "03:30"),
    ("America/New_York", (2024, 3, 10), "02:30", "03:30"),
])
def test_daily_reset_inside_the_dst_gap(tz, day, reset, expect_local):
    w = W(f"10/day@{reset} {tz}")
    t = ts(*day, 12, tz=tz)
    start = Q.period_start(w, t)
    assert local(start, tz).startswith(f"{day[0]}-{day[1]:02d}-{day[2]:02d} {expect_local}")
    assert start <= t < Q.next_reset(w, t)
    assert Q.period_start(w, start - 1) < start


def test_daily_reset_inside_the_repeated_hour_happens_once():
    # 02:30 happens twice on the fall-back day in Berlin; the period starts at the first one and lasts 25 h
    w = W("10/day@02:30 Europe/Berlin")
    first = ts(2024, 10, 27, 0, 30)   # 02:30 CEST
    second = ts(2024, 10, 27, 1, 30)  # 02:30 CET
    assert Q.period_start(w, second) == first
    assert Q.period_start(w, first + 1) == first
    assert Q.next_reset(w, first) == ts(2024, 10, 28, 1, 30)
    assert Q.next_reset(w, second) == ts(2024, 10, 28, 1, 30)


def test_periods_tile_time_without_gaps_across_a_year():
    """Walking reset to reset through a year in three zones: each period starts where the last ended."""
    for tz in ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"):
        w = W(f"5/day@02:30 {tz}")
        t = ts(2024, 1, 1)
        lengths = set()
        for _ in range(366):
            nxt = Q.next_reset(w, t)
            assert nxt > t
            assert Q.period_start(w, nxt) == nxt
            assert Q.period_start(w, nxt - 0.001) <= t
            lengths.add(nxt - Q.period_start(w, t))
            t = nxt
        assert lengths <= {DAY, DAY - HOUR, DAY + HOUR, DAY - HOUR / 2, DAY + HOUR / 2}, (tz, lengths)


# --- weekly and rolling -------------------------------------------------------------------------------------

def test_weekly_with_weekday_and_time():
    w = W("100/week@wed 09:00 UTC")
    wed = ts(2024, 5, 8, 9)  # a Wednesday
    assert dt.datetime.fromtimestamp(wed, UTC).weekday() == 2
    assert Q.period_start(w, wed) == wed
    assert Q.period_start(w, wed - 1) == wed - 7 * DAY
    assert Q.next_reset(w, wed - 1) == wed
    assert Q.next_reset(w, wed) == wed + 7 * DAY
    # any day of the following week until next Wednesday 09:00 belongs to this period
    for days in (1, 3, 6):
        assert Q.period_start(w, wed + days * DAY) == wed
    assert Q.period_start(w, wed + 7 * DAY - 1) == wed
    # same weekday, earlier hour: still the previous week's period
    assert Q.period_start(w, wed + 7 * DAY - 2 * HOUR) == wed


def test_weekly_in_a_zone_across_dst():
    w = W("100/week@sun 03:00 Europe/Berlin")
    t = ts(2024, 3, 31, 12, tz="Europe/Berlin")  # Sunday of the spring-forward
    start = Q.period_start(w, t)
    assert local(start, "Europe/Berlin") == "2024-03-31 03:00 CEST"
    assert start - Q.period_start(w, start - 1) == 7 * DAY - HOUR


def test_rolling_window():
    w = W("5/90m")
    t = 1_700_000_000.0
    assert Q.period_start(w, t) == t - 5400
    assert Q.next_reset(w, t) == t + 5400


# --- the reserve rule ---------------------------------------------------------------------------------------

GEMINI = W("20/day reserve explorer=10,documenter=5")


def test_reserve_rule_empty_window():
    assert Q.headroom(GEMINI, 0, {}, "explorer") == 15      # own 10 + buffer 5
    assert Q.headroom(GEMINI, 0, {}, "documenter") == 10    # own 5 + buffer 5
    assert Q.headroom(GEMINI, 0, {}, "researcher") == 5     # buffer only


def test_a_module_never_eats_another_reserve():
    used = {"explorer": 15}
    assert Q.headroom(GEMINI, 15, used, "explorer") == 0    # its 10 and the whole buffer are gone
    assert not Q.admits(GEMINI, 15, used, "explorer")
    assert Q.headroom(GEMINI, 15, used, "documenter") == 5  # documenter's reserve is intact
    assert not Q.admits(GEMINI, 15, used, "researcher")
    # documenter uses its reserve; then the window is full for everybody
    used = {"explorer": 15, "documenter": 5}
    for m in ("explorer", "documenter", "researcher"):
        assert not Q.admits(GEMINI, 20, used, m)


def test_buffer_is_shared_first_come():
    used = {"researcher": 3}
    assert Q.headroom(GEMINI, 3, used, "researcher") == 2
    assert Q.headroom(GEMINI, 3, used, "explorer") == 12    # 10 own + 2 left in the buffer
    used = {"researcher": 3, "documenter": 7}               # documenter took 5 own + 2 buffer
    assert Q.headroom(GEMINI, 10, used, "explorer") == 10   # exactly its own reserve
    assert Q.headroom(GEMINI, 10, used, "researcher") == 0
    assert Q.headroom(GEMINI, 10, used, "documenter") == 0


def test_reserve_rule_simulated_greedy_modules():
    """Whatever order greedy modules take units in, each can always use its own reserve."""
    import random
    rnd = random.Random(1)
    for _ in range(200):
        used: dict[str, int] = {}
        total = 0
        order = [rnd.choice(["explorer", "documenter", "researcher"]) for _ in range(60)]
        for m in order:
            if Q.admits(GEMINI, total, used, m):
                used[m] = used.get(m, 0) + 1
                total += 1
        assert total <= 20
        # at the end, each reserved module can still take what it has not used of its reserve
        for m, r in GEMINI["reserves"].items():
            assert Q.headroom(GEMINI, total, used, m) >= max(0, r - used.get(m, 0))


def test_headroom_never_negative_and_plain_limit():
    w = W("3/day")
    assert Q.headroom(w, 2, {"a": 2}, "b") == 1
    assert Q.headroom(w, 5, {"a": 5}, "a") == 0  # over the limit (limit lowered): zero, not negative
    assert not Q.admits(w, 3, {}, "a")
