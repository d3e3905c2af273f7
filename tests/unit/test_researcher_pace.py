"""The researcher bounds its own reaction to unusable answers (issue 16; services/modules/pace.py):
question batches whose answers keep being unusable are paused with a visible reason until ``fanoctl
research resume``, and no more than ``max_tasks_per_hour`` tasks are created per hour."""
from __future__ import annotations

import json

from cli.research_researcher import questions_text
from services.modules import pace
from services.modules.operations import researcher as O
from services.modules.researcher import model as M
from services.modules.researcher.service import EVALUATE_SOURCE, EXTRACT_FINDINGS, GENERATE_QUESTIONS
from shared import txn
from tests.unit.test_researcher_service import URL_A, fetched, get, settle, tasks

HOUR = 3600.0
QUESTIONS = json.dumps({"questions": [{"question": "Where else does 168 appear?", "type": "supporting",
                                       "numbers": [168], "priority": 8}]})


def new_insight(svc, n: int) -> None:
    svc.client.txn("explorer", [txn.put(f"insights/i{n}", {"id": f"i{n}", "text": f"Insight {n} about 168.",
                                                            "status": "blessed", "tags": []})])


def batch(svc, n: int, text: str) -> None:
    """A new insight, observed as the next batch, answered with ``text``."""
    new_insight(svc, n)
    svc.observe()
    [t] = [t for t in tasks(svc, GENERATE_QUESTIONS) if t["state"] == "PENDING"]
    assert svc.apply(settle(svc, t, text))


def test_question_batches_pause_after_unusable_answers_in_a_row_until_resumed(make_researcher):
    svc = make_researcher(pause_after=2)
    batch(svc, 1, "Sorry, no.")
    assert get(svc, M.K_QUESTION_STREAK)["failures"] == 1 and not get(svc, M.K_QUESTION_STREAK)["paused"]
    batch(svc, 2, "Still nothing usable.")
    reason = O.waiting(svc.client, svc.clock.world())["questions"]
    assert reason.startswith("2 unusable answers in a row to the researcher's question batches (last: "
                             "unusable answer"), reason
    assert "`fanoctl research resume`" in reason
    new_insight(svc, 3)
    svc.observe()
    assert get(svc, M.K_QUESTION_BATCH) is None and len(tasks(svc, GENERATE_QUESTIONS)) == 2   # paused
    text = questions_text({"questions": [], "waiting": O.waiting(svc.client, svc.clock.world())})
    assert "question batches paused: 2 unusable answers in a row" in text, text
    assert O.resume_questions(svc.client) == {"resumed": True}
    assert O.resume_questions(svc.client) == {"resumed": False}
    svc.observe()
    assert get(svc, M.K_QUESTION_BATCH)["payload"]["observed"] == ["explorer/i3"]


def test_a_usable_batch_ends_the_streak(make_researcher):
    svc = make_researcher(pause_after=2)
    batch(svc, 1, "Sorry, no.")
    batch(svc, 2, QUESTIONS)
    assert get(svc, M.K_QUESTION_STREAK)["failures"] == 0
    batch(svc, 3, "Sorry, no.")
    assert not get(svc, M.K_QUESTION_STREAK)["paused"]


def test_no_more_than_max_tasks_per_hour_start_and_started_sources_finish(make_researcher):
    svc = make_researcher(max_tasks_per_hour=2, trusted_domains={"a.example": 90})
    sid = fetched(svc, URL_A)                                 # its evaluation: task 1 of the hour
    new_insight(svc, 1)
    svc.observe()                                             # a question batch: task 2
    [q] = tasks(svc, GENERATE_QUESTIONS)
    assert svc.apply(settle(svc, q, QUESTIONS))
    new_insight(svc, 2)
    svc.observe()                                             # no room: the next batch waits
    assert get(svc, M.K_QUESTION_BATCH) is None and len(tasks(svc, GENERATE_QUESTIONS)) == 1
    assert svc.budget_room() == 0                             # no fetch starts either
    note = O.waiting(svc.client, svc.clock.world())["budget"]
    assert note.startswith("2 tasks created this hour (max_tasks_per_hour = 2); new work waits until"), note
    # a started source finishes: its extraction is created (and counted) past the budget
    [ev] = tasks(svc, EVALUATE_SOURCE)
    assert svc.apply(settle(svc, ev, json.dumps({"score": 80, "reasons": ["ok"]})))
    assert [t["payload"]["source_id"] for t in tasks(svc, EXTRACT_FINDINGS)] == [sid]
    assert get(svc, pace.HOUR_KEY)["tasks"] == 3
    svc.clock.advance(HOUR)
    svc.observe()
    assert get(svc, M.K_QUESTION_BATCH)["payload"]["observed"] == ["explorer/i2"]
    assert get(svc, pace.HOUR_KEY)["tasks"] == 1 and O.waiting(svc.client, svc.clock.world())["budget"] is None
