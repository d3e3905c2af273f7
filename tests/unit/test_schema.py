"""Key encodings sort correctly in LMDB's byte order; the schema version guard."""
from __future__ import annotations

import random

import lmdb
import pytest

from shared.protocol import pack_value

from services.broker import schema as S


def lmdb_order(tmp_path, keys: list[bytes]) -> list[bytes]:
    """The order LMDB itself returns the keys in (not Python's sort, to test what the broker relies on)."""
    env = lmdb.open(str(tmp_path / "order"), map_size=16 * 2**20, max_dbs=2)
    try:
        db = env.open_db(b"t")
        shuffled = list(keys)
        random.Random(7).shuffle(shuffled)
        with env.begin(write=True) as txn:
            for k in shuffled:
                assert txn.put(k, b"", db=db)
        with env.begin() as txn:
            return [bytes(k) for k in txn.cursor(db=db).iternext(keys=True, values=False)]
    finally:
        env.close()


def test_u64_keys_sort_numerically(tmp_path):
    nums = [0, 1, 2, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
    order = lmdb_order(tmp_path, [S.u64(n) for n in nums])
    assert [S.from_u64(k) for k in order] == sorted(nums)


def test_ready_key_orders_by_priority_desc_then_fifo(tmp_path):
    entries = [(50, 3), (50, 1), (100, 7), (-5, 2), (0, 9), (S.PRIO_MAX, 11), (S.PRIO_MIN, 4), (-5, 1),
               (100, 300), (100, 256), (-1, 8), (1, 10)]
    order = lmdb_order(tmp_path, [S.ready_key(p, i) for p, i in entries])
    expected = sorted(entries, key=lambda e: (-e[0], e[1]))
    assert [S.ready_key_id(k) for k in order] == [i for _, i in expected]
    assert expected[0] == (S.PRIO_MAX, 11) and expected[-1] == (S.PRIO_MIN, 4)


def test_ready_key_round_trips_id():
    for prio in (S.PRIO_MIN, -1, 0, 1, S.PRIO_MAX):
        assert S.ready_key_id(S.ready_key(prio, 2**40 + 3)) == 2**40 + 3


def test_time_id_key_orders_by_time_then_id(tmp_path):
    entries = [(1000, 5), (999, 9), (1000, 2), (2**40, 1), (0, 7), (1, 1), (1000, 256)]
    order = lmdb_order(tmp_path, [S.time_id_key(t, i) for t, i in entries])
    assert [S.time_id_split(k) for k in order] == sorted(entries)


def test_time_id_key_clamps_negative_time():
    assert S.time_id_split(S.time_id_key(-50, 3)) == (0, 3)


def test_ms_and_us_round():
    assert S.ms(1.0004) == 1000 and S.ms(1.0006) == 1001
    assert S.us(2.5) == 2_500_000


def test_state_and_kv_prefixes_do_not_collide(tmp_path):
    # "PENDING" must not be a prefix-match of another state's keys; "ab" module must not see "abc"'s keys
    keys = [S.state_key(s, i) for s in ("PENDING", "PAUSED", "PARKED") for i in (1, 2)]
    order = lmdb_order(tmp_path, keys)
    pending = [k for k in order if k.startswith(S.state_prefix("PENDING"))]
    assert len(pending) == 2
    assert not S.kv_key("abc", "x").startswith(S.kv_prefix("ab"))


def test_split_helpers():
    assert S.split_count_key(S.count_key("DONE", "explorer")) == ("DONE", "explorer")
    assert S.split_pair(S.pair_key("gemini", "deep")) == ("gemini", "deep")
    key = S.quota_entry_key("acct", "deep", "rolling:60", 5, 6, 7)
    assert key.startswith(S.quota_slot_prefix("acct", "deep", "rolling:60"))
    assert S.quota_usage_key("acct", "deep", "d", 1).startswith(S.quota_slot_prefix("acct", "deep", "d"))


def test_open_env_creates_every_database_and_the_version(tmp_path):
    st = S.open_env(tmp_path / "db", 8 * 2**20)
    try:
        assert set(st.dbs) == set(S.DATABASES)
        with st.env.begin() as txn:
            assert txn.get(b"schema_version", db=st.dbs["meta"]) == pack_value(S.SCHEMA_VERSION)
        # durability flags never relaxed (docs/architecture.md § Invariants)
        flags = st.env.flags()
        assert flags["sync"] and flags["metasync"] and not flags["map_async"]
    finally:
        st.close()
    # reopening an existing database of the current version works
    S.open_env(tmp_path / "db", 8 * 2**20).close()


def test_open_env_refuses_newer_schema(tmp_path):
    st = S.open_env(tmp_path / "db", 8 * 2**20)
    with st.env.begin(write=True) as txn:
        txn.put(b"schema_version", pack_value(S.SCHEMA_VERSION + 1), db=st.dbs["meta"])
    st.close()
    with pytest.raises(S.SchemaError, match=f"schema version {S.SCHEMA_VERSION + 1}"):
        S.open_env(tmp_path / "db", 8 * 2**20)
    # the refused open released the environment: it can be fixed and reopened in this process
    env = lmdb.open(str(tmp_path / "db"), max_dbs=len(S.DATABASES) + 1)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", pack_value(S.SCHEMA_VERSION), db=env.open_db(b"meta", txn=txn))
    env.close()
    S.open_env(tmp_path / "db", 8 * 2**20).close()


def test_open_env_keeps_a_grown_map(tmp_path):
    st = S.open_env(tmp_path / "db", 4 * 2**20)
    st.env.set_mapsize(16 * 2**20)
    with st.env.begin(write=True) as txn:
        txn.put(b"map_size", pack_value(16 * 2**20), db=st.dbs["meta"])
    st.close()
    st = S.open_env(tmp_path / "db", 4 * 2**20)
    try:
        assert st.env.info()["map_size"] >= 16 * 2**20
    finally:
        st.close()
