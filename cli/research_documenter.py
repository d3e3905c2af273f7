"""fanoctl commands for the documenter: author comments and the document's versions.

``comments add SECTION TEXT [--quote PASSAGE]`` / ``comments ls``; ``document show|export [PATH]|versions|
diff OLD NEW|revert VERSION|disputes|retry INSIGHT``; every command takes ``--json``. They read the
``documenter`` namespace in the broker directly and write it through the operations layer
(``services/modules/operations/documenter.py``: version checks where the running module could race them;
a revert is computed from what it read and recomputed if the document changed meanwhile), and read the
document's history through the same layer as the web panel (versions, a version's sections, diffs); a
command here parses, calls the operation and renders. The key layout is documented in
``services/modules/documenter/model.py``.
"""
from __future__ import annotations

import click

from cli import render as R
from cli.app import Ctl, client, fail, json_option, out
from shared.errors import ErrorCode, ExitCode, FanoError

NS = "documenter"


def _store():
    from services.modules.store import Store
    return Store(client(), NS)


def _now() -> float:
    from shared.clock import Clock
    return Clock.from_env().world()   # the modules' clock (scaled in simulations), so ages compare


# --- comments ------------------------------------------------------------------------------------------

@click.group()
def comments():
    """Author comments on document sections (addressed first by the documenter)."""


@comments.command("add")
@click.argument("section")
@click.argument("text")
@click.option("--quote", default=None, help="The passage of the section the comment is about.")
@json_option
def comments_add(section, text, quote):
    """Comment on SECTION (an id such as s0003, see `document show`)."""
    from services.modules.operations import documenter as O
    try:
        rec = O.add_comment(client(), section, text, quote=quote, now=_now())
    except FanoError as exc:
        if exc.code == ErrorCode.BAD_ARGUMENT:
            raise click.BadParameter(exc.message, param_hint="TEXT") from None
        if exc.code == ErrorCode.NOT_FOUND:
            fail(f"NOT_FOUND: {exc.message} (see `fanoctl document show`)", ExitCode.FAILURE)
        raise
    out(rec, f"comment {rec['id']} on {section} added; the documenter addresses it next")


@comments.command("ls")
@click.option("--status", type=click.Choice(["open", "addressing", "resolved", "needs_human"]), default=None)
@click.option("--section", default=None, help="Only comments on this section.")
@json_option
def comments_ls(status, section):
    """Comments with their status, resolution and the version that applied them."""
    rows = [c for c in _store().records("comments/")
            if (status is None or c.get("status") == status) and (section is None or c.get("section") == section)]
    out({"comments": rows, "now": _now()}, comments_text)


def comments_text(d: dict) -> str:
    if not d["comments"]:
        return "no comments"
    rows = [[c.get("id", "?"), c.get("section", "?"), c.get("status", "?"),
             R.duration(d["now"] - (c.get("created") or d["now"])),
             "-" if c.get("version") is None else str(c["version"]), c.get("text", ""),
             c.get("resolution") or c.get("last_error") or ""] for c in d["comments"]]
    return R.table(["ID", "SECTION", "STATUS", "AGE", "VERSION", "COMMENT", "RESOLUTION"], rows, {5: 40, 6: 50})


# --- document ------------------------------------------------------------------------------------------

@click.group()
def document():
    """The living document: outline, versions, revert, export, disputed insights."""


def _disputes(store) -> list[dict]:
    rows = [j for j in store.records("jobs/") if int(j.get("disputes") or 0) > 0
            and j.get("stage") not in ("done", "duplicate")]
    return sorted(rows, key=lambda j: (j.get("stage") != "needs_human", -int(j.get("disputes") or 0)))


@document.command("show")
@click.option("--version", "version", type=int, default=None, help="Print the text of this version.")
@click.option("--text", "as_text", is_flag=True, help="Print the current document as Markdown.")
@json_option
def document_show(version, as_text):
    """The outline (sections, status, reviews), open comments and insights waiting for a human."""
    from services.modules.documenter import export
    from services.modules.documenter import model as M
    from services.modules.operations import documenter as O
    if version is not None or as_text:
        try:
            d = O.version_sections(client(), version)
        except FanoError as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            fail(f"NOT_FOUND: {exc.message}", ExitCode.FAILURE)
        out(d, lambda d: export.render(d["sections"], d["version"]))
        return
    store = _store()
    doc = M.read_doc(store)
    comments_open = [c for c in store.records("comments/")
                     if c.get("status") in ("open", "addressing", "needs_human")]
    data = {"version": doc.version, "updated": doc.head.get("updated"), "sections": doc.ordered(),
            "concepts": sorted(doc.established().values(), key=str.lower), "comments": comments_open,
            "disputes": _disputes(store), "plan": store.get(M.PLAN_STATE)[1], "review": store.get(M.REVIEW_STATE)[1],
            "incorporated": sum(1 for _ in store.scan("incorporated/")), "now": _now()}
    data["waiting"] = O.pauses(store, data["now"])
    out(data, show_text)


