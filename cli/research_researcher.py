"""``fanoctl research``: the researcher's questions, sources, findings and cross-references; promote a
finding to a seed; add a source.

Reads the ``researcher`` namespace through the broker client; the two writing commands call the
operations layer (``services/modules/operations/researcher.py``): one broker transaction each,
conditioned on the key being absent (``if_version`` 0), so repeating a command is harmless. Entity shapes
and the promotion contract: ``services/modules/researcher/model.py``.

JSON shapes (``--json``)::

    research questions    {"questions": [Question, ...], "waiting": {"questions", "budget"}}
                          (priority, newest first; waiting: why no new batch starts, each a reason or null)
    research resume       {"resumed": bool}
    research sources      {"sources": [Source, ...]}                     (added order)
    research findings     {"findings": [Finding + {"promoted": bool, "crossrefs": [key]}]}
    research crossrefs    {"crossrefs": [CrossRef + {"key"}]}
    research errors       {"errors": [{task_id, kind, key, error, at, partial?}]}
    research promote      {"promotion": Promotion, "created": bool}
    research add-source   {"source": Source, "created": bool}
"""
from __future__ import annotations

import time

import click

from cli import render as R
from cli.app import client, fail, json_option, out
from services.modules.researcher import model as M
from shared.errors import ErrorCode, ExitCode, FanoError


def _scan(prefix: str) -> list[tuple[str, int, object]]:
    return list(client().kv_items(M.NS, prefix))


def _now() -> float:
    from shared.clock import Clock
    try:
        return Clock.from_env().world()
    except ValueError:
        return time.time()


@click.group()
def research():
    """The researcher: questions, sources, findings; promote findings to seeds."""


# --- views -------------------------------------------------------------------------------------------------

@research.command("questions")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def questions(limit):
    """Research questions, highest priority first."""
    from services.modules.operations import research_views as V
    from services.modules.operations import researcher as O
    c = client()
    out({"questions": V.questions(c)[:limit], "waiting": O.waiting(c, _now())}, questions_text)


def questions_text(d: dict) -> str:
    waiting = d.get("waiting") or {}
    notes = ([f"question batches paused: {waiting['questions']}"] if waiting.get("questions") else []) + \
        ([waiting["budget"]] if waiting.get("budget") else [])
    if not d["questions"]:
        return "\n".join(["no research questions yet", *notes])
    return "\n".join([*notes, R.table(["ID", "PRIO", "TYPE", "NUMBERS", "QUESTION"],
                      [[q["id"], q.get("priority"), q.get("type"), ",".join(map(str, q.get("numbers") or [])) or "-",
                        q.get("question")] for q in d["questions"]], {3: 16, 4: 90})])


@research.command("sources")
@click.option("--status", default=None, help="Only sources in this status (new, fetched, trusted, extracted, ...).")
@json_option
def sources(status):
    """Sources: status, trust score and tier, findings, URL."""
    from services.modules.operations import research_views as V
    out({"sources": V.sources(client(), status)}, sources_text)


def sources_text(d: dict) -> str:
    if not d["sources"]:
        return "no sources (add one with: fanoctl research add-source URL)"
    rows = []
    for s in d["sources"]:
        trust = "-" if s.get("trust_score") is None else f"{s['trust_score']} t{s.get('trust_tier', 0)}"
        failed = s.get("status", "").endswith(("failed", "excluded", "empty"))
        err = (s.get("error") or {}).get("message") if failed else ""
        rows.append([s["id"], s.get("status"), trust, s.get("findings", 0), s.get("origin"),
                     s.get("url") + (f"  ({err})" if err else "")])
    return R.table(["ID", "STATUS", "TRUST", "FINDINGS", "ORIGIN", "URL"], rows, {4: 20, 5: 100})


