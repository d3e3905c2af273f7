"""API-key loading and redaction; the per-account conversation store and bounded replay."""
import logging
import os

import pytest

from services.backends import secrets
from services.backends.conversations import ConversationStore, Exchange, replay_window, summarize
from shared.config import ConfigError

KEY = "sk-ant-test-PLANTED-0123456789abcdef"


def test_key_from_environment_is_wrapped_and_never_printed():
    secret = secrets.load_api_key("c1", "claude", {}, environ={"ANTHROPIC_API_KEY": KEY})
    assert secret.reveal() == KEY
    assert KEY not in repr(secret) and KEY not in str(secret) and KEY not in f"{secret}"
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(secret)


def test_key_named_env_and_missing_key_error_names_the_variable():
    secret = secrets.load_api_key("c1", "claude", {"api_key_env": "MY_KEY"}, environ={"MY_KEY": KEY})
    assert secret.reveal() == KEY
    with pytest.raises(ConfigError, match="MY_KEY"):
        secrets.load_api_key("c1", "claude", {"api_key_env": "MY_KEY"}, environ={})
    assert secrets.load_api_key("c1", "openai", {}, required=False, environ={}) is None


def test_inline_key_and_key_file_inside_the_repository_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="do not put api_key") as info:
        secrets.load_api_key("c1", "claude", {"api_key": KEY}, environ={})
    assert KEY not in str(info.value)
    inside = secrets.REPO_ROOT / "pyproject.toml"
    with pytest.raises(ConfigError, match="inside the repository"):
        secrets.load_api_key("c1", "claude", {"api_key_file": str(inside)}, environ={})
    outside = tmp_path / "k.key"
    outside.write_text(KEY + "\n")
    assert secrets.load_api_key("c1", "claude", {"api_key_file": str(outside)}, environ={}).reveal() == KEY
    with pytest.raises(ConfigError, match="cannot read"):
        secrets.load_api_key("c1", "claude", {"api_key_file": str(tmp_path / "nope")}, environ={})


def test_log_filter_blanks_known_keys_in_messages_and_tracebacks(caplog):
    secrets.Secret(KEY)
    log = logging.getLogger("fano.test.secrets")
    handler_filter = secrets.RedactingFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        log.warning("calling with key %s", KEY)
        try:
            raise RuntimeError(f"bad key {KEY}")
        except RuntimeError:
            log.exception("failed")
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert KEY not in caplog.text
    assert secrets.REDACTED in caplog.text


def test_store_handle_turns_and_torn_last_line(tmp_path):
    store = ConversationStore(tmp_path / "conv")
    store.set_handle("explorer:t1", url="http://x/c/1")
    store.set_handle("explorer:t1", title="Fano planes")
    store.set_handle("explorer:t1", url="http://x/c/1")     # unchanged: not rewritten
    store.mark_sent("explorer:t1", 1, "first?")
    assert store.was_sent("explorer:t1", 1) and not store.was_sent("explorer:t1", 2)
    store.record_reply("explorer:t1", 1, "first?", "partial")
    store.record_reply("explorer:t1", 1, "first?", "complete answer")
    path = store._path("explorer:t1")
    with open(path, "a") as f:
        f.write('{"type":"turn","index":2,"pro')               # a crash mid-append
    store.record_reply("explorer:t1", 2, "second?", "two")
    fresh = ConversationStore(tmp_path / "conv")
    assert fresh.handle("explorer:t1") == {"url": "http://x/c/1", "title": "Fano planes"}
    assert [(e.index, e.reply) for e in fresh.turns("explorer:t1")] == [(1, "complete answer"), (2, "two")]
    assert fresh.reply("explorer:t1", 2) == "two" and fresh.reply("explorer:t1", 3) is None
    assert fresh.handle("other") == {} and fresh.turns("other") == []
    assert sum(1 for line in path.read_text().splitlines() if '"handle"' in line) == 2


def test_replay_keeps_first_exchange_and_recent_ones_and_summarizes_the_middle():
    exchanges = [Exchange(0, "seed: study X", "Definition: a widget is a 7-point thing.\nMore.")]
    exchanges += [Exchange(i, f"q{i} " + "p" * 300, f"Answer {i} is long. " + "r" * 700) for i in range(1, 61)]
    exchanges[2] = Exchange(2, "q2", "Let W := the widget graph. It matters.\n" + "z" * 900)
    replay = replay_window(exchanges, budget_chars=8000)
    assert replay.pinned == exchanges[:1]
    assert replay.recent and replay.recent[-1] == exchanges[-1]
    assert replay.cut == 61 - 1 - len(replay.recent)
    assert "Let W := the widget graph" in replay.summary           # a definition from turn 2 survives
    total = sum(len(e.prompt) + len(e.reply) for e in replay.pinned + replay.recent) + len(replay.summary)
    assert total <= 8000
    messages = replay.messages("next?")
    assert [m["role"] for m in messages[:2]] == ["user", "assistant"] and messages[-1] == {"role": "user",
                                                                                          "content": "next?"}
    assert "2" in replay.summary_block()


def test_short_transcripts_are_replayed_whole_and_summary_respects_its_limit():
    exchanges = [Exchange(i, f"q{i}", f"a{i}.") for i in range(5)]
    replay = replay_window(exchanges, budget_chars=10_000)
    assert replay.recent == exchanges[1:] and replay.summary == "" and replay.summary_block() == ""
    many = [Exchange(i, "q", f"Definition {i}: " + "d" * 100) for i in range(100)]
    assert len(summarize(many, 500)) <= 500