def show_text(d: dict) -> str:
    now = d["now"]
    changed = f", changed {R.relative(d['updated'], now)}" if d.get("updated") else ""
    lines = [f"document version {d['version']}{changed}; {len(d['sections'])} section(s), "
             f"{len(d['concepts'])} concept(s), {d['incorporated']} insight(s) incorporated"]
    if d["sections"]:
        rows = [[s["id"], s.get("title", ""), s.get("status", ""), str(s.get("rev", "")),
                 R.relative(s["reviewed_at"], now) if s.get("reviewed_at") else "never",
                 ", ".join(s.get("establishes") or []) or "-"] for s in d["sections"]]
        lines += ["", R.table(["SECTION", "TITLE", "STATUS", "REV", "REVIEWED", "ESTABLISHES"], rows, {1: 50, 5: 40})]
    if d["comments"]:
        lines += ["", f"comments not resolved: {len(d['comments'])} "
                  f"({sum(1 for c in d['comments'] if c.get('status') == 'needs_human')} waiting for a human)"]
    waiting = [j for j in d["disputes"] if j.get("stage") == "needs_human"]
    if d["disputes"]:
        lines += ["", f"disputed insights: {len(d['disputes'])}, waiting for a human: {len(waiting)} "
                  "(`fanoctl document disputes`, `document retry INSIGHT`)"]
    for what, reason in (d.get("waiting") or {}).items():
        if reason:
            lines += ["", f"{what} paused: {reason}" if what != "budget" else reason]
    plan = d.get("plan") or {}
    last = plan.get("last") or {}
    if last:
        what = last.get("decision") or f"error: {last.get('error', '')[:80]}"
        lines += ["", f"last planning turn: {what}" + (f" {last['insight_id']}" if last.get("insight_id") else "")
                  + (f" — {last['outcome']}" if last.get("outcome") else "")]
    return "\n".join(lines)


@document.command("versions")
@json_option
def document_versions(**_):
    """Every version: number, time, what changed it."""
    from services.modules.operations import documenter as O
    out({"versions": O.versions(client()), "now": _now()}, versions_text)


def versions_text(d: dict) -> str:
    if not d["versions"]:
        return "no versions yet: the document is empty"
    rows = [[str(v["version"]), R.relative(v.get("at"), d["now"]), (v.get("cause") or {}).get("kind", "?"),
             str(len(v.get("manifest") or [])), v.get("description", "")] for v in d["versions"]]
    return R.table(["VERSION", "WHEN", "CAUSE", "SECTIONS", "DESCRIPTION"], rows, {4: 80})


@document.command("diff")
@click.argument("old", type=int)
@click.argument("new", type=int)
@json_option
def document_diff(old, new):
    """What changed from version OLD to version NEW, section by section (a line diff of each)."""
    from services.modules.operations import documenter as O
    out(O.diff_versions(client(), old, new), diff_text)


def diff_text(d: dict) -> str:
    lines = [f"version {d['from']} -> {d['to']}"]
    for sec in d["sections"]:
        if sec["change"] == "same":
            continue
        lines += ["", f"{sec['id']} {sec['title']} ({sec['change']})"]
        lines += [f"{ln['tag']} {ln['text']}" for ln in sec["lines"] if ln["tag"] != " " or sec["change"] == "changed"]
    if len(lines) == 1:
        lines.append("no differences")
    return "\n".join(lines)


@document.command("revert")
@click.argument("version", type=int)
@json_option
def document_revert(version):
    """Make the document equal to VERSION again, as a new version (nothing is lost)."""
    from services.modules.operations import documenter as O
    d = O.revert_document(client(), version, now=_now())
    out(d, f"version {d['version']}: the document equals version {version} again "
           f"({len(d['changed_sections'])} section(s) changed)")


@document.command("export")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@json_option
def document_export(path):
    """Write the current document as Markdown to PATH (default: the module's export file), atomically."""
    from services.modules.documenter import service as S
    if path is None:
        from shared.config import load_config
        path = S.export_path(load_config(click.get_current_context().find_object(Ctl).config_path))
    version = S.write_export(_store(), path)
    out({"path": str(path), "version": version}, f"version {version} written to {path}")


@document.command("disputes")
@json_option
def document_disputes(**_):
    """Insights whose incorporation failed, with why; those at the limit wait for `document retry`."""
    out({"disputes": _disputes(_store())}, disputes_text)


def disputes_text(d: dict) -> str:
    if not d["disputes"]:
        return "no disputed insights"
    rows = [[j.get("insight_id", "?"), j.get("stage", "?"), str(j.get("disputes", 0)), str(j.get("run", 0)),
             j.get("last_reason", "")] for j in d["disputes"]]
    return R.table(["INSIGHT", "STAGE", "DISPUTES", "RUNS", "LAST REASON"], rows, {4: 90})


@document.command("resume")
@json_option
def document_resume(**_):
    """Resume planning and section reviews paused after unusable answers in a row (`document show` says why)."""
    from services.modules.operations import documenter as O
    res = O.resume_work(client())
    out(res, "resumed: " + ", ".join(res["resumed"]) if res["resumed"] else "nothing was paused")


@document.command("retry")
@click.argument("insight")
@json_option
def document_retry(insight):
    """Give a disputed insight (e.g. one waiting for a human) a fresh start: disputes back to 0."""
    from services.modules.operations import documenter as O
    job = O.retry_insight(client(), insight, now=_now())
    out(job, f"insight {insight} will be planned again")
