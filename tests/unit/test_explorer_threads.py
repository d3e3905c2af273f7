"""Seed selection, readiness and profundity, turn tasks (conversations, critic accounts, deep mode),
extraction records and dedup, seed files and settings."""
from __future__ import annotations

import pytest

from services.modules.explorer import extraction as X
from services.modules.explorer import model as M
from services.modules.explorer import threads as T
from services.modules.explorer.seeds import SeedError, load_file, same_content, validate
from tests.support import REPO

S = M.ExplorerSettings()


def seed(sid, kind, prio=5, text=None):
    return {"id": sid, "type": kind, "text": text or f"text of {sid}", "priority": prio, "tags": []}


def thread(sid, status="extracted"):
    return {"seed_id": sid, "status": status}


# --- seed selection ---------------------------------------------------------------------------------------

SEEDS = [seed("ax", "axiom", 10), seed("c-high", "conjecture", 9), seed("q-low", "question", 2),
         seed("q-mid", "question", 6)]


def test_questions_before_conjectures_then_priority():
    assert T.select_seed(SEEDS, [])["id"] == "q-mid"
    assert T.select_seed(SEEDS, [thread("q-mid", "active")])["id"] == "q-low"
    assert T.select_seed(SEEDS, [thread("q-mid"), thread("q-low")])["id"] == "c-high"


def test_axioms_never_get_a_thread():
    assert T.select_seed([seed("ax", "axiom")], []) is None


def test_re_exploration_picks_the_highest_priority_seed_without_an_open_thread():
    done = [thread("q-mid"), thread("q-low"), thread("c-high")]
    assert T.select_seed(SEEDS, done)["id"] == "c-high"
    assert T.select_seed(SEEDS, done + [thread("c-high", "active")])["id"] == "q-mid"
    # among equals: the one explored less often first
    twins = [seed("q-a", "question", 5), seed("q-b", "question", 5)]
    assert T.select_seed(twins, [thread("q-a"), thread("q-a"), thread("q-b")])["id"] == "q-b"
    assert T.select_seed(SEEDS, [thread(s["id"], "ready") for s in SEEDS]) is None


def test_new_thread_ids_count_per_seed():
    t = T.new_thread(seed("q-mid", "question", 6), [thread("q-mid"), thread("q-low")], 5.0)
    assert t["id"] == "q-mid.t2" and t["priority"] == 6 and t["status"] == "active" and t["exchanges"] == 0


# --- readiness --------------------------------------------------------------------------------------------

def ex(*roles, text="plain"):
    return [{"role": r, "response": text, "turn": n} for n, r in enumerate(roles, 1)]


def test_profundity_score():
    assert T.profundity(["no signals at all"], S) == 0.0
    assert T.profundity(["this is inevitable and elegant"], S) == 1.0
    assert T.profundity(["inevitable, but wait: arbitrary"], S) == 0.0
    assert T.profundity(["inevitable and elegant; but wait"], S) == 0.75


@pytest.mark.parametrize("roles,text,ready", [
    (("explore",), "plain", False),
    (("explore", "critique", "explore"), "plain", False),
    (("explore", "critique", "explore", "critique"), "plain", True),       # 4 exchanges, 2 critiques
    (("explore",) * 4, "plain", False),                                       # 4 but no critique
    (("explore",) * 12, "plain", True),                                       # the maximum
    (("explore", "critique"), "it naturally follows; inevitable", True),      # profound after a critique
    (("explore",), "it naturally follows; inevitable", False),                # a lone first answer: never
])
def test_readiness(roles, text, ready):
    assert bool(T.readiness(ex(*roles, text=text), S)) == ready


# --- turn tasks -------------------------------------------------------------------------------------------

def live_thread(**kw):
    t = T.new_thread(seed("q", "question", 7), [], 0.0)
    t.update(kw)
    return t