def test_a_definition_the_user_typed_survives_its_turn_being_cut():
    """The reply does not repeat the prompt: only the prompt carries the definition."""
    middle = [Exchange(1, "Some context first. Definition: F := the Fano plane", "Understood."),
              Exchange(2, "Question: how many lines does F have?", "Seven.")]
    summary = summarize(middle, 500)
    assert "Definition: F := the Fano plane" in summary and "[turn 1, asked]" in summary
    assert "Understood." in summary and "Seven." in summary           # the answers are still there
    exchanges = [Exchange(0, "seed: study incidence geometry", "Noted.")]
    exchanges += [Exchange(1, "Definition: F := the Fano plane", "Understood.")]
    exchanges += [Exchange(i, f"q{i} " + "p" * 300, f"Answer {i}. " + "r" * 700) for i in range(2, 40)]
    replay = replay_window(exchanges, budget_chars=6000)
    assert exchanges[1] not in replay.pinned + replay.recent        # its turn was cut ...
    assert "F := the Fano plane" in replay.summary_block()          # ... the definition was not


def test_summary_keeps_a_repeated_prompt_line_once_and_bounds_long_prompts():
    template = "Notation: we write P for the point set."
    many = [Exchange(i, f"{template}\nq{i}: " + "x" * 5000, f"a{i}.") for i in range(1, 6)]
    summary = summarize(many, 2000)
    assert summary.count(template) == 1 and len(summary) <= 2000
    assert all(len(line) < 450 for line in summary.splitlines())


def test_one_shot_records_are_pruned_when_old_and_conversations_are_kept(tmp_path):
    import time
    store = ConversationStore(tmp_path / "conv")
    store.record_reply("task-7", 0, "q", "a")
    store.record_reply("explorer:t1", 1, "q", "a")
    now = time.time()
    assert store.prune_one_shots(max_age=3600, now=now) == 0
    assert store.prune_one_shots(max_age=3600, now=now + 7200) == 1
    assert store.turns("task-7") == [] and store.reply("explorer:t1", 1) == "a"


def test_recorded_matches_the_turn_position_and_prompt(tmp_path):
    from services.backends.base import Turn
    store = ConversationStore(tmp_path / "conv")
    store.record_reply("explorer:t1", 2, "what next?", "this", model="m", task_id=9)
    turn = Turn(task_id=9, epoch=1, attempt=1, account="a", mode="standard", module="explorer",
                kind="explorer.explore", prompt="what next?", conversation="explorer:t1", turn_index=2)
    assert store.recorded(turn).reply == "this" and store.recorded(turn).meta == {"model": "m", "task_id": 9}
    import dataclasses
    assert store.recorded(dataclasses.replace(turn, prompt="something else")) is None
    assert store.recorded(dataclasses.replace(turn, turn_index=3)) is None
    # a different task at the same position with the same prompt (a re-ask) is never answered from here
    assert store.recorded(dataclasses.replace(turn, task_id=10)) is None
    store.record_reply("explorer:t1", 2, "what next?", "that", model="m")     # no task named: matches none
    assert store.recorded(turn).reply == "this"


def test_a_transcript_file_is_compacted_to_one_record_per_text(tmp_path):
    from services.backends import conversations as C
    store = ConversationStore(tmp_path / "conv")
    key = "explorer:t9"
    store.set_handle(key, url="http://x/c/9")
    big = "p" * 5000
    for i in range(1, 9):
        store.set_handle(key, sent_turn=i)                 # a web worker's handle changes every turn
        store.mark_sent(key, i, f"{i} {big}")
        if i == 3:
            store.record_reply(key, i, f"{i} {big}", "partial", )   # re-read after reconciliation
        store.record_reply(key, i, f"{i} {big}", f"answer {i} " + "r" * 3000)
    store.mark_sent(key, 9, f"9 {big}")                     # in flight: its mark must survive
    path = store._path(key)
    once = 8 * (5002 + 3009 + 200) + 5002 + 200           # each prompt and answer once, plus the mark in flight
    appended = once + 8 * (5002 + 200) + 5202 + 8 * 100    # what plain appends wrote (~120 KB)
    assert appended > 1.5 * once and path.stat().st_size < once * 4 / 3   # superseded records < a quarter
    assert store.compact(key, min_bytes=0, min_saving=0)
    lines = path.read_text().splitlines()
    assert [line.count('"type":"turn"') for line in lines].count(1) == 8
    assert [line.count('"type":"sent"') for line in lines].count(1) == 1       # only the turn in flight
    fresh = ConversationStore(tmp_path / "conv")
    assert [(e.index, e.reply[:8]) for e in fresh.turns(key)] == [(i, f"answer {i}"[:8]) for i in range(1, 9)]
    assert fresh.handle(key) == {"url": "http://x/c/9", "sent_turn": 8}
    assert fresh.was_sent(key, 9) and fresh.reply(key, 9) is None and fresh.reply(key, 3).startswith("answer 3")
    assert not list((tmp_path / "conv").glob("*.tmp"))
    # small files are left alone
    store.record_reply("explorer:small", 1, "q", "a")
    assert not store.compact("explorer:small") and C.COMPACT_MIN_BYTES > 1000


def test_idle_conversation_files_are_pruned_after_their_retention(tmp_path):
    import time
    store = ConversationStore(tmp_path / "conv")
    store.record_reply("explorer:old", 1, "q", "a")
    store.record_reply("explorer:new", 1, "q", "a")
    old = time.time() - 31 * 86400
    os.utime(store._path("explorer:old"), (old, old))
    (tmp_path / "conv" / "x.jsonl.tmp").write_text("torn rewrite")   # a rewrite cut off by a crash
    fresh = ConversationStore(tmp_path / "conv")                     # a worker start prunes
    assert fresh.turns("explorer:old") == [] and fresh.reply("explorer:new", 1) == "a"
    assert not (tmp_path / "conv" / "x.jsonl.tmp").exists()
