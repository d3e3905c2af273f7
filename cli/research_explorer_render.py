"""Readable views of the explorer's records for ``fanoctl seeds|threads|insights`` (pure functions).

They read the shapes documented in ``services/modules/explorer/model.py`` and tolerate missing fields.
"""
from __future__ import annotations

from cli import render as R


def seeds_text(seeds: list[dict], threads: dict) -> str:
    if not seeds:
        return "no seeds (add some: fanoctl seeds import seeds/demo.toml)"
    order = {"question": 0, "conjecture": 1, "axiom": 2}
    rows = [[s["id"], s.get("type", "?"), s.get("priority", "-"), threads.get(s["id"], 0),
             ",".join(s.get("tags") or []) or "-",
             s.get("text", "")]
            for s in sorted(seeds, key=lambda s: (order.get(str(s.get("type")), 3), -s.get("priority", 5), s["id"]))]
    text = R.table(["ID", "TYPE", "PRIO", "THREADS", "TAGS", "TEXT"], rows, {4: 30, 5: 70})
    # what the explorer decided about a seed (services/modules/explorer/pacing.py), one line each
    notes = [f"{s['id']}: paused: {s['pause_reason']}" for s in seeds if s.get("paused")]
    notes += [f"{s['id']}: held: {s['held_reason']}" for s in seeds if s.get("held") and s.get("held_reason")]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def threads_text(threads: list[dict]) -> str:
    if not threads:
        return "no threads yet"
    rows = []
    for t in threads:
        status = t["status"] + (f"({t['paused_from']})" if t.get("paused_from") else "")
        # a paused thread says why it is paused (its pause reason carries the last error)
        note = (t.get("pause_reason") if t["status"] == "paused" else None) or t.get("last_error") or \
            t.get("pause_reason") or t.get("ready_reason") or t.get("extraction_note") or ""
        rows.append([t["id"], status, t.get("exchanges", 0), t.get("critiques", 0), t.get("priority", "-"),
                     t.get("explore_account") or "-", len(t.get("insight_ids") or []), note])
    return R.table(["ID", "STATUS", "TURNS", "CRIT", "PRIO", "EXPLORER", "INSIGHTS", "NOTE"], rows, {7: 60})


def thread_text(d: dict) -> str:
    t = d["thread"]
    lines = [R.fields([("thread", t["id"]),
                       ("seed", f"{t['seed_id']} ({t.get('seed_type')}): {t.get('seed_text', '')}"),
                       ("status", t["status"] + (f" (from {t['paused_from']})" if t.get("paused_from") else "")),
                       ("priority", t.get("priority")),
                       ("turns", f"{t.get('exchanges', 0)} ({t.get('critiques', 0)} critiques)"),
                       ("explorer account", t.get("explore_account") or "-"), ("profundity", t.get("profundity")),
                       ("ready because", t.get("ready_reason") or "-"), ("panel", _panel(t)),
                       ("extraction", t.get("extraction_note") or "-"),
                       ("last error", t.get("last_error") or "-"), ("pause reason", t.get("pause_reason") or "-")])]
    for e in d.get("exchanges") or []:
        head = (f"\n=== turn {e['turn']}: {e['role'].upper()} on {e.get('backend') or '?'} "
                f"({e.get('mode') or 'mode unknown'}) ===")
        if "prompt" in e:  # threads show --prompts
            prompt = e["prompt"] if e["prompt"] is not None else f"(not kept: task {e.get('task_id')} was compacted)"
            head += f"\n--- prompt ---\n{prompt}\n--- answer ---"
        lines.append(f"{head}\n{e.get('response', '')}")
    s = d.get("synthesis")
    if s:
        lines.append(f"\n=== SYNTHESIS on {s.get('backend') or '?'} ({s.get('mode') or 'mode unknown'}) ===\n"
                     f"TITLE: {s.get('title')}\nSUMMARY: {s.get('summary')}\n\n{s.get('content', '')}")
    for p in d.get("proposals") or []:
        lines.append(f"\n=== PROPOSALS of {p['account']} ({len(p.get('blocks') or [])}) ===")
        lines += [f"- {b['text']}" for b in p.get("blocks") or []]
    if d.get("insights"):
        lines.append("\n=== INSIGHTS ===")
        lines.append(insights_text(d["insights"], {}))
    return "\n".join(lines)


def _panel(t: dict) -> str:
    if not t.get("panel"):
        return "-"
    settled = t.get("panel_settled") or {}
    return ", ".join(f"{a}:{settled.get(a, 'waiting')}" for a in t["panel"]) + (" (closed)" if t.get("panel_closed")
                                                                                else "")


def _rating(i: dict) -> str:
    return ((i.get("outcome") or {}).get("rating") or "-") + ("!" if i.get("disputed") else "")


def insights_text(insights: list[dict], stages: dict) -> str:
    if not insights:
        return "no insights"
    rows = [[i["id"], i["status"]
             + (f"({stages[i['id']]})" if i["status"] == "pending" and stages.get(i["id"]) else ""),
             _rating(i), i.get("priority", "-"), f"v{i.get('version', 1)}", i.get("text", "")] for i in insights]
    return R.table(["ID", "STATUS", "RATING", "PRIO", "VER", "TEXT"], rows, {5: 90}) + "\n(RATING ! = disputed)"