def test_explore_turn_task():
    t = live_thread()
    task = T.turn_task(t, 1, [seed("ax", "axiom", text="Seven points.")], [], ["a", "b"], S)
    assert task["key"] == "explorer:q.t1:turn:1" and task["kind"] == M.EXPLORE
    assert task["payload"]["thread_id"] == "q.t1" and task["payload"]["turn"] == 1
    assert "Seven points." in task["payload"]["prompt"] and "[NEW_INSIGHTS]" in task["payload"]["prompt"]
    assert task["requires"] == {"conversation": "explorer:q.t1"} and task["attrs"] == {"seed_priority": 7}


def test_critique_prefers_another_account_and_has_its_own_conversation():
    t = live_thread(explore_account="a", exchanges=1)
    task = T.turn_task(t, 2, [], ex("explore"), ["a", "b", "c"], S)
    assert task["kind"] == M.CRITIQUE
    assert task["requires"] == {"conversation": "explorer:q.t1:critic", "backends": ["b", "c"]}
    assert "backends" not in T.turn_task(t, 2, [], ex("explore"), ["a"], S)["requires"]   # nobody else
    weighted = M.ExplorerSettings(critique_weights={"b": 70, "c": 30})
    pick = T.turn_task(t, 2, [], ex("explore"), ["a", "b", "c"], weighted)["requires"]["backends"]
    assert pick in (["b"], ["c"]) and pick == T.turn_task(t, 4, [], ex("explore"), ["a", "b", "c"],
                                                          weighted)["requires"]["backends"]


def test_explore_asks_for_deep_mode_only_after_profound_exchanges():
    t = live_thread(exchanges=4)
    deep = T.turn_task(t, 5, [], ex("explore", "critique", "explore", "critique", text="inevitable"), ["a"], S)
    assert deep["requires"]["mode"] == "deep" and deep["requires"]["deep_fallback"] is True
    plain = T.turn_task(t, 5, [], ex("explore", "critique", "explore", "critique"), ["a"], S)
    assert "mode" not in plain["requires"]


def test_a_retry_changes_key_and_payload():
    task = T.turn_task(live_thread(attempt=2), 1, [], [], ["a"], S)
    assert task["key"] == "explorer:q.t1:turn:1:retry2" and task["payload"]["retry"] == 2


# --- extraction and dedup ---------------------------------------------------------------------------------

def test_corpus_includes_pending_blessed_seeds_and_documented_sections():
    insights = [{"id": "i1", "text": "pending one", "status": "pending"},
                {"id": "i2", "text": "blessed", "status": "blessed"},
                {"id": "i3", "text": "rejected", "status": "rejected"},
                {"id": "i4", "text": "dup", "status": "duplicate"}]
    sections = [("sections/s1", {"text": "a documented section"}), ("sections/s2", "junk"),
                ("sections/s3", {"title": "x"})]
    known = X.corpus(insights, [seed("ax", "axiom", text="seven points")], sections)
    assert known == {"i1": "pending one", "i2": "blessed", "seed:ax": "seven points",
                     "section:s1": "a documented section"}


def test_new_insights_classify_duplicates_candidates_and_new_within_the_batch():
    t = live_thread()
    parsed = [{"text": text, "confidence": "high", "tags": [], "proposed_by": [], "depends_on": [],
               "unresolved_depends": []}
              for text in ("The Fano plane is self-dual under point-line exchange.",
                           "The Fano plane is self-dual under point-line exchange.",     # the same claim again
                           "The Fano plane is self-dual under the exchange of points and lines.",
                           "Octonions multiply along oriented lines.")]
    made = X.new_insights(t, parsed, {"seed:ax": "seven points"}, 42, 1.0)
    assert [i["id"] for i in made] == ["q.t1.i1", "q.t1.i2", "q.t1.i3", "q.t1.i4"]
    assert made[0]["dedup"]["verdict"] == "new" and made[0]["status"] == "pending" and made[0]["task_id"] == 42
    assert made[1]["status"] == "duplicate" and made[1]["duplicate_of"] == "q.t1.i1"      # recorded, not dropped
    assert made[2]["dedup"]["verdict"] == "candidates" and made[2]["dedup"]["candidates"][0][0] == "q.t1.i1"
    task = X.dedup_task(made[2], {"q.t1.i1": made[0]["text"]})
    assert task["key"] == "explorer:q.t1.i3:dedup" and task["payload"]["candidates"] == ["q.t1.i1"]
    assert "[q.t1.i1]" in task["payload"]["prompt"]


