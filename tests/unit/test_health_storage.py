"""fanoctl health's storage verdict (services/health.py) from the broker's stats, before and after the
broker reports ``storage``."""
from services.health import DEGRADED, OK, storage_check, storage_facts

GiB = 1 << 30
NOW = 1_700_000_000.0


def test_an_older_broker_is_judged_by_its_map_fields():
    facts = storage_facts({"map_size": GiB, "map_used": GiB // 4, "map_full": False})
    assert facts["source"] == "map" and facts["refusing"] is None and facts["days_until_full"] is None
    level, line = storage_check(facts, 7, NOW)
    assert level == OK and line == "map 256.0 MiB used of 1.0 GiB, days until full unknown"
    nearly = storage_facts({"map_size": GiB, "map_used": GiB * 95 // 100, "map_full": False})
    level, line = storage_check(nearly, 7, NOW)
    assert level == DEGRADED and line.startswith("map 95% used")
    level, line = storage_check(storage_facts({"map_size": GiB, "map_used": GiB // 2, "map_full": True}), 7, NOW)
    assert level == DEGRADED and line.startswith("refusing new work (MAP_FULL)")


def test_the_storage_report_gives_days_until_full_and_refusals():
    storage = {"map_size": GiB, "map_used": GiB // 2, "map_ceiling": 8 * GiB, "disk_free": 20 * GiB,
               "disk_total": 100 * GiB, "refusing": None, "since": None, "growth_per_day": 100 << 20,
               "days_until_full": 76.8}
    broker = {"map_size": 1, "map_used": 1, "map_full": True, "storage": storage}   # storage wins
    facts = storage_facts(broker)
    assert facts == {"source": "storage", **storage}
    level, line = storage_check(facts, 7, NOW)
    assert level == OK
    assert line == ("map 512.0 MiB used of 1.0 GiB (grows up to 8.0 GiB), disk 20.0 GiB free of 100.0 GiB, "
                    "growing 100.0 MiB/day, full in 76.8 days")
    level, line = storage_check({**facts, "days_until_full": 3.5}, 7, NOW)
    assert level == DEGRADED and line.startswith("full in less than 7 days: ")
    level, line = storage_check({**facts, "refusing": "DISK_FULL", "since": NOW - 60}, 7, NOW)
    assert level == DEGRADED and line.startswith("refusing new work (DISK_FULL since ") and "1m00s ago" in line