def _response(who: str, r: dict) -> list[str]:
    if r.get("dropped"):
        return [f"  {who}: dropped ({r.get('error', '')})"]
    head = f"  {who}: {r.get('rating', '')} [{r.get('backend') or '?'}, {r.get('mode') or 'mode unknown'}]"
    out = [head]
    for k in ("argument", "response", "reasoning", "reason", "mathematical_verification", "structural_analysis",
              "naturalness_assessment", "new_information"):
        if r.get(k):
            out.append(f"    {k}: {R.truncate(r[k], 300)}")
    if r.get("proposed_modification"):
        out.append(f"    proposed modification: {r['proposed_modification']}")
    if "accept_modification" in r:
        out.append(f"    accepts the modification: {'yes' if r['accept_modification'] else 'no'}")
    return out


def _llm_verdict(llm: dict) -> str:
    if llm.get("duplicate"):
        return "duplicate of " + str(llm.get("of"))
    return "unresolved" if llm.get("unresolved") else "not a duplicate"


def insight_text(d: dict) -> str:
    i, rv = d["insight"], d.get("review")
    dedup = i.get("dedup") or {}
    llm = dedup.get("llm") or {}
    pairs = [("insight", i["id"]), ("status", i["status"] + (" (disputed)" if i.get("disputed") else "")),
             ("decided by", i.get("decided_by") or "-"), ("priority", i.get("priority")),
             ("text", i.get("text")), ("tags", ", ".join(i.get("tags") or []) or "-"),
             ("confidence", i.get("confidence") or "-"),
             ("thread", i.get("thread_id")), ("proposed by", ", ".join(i.get("proposed_by") or []) or "-"),
             ("depends on", ", ".join(i.get("depends_on") or []) or "-"),
             ("dedup", f"{dedup.get('verdict')} {dedup.get('candidates') or ''}".strip()
              + (f"; LLM: {_llm_verdict(llm)}" if llm else "")),
             ("duplicate of", i.get("duplicate_of") or "-"), ("last error", i.get("last_error") or "-")]
    lines = [R.fields(pairs)]
    if len(i.get("versions") or []) > 1:
        lines.append("\nversions:")
        lines += [f"  v{v['version']} (by {v['by']}, round {v['round']}): {v['text']}" for v in i["versions"]]
    for o in i.get("overrides") or []:
        lines.append(f"override: {o['from']} -> {o['to']}" + (f" ({o['note']})" if o.get("note") else ""))
    if not rv:
        return "\n".join(lines + ["\nno review"])
    panel = ", ".join(p["reviewer"] + "@" + p["account"] for p in rv["panel"])
    lines.append(f"\nreview: stage {rv['stage']}; panel {panel}")
    for n in ("1", "2", "3"):
        rd = (rv.get("rounds") or {}).get(n)
        if n == "3" and rv.get("deliberation"):
            dl = rv["deliberation"]
            lines.append(f"round 3 deliberation: minority {dl['minority']}, majority {dl['majority']} "
                         f"({dl['majority_rating']})")
            for label, r in (("argument", dl.get("argument")), ("answer", dl.get("answer"))):
                if r:
                    lines += _response(f"{label} by {dl['minority'] if label == 'argument' else dl['majority']}", r)
        if not rd:
            continue
        o = rd.get("outcome") or {}
        lines.append(f"round {n} (v{rd['version']}): {o.get('kind', 'in progress')}"
                     + (f" {o['rating']}" if o.get("rating") else ""))
        for who, r in rd["responses"].items():
            lines += _response(who, r)
        left_out = {(x["reviewer"], x["step"]) for x in rv.get("replacements") or [] if x.get("to") is None}
        step = {"1": "round1", "2": "round2", "3": "round3_vote"}[n]
        lines += [f"  {who}: " + ("left out: its account had no room past member_patience" if (who, step) in left_out
                                  else "dropped after retries") for who in rd.get("dropped") or []]
        if n == "1" and rv.get("math"):
            m = rv["math"]
            lines.append(f"math check: {m['verdict']}"
                         + (f" (confidence {m['confidence']:.2f})" if isinstance(m.get("confidence"), float) else ""))
    for x in rv.get("replacements") or []:
        lines.append(f"seat {x['reviewer']} in {x['step']}: {x['from']} -> {x.get('to') or 'left out'} "
                     f"({x.get('why', '')})")
    for mc in rv.get("mind_changes") or []:
        lines.append(f"mind change: {mc['reviewer']} in round {mc['round']}: {mc['from']} -> {mc['to']}")
    for w in rv.get("rewordings") or []:
        lines.append(f"rewording after round {w['round']} by {w['by']}: v{w['from_version']} -> v{w['to_version']}")
    if rv.get("outcome"):
        o = rv["outcome"]
        lines.append(f"outcome: {o['rating']} {o['status']} in round {o['round']}: {o['reason']}")
    return "\n".join(lines)