def test_panel_tasks():
    t = live_thread(status="synthesised")
    task = X.extract_task(t, "beta", {"title": "T", "content": "C"}, [],
                          [{"id": "b1", "text": "known", "status": "blessed",
                                                                            "tags": []}], S)
    assert task["key"] == "explorer:q.t1:extract:beta" and task["requires"] == {"backends": ["beta"]}
    assert "[b1]" in task["payload"]["prompt"]
    cons = X.consolidate_task(t, [{"account": "beta", "blocks": [{"text": "claim one", "scores": {}}]}],
                              [{"id": "b1", "text": "x", "status": "blessed"}], S)
    assert cons["payload"]["blessed_ids"] == ["b1"] and "INSIGHT: claim one" in cons["payload"]["prompt"]
    syn = X.synthesis_task(live_thread(status="ready"), [], [], S)
    assert syn["requires"] == {"mode": "deep", "deep_fallback": True}


def test_the_consolidation_prompt_quotes_only_proposals_as_insight_lines():
    # the simulated provider merges every "INSIGHT:" line of the prompt: the format text must not contain one
    import re
    cons = X.consolidate_task(live_thread(), [], [], S)
    assert not re.findall(r"^\W*INSIGHT\W*:", cons["payload"]["prompt"], re.M)


# --- seeds and settings -----------------------------------------------------------------------------------

def test_demo_seed_file():
    seeds = load_file(str(REPO / "seeds" / "demo.toml"), 1.0)
    kinds = {s["type"] for s in seeds}
    assert kinds == {"axiom", "question", "conjecture"} and len({s["id"] for s in seeds}) == len(seeds)


def test_seed_validation():
    s = validate({"text": "  Why 7? ", "type": "question", "priority": "high", "tags": ["Group Theory", "#fano"]}, 3.0)
    assert s["id"].startswith("seed-") and s["text"] == "Why 7?" and s["priority"] == 8
    assert s["tags"] == ["group_theory", "fano"] and s["created_at"] == 3.0
    again = validate({"text": "Why 7?", "type": "question", "priority": 8, "tags": ["group_theory", "fano"]}, 9.0, s)
    assert same_content(s, again) and again["created_at"] == 3.0 and again["id"] == s["id"]
    for bad in ({"text": ""}, {"text": "x", "type": "lemma"}, {"text": "x", "priority": 11},
                {"text": "x", "id": "Bad Id"},
                {"text": "x", "colour": "red"}):
        with pytest.raises(SeedError):
            validate(bad, 0.0)


def test_seed_file_errors(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[seeds]]\nid = "a"\ntext = "x"\n[[seeds]]\nid = "a"\ntext = "y"\n')
    with pytest.raises(SeedError, match="twice"):
        load_file(str(path), 0.0)
    path.write_text('[[seeds]]\ntext = "x"\ntype = "nope"\n')
    with pytest.raises(SeedError, match="seed #1"):
        load_file(str(path), 0.0)


def test_settings_table():
    s = M.settings_from_table({"max_active_threads": 1, "profundity_threshold": 1, "panel_accounts": ["a"],
                               "deep": {"synthesis": ["deep", False]}})
    assert s.max_active_threads == 1 and s.profundity_threshold == 1.0 and s.panel_accounts == ("a",)
    assert s.deep_for("synthesis") == ("deep", False) and s.deep_for("review1") == ("standard", False)
    with pytest.raises(M.SettingsError, match="unknown"):
        M.settings_from_table({"max_thread": 1})
    with pytest.raises(M.SettingsError, match="int"):
        M.settings_from_table({"max_active_threads": "3"})