@research.command("findings")
@click.option("--source", default=None, metavar="SID", help="Only findings of this source (id or prefix).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def findings(source, limit):
    """Findings, most confident first; X marks cross-referenced, P promoted ones."""
    from services.modules.operations import research_views as V
    out({"findings": V.findings(client(), source)[:limit]}, findings_text)


def findings_text(d: dict) -> str:
    if not d["findings"]:
        return "no findings yet"
    rows = [[f["id"], ("X" if f.get("crossrefs") else "-") + ("P" if f.get("promoted") else "-"), f.get("type"),
             f"{f.get('confidence', 0):.2f}" + ("" if f.get("status") == "kept" else " low"),
             ",".join(map(str, f.get("numbers") or [])) or "-", f.get("domain"), f.get("summary")]
            for f in d["findings"]]
    return R.table(["ID", "XP", "TYPE", "CONF", "NUMBERS", "DOMAIN", "SUMMARY"], rows, {4: 14, 5: 24, 6: 80})


@research.command("crossrefs")
@click.option("--all", "all_", is_flag=True, help="Also numbers and concepts seen in one domain only.")
@json_option
def crossrefs(all_):
    """Numbers and concepts found in two or more domains, strongest first."""
    rows = [dict(v, key=k) for k, _, v in _scan("crossrefs/") if all_ or v.get("active")]
    rows.sort(key=lambda r: (-len(r.get("domains") or []), -len(r.get("findings") or []), r["key"]))
    out({"crossrefs": rows}, crossrefs_text)


def crossrefs_text(d: dict) -> str:
    if not d["crossrefs"]:
        return "no cross-references yet"
    return R.table(["KIND", "VALUE", "DOMAINS", "FINDINGS", "STRENGTH"],
                   [[r.get("kind"), r.get("value"), ", ".join(r.get("domains") or []), len(r.get("findings") or []),
                     r.get("strength")] for r in d["crossrefs"]], {1: 40, 2: 60})


@research.command("errors")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def errors(limit):
    """Unusable or partly unusable answers of researcher tasks, newest first."""
    rows = sorted((v for _, _, v in _scan("errors/")), key=lambda e: -e.get("task_id", 0))[:limit]
    out({"errors": rows}, lambda d: R.table(
        ["TASK", "KIND", "WHEN", "ERROR"],
        [[e.get("task_id"), e.get("kind"), R.relative(e.get("at"), _now()), e.get("error")] for e in d["errors"]],
        {3: 100}) if d["errors"] else "no errors")


# --- writes ------------------------------------------------------------------------------------------------

@research.command("promote")
@click.argument("finding")
@click.option("--type", "kind", type=click.Choice(["question", "conjecture"]), default=None,
              help="Seed type (default: question for challenging/contextual findings, else conjecture).")
@click.option("--priority", type=click.IntRange(1, 10), default=None,
              help="Seed priority 1-10 (default: confidence x 10).")
@json_option
def promote(finding, kind, priority):
    """Propose FINDING (id or unique prefix) as a seed: writes promotions/<id> for the explorer to import."""
    from services.modules.operations import researcher as O
    try:
        d = O.promote_finding(client(), finding, kind=kind, priority=priority, now=_now())
    except FanoError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            fail(f"NOT_FOUND: {exc.message} (see: fanoctl research findings)", ExitCode.FAILURE)
        raise
    rec, fid = d["promotion"], d["promotion"].get("finding_id")
    if d["created"]:
        out(d, lambda d: f"finding {fid} promoted: {rec['type']} (priority {rec['priority']}): {rec['text']}")
    else:
        out(d, lambda d: f"finding {fid} was already promoted ({rec.get('by')}): {rec.get('type')}: {rec.get('text')}")


@research.command("resume")
@json_option
def resume(**_):
    """Propose question batches again after the researcher paused them (their answers kept being unusable)."""
    from services.modules.operations import researcher as O
    d = O.resume_questions(client())
    out(d, "question batches resumed" if d["resumed"] else "question batches were not paused")


@research.command("add-source")
@click.argument("url")
@click.option("--note", default="", help="Why this source (shown in its record).")
@json_option
def add_source(url, note):
    """Add a source URL to research (fetched, evaluated, and mined for findings if trusted)."""
    from services.modules.operations import researcher as O
    try:
        d = O.add_source(client(), url, note=note, now=_now())
    except FanoError as exc:
        if exc.code == ErrorCode.BAD_ARGUMENT:
            raise click.BadParameter(exc.message, param_hint="URL") from None
        raise
    rec = d["source"]
    out(d, lambda d: f"source {rec['id']} {'added' if d['created'] else 'already known'} ({rec.get('status')}): "
                     f"{rec['url']}")