def test_a_bad_settings_table_stops_the_module_with_the_config_exit_code(tmp_path):
    import subprocess
    import sys

    from shared.errors import ExitCode
    from tests.support import write_config
    path = write_config(tmp_path, accounts={"a": ["standard"]})
    path.write_text(path.read_text() + "[modules.explorer]\nmax_thread = 3\n")
    res = subprocess.run([sys.executable, "-m", "services", "explorer", "--config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == ExitCode.CONFIG and "max_thread" in res.stderr


def test_an_exchange_stores_its_sections_only_when_its_response_does_not_give_them_back():
    import random

    from services.backends import sim_answers as SA
    from services.modules.explorer import parsers as PP
    thread, task = {"id": "s.t1"}, {"id": 5, "requires": {}, "payload": {"prompt": "p"}}
    for i in range(200):
        k = 1 + i % 2
        kind = "explorer.explore" if k == 1 else "explorer.critique"
        rng = random.Random(i)
        parsed = (PP.parse_explore if k == 1 else PP.parse_critique)(
            SA.decorate(SA.answer(kind, {}, "p", "standard", rng), kind, rng, sloppy_rate=0.5))
        ex = T.exchange_record(thread, k, parsed, task, {"account": "a"}, 1.0)
        assert "sections" not in ex and "prompt" not in ex and T.exchange_sections(ex) == parsed["sections"]
    # a bullet that reads like a tag would be parsed back differently: the sections are then stored
    odd = {"response": "[NEW_INSIGHTS]\n- a\n[QUESTIONS]\n- b", "sections": {"NEW_INSIGHTS": ["a\n[QUESTIONS]", "b"]}}
    ex = T.exchange_record(thread, 1, odd, task, {}, 1.0)
    assert ex["sections"] == odd["sections"] and T.exchange_sections(ex) == odd["sections"]
    assert T.exchange_sections({"role": "explore", "response": "no tags at all"}) is None


def test_a_prompt_is_kept_by_reference_to_the_exchanges_it_quotes():
    seeds = [{"id": "ax", "type": "axiom", "text": "The Fano plane has 7 points.", "priority": 5}]
    thread = {"id": "s.t1", "seed_type": "question", "seed_text": "Why 168?", "priority": 5}
    settings = M.ExplorerSettings()
    previous = []
    for k in range(1, 10):
        task = dict(T.turn_task(thread, k, seeds, previous, ["a"], settings), id=k)
        prompt = task["payload"]["prompt"]
        parsed = {"response": f"[NEW_INSIGHTS]\n- claim {k} " + "x" * 2000,
                  "sections": {"NEW_INSIGHTS": [f"claim {k}"]}}
        ex = T.exchange_record(thread, k, parsed, task, {"account": "a"}, 1.0, previous)
        assert "prompt" not in ex and T.exchange_prompt(ex, previous + [ex]) == prompt
        if k > 1:   # the quoted exchanges are references: the record holds the template, not the quotes
            assert len(ex["prompt_ref"]) < 2500 < len(prompt)
        previous.append(ex)
    assert T.resolve_prompt(previous[-1]["prompt_ref"], {}) is None                      # exchanges missing
    assert T.prompt_ref("text with a \x1e separator", previous) is None                 # kept whole instead
    ex = T.exchange_record(thread, 10, parsed, {"id": 10, "payload": {"prompt": "odd \x1e"}}, {}, 1.0, previous)
    assert ex["prompt"] == "odd \x1e" and "prompt_ref" not in ex and T.exchange_prompt(ex, previous) == "odd \x1e"
