"""Soak run: the whole research tree for simulated days on sim accounts modelled on real subscriptions.

``ops/soak [--days 7] [--scale 336] [--seed S] [--kills N] [--size full|small] [--keep]`` builds a
throw-away deployment in a short temporary directory (its own fano.toml, the repository's
supervisord.conf via :func:`ops.supervisor_conf.standalone`, started by :class:`ops.chaos.Tree`) and runs
broker, scheduler, every research module and three sim accounts on the scaled world clock
(``FANO_CLOCK_SCALE``; 336 makes a week about 30 real minutes). The research starts from the demo seeds
(seeds/demo.toml) and the driver, like a researcher dropping by, adds a seed each simulated day and
human comments at random times on random document sections (``fanoctl seeds add``, ``fanoctl comments
add``), and ``kill -9``s random programs (any of them) through supervisord.

The accounts (:data:`ACCOUNTS`) follow real subscriptions: rolling 3 h windows on standard requests,
daily deep budgets resetting in three time zones, a weekly window; answers of 2-20 KB (standard) and
10-60 KB (deep); standard turns of about a minute and deep ones of several; faults: 5xx errors,
overloads, 429s with a reset time, hung requests the worker's deadline cancels.

It prints one JSON line per simulated day, then the run's total with each target of issue 11 and
whether it passed (see :mod:`ops.soak_metrics` for how each figure is measured); after the run it
stops the tree and checks the invariants (the chaos checks: broker database, provider logs) and exits
1 on a violation: lost, duplicated or over-quota work, a program ended FATAL, an orphaned process.
The other targets are a benchmark: they are reported, not enforced by the exit code.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ops import soak_metrics as SM
from ops import soak_sample as sample
from shared.clock import Clock
from shared.config import REPO_ROOT

DAY = 86400.0

SAMPLE = 0.3           # real seconds between two samples of the accounts
RSS_EVERY = 2.0        # real seconds between two RSS readings
DOC_EVERY = 3600.0     # world seconds between two looks at the document's sections (comment targets)

# name -> (standard windows, deep windows, latency, faults); limits are "N/..." with N scaled by --size
ACCOUNTS = {
    # ChatGPT Plus/Pro-like: 80 standard per rolling 3 h; the scarce Pro mode 15 a day (Los Angeles
    # midnight) and 60 a week, so the weekly window binds before the week ends
    "chatgpt-sim": (["80/3h"], ["15/day@00:00 America/Los_Angeles", "60/week@mon 00:00 UTC"],
                    {"standard": (45.0, 0.5), "deep": (240.0, 900.0)},
                    {"transient_rate": 0.01, "overload_rate": 0.005, "ratelimit_rate": 0.002, "hang_rate": 0.002}),
    # Gemini-like: 50 per 3 h, Deep Think 10 a day (Los Angeles), busy servers (overloads)
    "gemini-sim": (["50/3h"], ["10/day@00:00 America/Los_Angeles"],
                   {"standard": (35.0, 0.5), "deep": (300.0, 1200.0)},
                   {"transient_rate": 0.005, "overload_rate": 0.03, "ratelimit_rate": 0.002, "hang_rate": 0.002}),
    # Claude-like: 45 per 3 h and 1500 a week; extended thinking 20 a day (04:00 Berlin)
    "claude-sim": (["45/3h", "1500/week@mon 00:00 UTC"], ["20/day@04:00 Europe/Berlin"],
                   {"standard": (30.0, 0.4), "deep": (120.0, 600.0)},
                   {"transient_rate": 0.01, "overload_rate": 0.01, "ratelimit_rate": 0.003, "hang_rate": 0.002}),
}
ANSWER_SIZE = {"standard": (2000, 20000), "deep": (10000, 60000)}
SIZES = {"full": 1.0, "small": 0.25}
SEED_TEXTS = (
    "Which properties of the Fano plane survive over F_4, and which are accidents of order 2?",
    "Is there a natural bijection between the 30 labellings of the Fano plane and the octonion multiplication tables?",
    "Why does the Heawood graph have girth 6, and what does the Fano plane say about its cages?",
    "How does the Klein quartic's tiling by 24 heptagons encode the 7 points and 7 lines?",
    "Conjecture: every Steiner triple system on 7 points is isomorphic to the Fano plane, for a structural reason.",
    "What do the 28 bitangents of a plane quartic have to do with the 28 antiflags of the Fano plane?",
    "Why is the Hamming [7,4] code perfect, and which other perfect codes come from projective planes?",
)
COMMENTS = ("This step needs a proof, not an assertion.", "Please define the incidence map before using it.",
            "Could you add an example with explicit coordinates?", "The notation here clashes with section 1.",
            "This paragraph is too dense; split it.", "Cite where this count comes from.",
            "Is the converse true as well? Say so either way.")

CONFIG = """
[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/var/log"

[scheduler]
module_weights = {{ explorer = 0, documenter = 20, researcher = 0 }}

[modules.documenter]
evaluators = 3
max_active = 2
"""


def scaled(spec: str, factor: float) -> str:
    n, rest = spec.split("/", 1)
    return f"{max(1, round(int(n) * factor))}/{rest}"


def write_config(root: Path, seed: int, size: str) -> tuple[Path, dict]:
    """The soak's fano.toml; returns its path and account -> {mode: [windows]} (the providers' limits,
    which the broker's quotas equal, plus documenter and adhoc reserves on standard as the default config has)."""
    factor = SIZES[size]
    lines, limits = [CONFIG.format(root=root)], {}
    for n, (name, (std, deep, lat, faults)) in enumerate(ACCOUNTS.items()):
        std, deep = [scaled(w, factor) for w in std], [scaled(w, factor) for w in deep]
        limits[name] = {"standard": std, "deep": deep}
        median, sigma = lat["standard"]
        low, high = lat["deep"]
        fault_toml = ", ".join(f"{k} = {v}" for k, v in faults.items())
        sizes = ", ".join(f"{m} = {{ low = {a}, high = {b} }}" for m, (a, b) in ANSWER_SIZE.items())
        lines.append(f"""
[accounts.{name}]
backend = "sim"
modes = ["standard", "deep"]
seed = {seed + n}
latency.standard = {{ dist = "lognormal", median = {median}, sigma = {sigma} }}
latency.deep = {{ dist = "uniform", low = {low}, high = {high} }}
rate_limits = {{ standard = {json.dumps(std)}, deep = {json.dumps(deep)} }}
answer_size = {{ {sizes} }}
{fault_toml.replace(", ", chr(10))}
""")
        first = std[0]
        reserve = max(1, int(first.split("/")[0]) // 4)
        # as in the default fano.toml: the operator's asks and authors' comments keep a few units of a
        # window the research uses up (docs/scheduling.md § Operator asks)
        human = max(1, int(first.split("/")[0]) // 20)
        quota_std = [f"{first} reserve documenter={reserve},adhoc={human}", *std[1:]]
        lines.append(f"\n[quotas.{name}.standard]\nwindows = {json.dumps(quota_std)}\n")
        lines.append(f"\n[quotas.{name}.deep]\nwindows = {json.dumps(deep)}\n")
    path = root / "fano.toml"
    path.write_text("".join(lines))
    return path, limits


def comment_target(config) -> float:
    """Issue 11's comment target: one turn's latency (the slowest standard account's 95th percentile)
    plus one simulated minute."""
    from services.backends.sim import parse_settings
    worst = 0.0
    for account in config.accounts:
        spec = parse_settings({k: v for k, v in account.settings.items() if k not in ("backend",)}).latency["standard"]
        if spec["dist"] == "lognormal":
            worst = max(worst, spec["median"] * 2.718281828 ** (1.645 * spec["sigma"]))
        else:
            worst = max(worst, spec.get("high", spec.get("value", 0.0)))
    return worst + 60.0


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(resident, anonymous resident) MiB of a process from /proc. The anonymous part is the process's
    own memory: the resident total also counts file pages it maps, and the broker maps the LMDB file,
    so its total grows with the database by design."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return (round(int(fields["VmRSS"].split()[0]) / 1024, 1), round(int(fields["RssAnon"].split()[0]) / 1024, 1))
    except (OSError, KeyError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def du(path: Path, exclude: tuple[str, ...] = ()) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count what they use, like du)."""
    total = 0
    for p in Path(path).rglob("*"):
        if any(part in exclude for part in p.relative_to(path).parts):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file():
            total += st.st_blocks * 512
    return total


class Soak:
    """One run: the tree, the driver's plan (kills, comments, seeds), the samples and the day reports."""

    def __init__(self, days: float, scale: float, seed: int, kills: int, size: str, comments_per_day: float):
        from ops.chaos import Tree
        self.rng = random.Random(seed)
        self.days, self.scale, self.seed = days, scale, seed
        self.root = Path(tempfile.mkdtemp(prefix="fs", dir="/tmp"))
        self.config_path, self.limits = write_config(self.root, seed, size)
        self.tree = Tree(self.root, self.config_path, scale=scale)
        self.config = self.tree.config
        self.clock = Clock(scale, origin=float(self.tree.env["FANO_CLOCK_ORIGIN"]))
        self.kills_planned, self.comments_per_day = kills, comments_per_day
        self.tails = {a.name: SM.LogTail(Path(self.config.data_dir) / "sim" / a.name / "requests.jsonl")
                      for a in self.config.accounts}
        self.deep_times: dict[str, list[float]] = {a: [] for a in self.tails}
        self.reply_bytes = 0
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.driver: Counter = Counter()
        self.injected: dict[str, float] = {}   # comment id -> world time the driver added it
        self.sections: list[str] = []
        self.fatal: set[str] = set()
        self.cpu_seen: dict[int, float] = {}   # pid -> CPU seconds at its last reading
        self.cpu_day: defaultdict[str, float] = defaultdict(float)   # program -> CPU seconds since the day began
        self.kills_by_program: Counter = Counter()

    # --- fanoctl, as an operator would run it ------------------------------------------------------------

    def fanoctl(self, what: str, *args: str) -> None:
        """Start ``fanoctl --json ARGS`` in the background (its output is read by :meth:`reap`)."""
        env = dict(self.tree.env)
        proc = subprocess.Popen([sys.executable, "-m", "cli.fanoctl", "--json", *args], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append((what, proc))

    def reap(self, wait: bool = False) -> None:
        for what, proc in list(self.procs):
            if proc.poll() is None and not wait:
                continue
            out, err = proc.communicate()
            self.procs.remove((what, proc))
            if proc.returncode != 0:
                self.driver[f"{what}_failed"] += 1
                self.driver_errors.append(f"fanoctl {what}: exit {proc.returncode}: {err.strip()[-300:]}")
                continue
            self.driver[what] += 1
            try:
                data = json.loads(out)
            except json.JSONDecodeError:
                continue
            if what == "comment":
                self.injected[data["id"]] = data["created"]

    # --- the run -----------------------------------------------------------------------------------------

    def plan(self, t0: float) -> list[tuple[float, str]]:
        span = self.days * DAY
        events = [(t0 + self.rng.uniform(0.02, 0.95) * span, "kill") for _ in range(self.kills_planned)]
        events += [(t0 + self.rng.uniform(0.05, 1.0) * span, "comment")
                   for _ in range(round(self.comments_per_day * self.days))]
        events += [(t0 + (d + self.rng.uniform(0.1, 0.9)) * DAY, "seed") for d in range(int(self.days))]
        return sorted(events)

    def run(self) -> dict:
        from shared.client import BrokerClient
        self.driver_errors: list[str] = []
        self.tree.start()
        client = BrokerClient(self.config.broker_endpoint, name="soak", timeout=3.0, retries=20)
        self.client = client
        seeds = subprocess.run([sys.executable, "-m", "cli.fanoctl", "--json", "seeds", "import",
                                str(REPO_ROOT / "seeds" / "demo.toml")], cwd=REPO_ROOT, env=self.tree.env,
                               capture_output=True, text=True, timeout=120)
        if seeds.returncode != 0:
            raise RuntimeError(f"seeds import failed: {seeds.stderr}")
        t0 = self.clock.world()
        self.t0 = t0
        end = t0 + self.days * DAY
        events = self.plan(t0)
        busy_day, busy_total = SM.Busy(), SM.Busy()
        provider_day = {a: SM.ProviderDay() for a in self.tails}
        rss_day: dict[str, tuple[float, float]] = {}
        self.days_out: list[dict] = []
        day_end = t0 + DAY
        next_rss = next_doc = 0.0
        seeds_added = 0
        prev_stats = client.stats()
        prev_errors = Counter(prev_stats["broker"]["errors"])
        while True:
            now = self.clock.world()
            while events and events[0][0] <= now:
                _, what = events.pop(0)
                if what == "kill":
                    self.kill_one()
                elif what == "comment" and self.sections:
                    sid = self.rng.choice(self.sections)
                    self.fanoctl("comment", "comments", "add", sid, self.rng.choice(COMMENTS))
                elif what == "comment":
                    self.driver["comment_skipped_no_section"] += 1
                elif what == "seed":
                    text = SEED_TEXTS[seeds_added % len(SEED_TEXTS)]
                    self.fanoctl("seed", "seeds", "add", text, "--type", "question", "--priority",
                                 str(self.rng.randint(4, 9)), "--id", f"soak-{seeds_added + 1}")
                    seeds_added += 1
            self.reap()
            states, why = self.sample_accounts(client, now)
            if states is not None:
                busy_day.sample(now, states, why)
                busy_total.sample(now, states, why)
            if time.monotonic() >= next_rss:
                next_rss = time.monotonic() + RSS_EVERY
                for name, (mb, anon) in self.sample_programs().items():
                    top = rss_day.get(name, (0.0, 0.0))
                    rss_day[name] = (max(top[0], mb), max(top[1], anon))
            if now >= next_doc:
                next_doc = now + DOC_EVERY
                self.refresh_sections(client)
            for account, tail in self.tails.items():
                for rec in tail.read():
                    provider_day[account].add(rec)
                    if rec.get("event") == "received" and rec.get("mode") == "deep":
                        self.deep_times[account].append(rec["ts"])
            if now >= day_end or now >= end:
                stats = self.safe_stats(client) or prev_stats
                errors = Counter(stats["broker"]["errors"])
                self.days_out.append(self.day_report(len(self.days_out) + 1, busy_day, provider_day, rss_day, stats,
                                                     errors - prev_errors))
                print(json.dumps(self.days_out[-1], default=str), flush=True)
                prev_stats, prev_errors = stats, errors
                busy_day, provider_day, rss_day = SM.Busy(), {a: SM.ProviderDay() for a in self.tails}, {}
                day_end += DAY
                if now >= end:
                    break
            time.sleep(SAMPLE)
        self.reap(wait=True)
        return self.finish(client, busy_total)

    def kill_one(self) -> None:
        import xmlrpc.client
        running = [p for p in self.tree.programs() if p["statename"] == "RUNNING"]
        if not running:
            return
        victim = self.rng.choice(running)["name"]
        try:
            self.tree.kill(victim)
            self.kills_by_program[victim] += 1
        except xmlrpc.client.Fault:
            pass   # it died on its own in between

    def safe_stats(self, client) -> dict | None:
        from shared.errors import FanoError
        try:
            return client.stats()
        except FanoError as exc:
            self.driver_errors.append(f"stats: {exc}")
            return None

    def sample_accounts(self, client, now: float):
        """(account -> (eligible, busy), account -> what it could run), or (None, None) while the broker is
        down (a kill):
        that interval is then credited to the previous sample's state (see ops/soak_metrics.py)."""
        from shared.errors import FanoError
        try:
            pending = sample.pending_rows(client)
            running = client.list(state="RUNNING", limit=1000)["tasks"]
            quota = client.quota_show()
        except FanoError:
            self.driver["samples_missed"] += 1
            return None, None
        self.driver["samples"] += 1
        accounts = {a.name: (a.backend, list(a.modes)) for a in self.config.accounts}
        first: dict[str, dict] = {}
        states = SM.account_states(pending, running, quota, accounts, quota.get("now", now), first)
        why = {}
        sched = sample.scheduler_idle(self.config.scheduler_endpoint) if any(not states[n][1] for n in first) else {}
        for name, task in first.items():
            if states[name][1]:
                continue
            bound = None
            if (task.get("requires") or {}).get("conversation"):   # list records leave the binding out
                try:
                    bound = (client.get(task["id"], history=False).get("conversation") or {}).get("account")
                except FanoError:
                    pass
            why[name] = SM.idle_label(task, name, bound) + f" [scheduler: {sched.get(name, 'not idle')}]"
        return states, why

    def sample_programs(self) -> dict[str, tuple[float, float]]:
        out: dict[Any, Any] = {}
        try:
            programs = self.tree.programs()
        except OSError:
            return out
        for p in programs:
            if p["statename"] == "FATAL":
                self.fatal.add(p["name"])
            if p["pid"]:
                mb = rss_mb(p["pid"])
                if mb is not None:
                    out[p["name"]] = mb
                cpu = cpu_seconds(p["pid"])
                if cpu is not None:   # a restarted program is a new pid: its count starts from 0
                    self.cpu_day[p["name"]] += max(0.0, cpu - self.cpu_seen.get(p["pid"], 0.0))
                    self.cpu_seen[p["pid"]] = cpu
        return out

    def refresh_sections(self, client) -> None:
        from services.modules.base import Store
        from services.modules.documenter import model as M
        from shared.errors import FanoError
        try:
            doc = M.read_doc(Store(client, "documenter"))
            self.sections = [s["id"] for s in doc.ordered()]
        except FanoError as exc:
            self.driver_errors.append(f"document: {exc}")

    def research_counts(self, client) -> dict:
        from services.modules.base import Store
        from services.modules.documenter import model as M
        insights = Counter(v.get("status") for _, _, v in client.kv_items("explorer", "insights/")
                           if isinstance(v, dict))
        doc = M.read_doc(Store(client, "documenter"))
        return {"insights": sum(insights.values()), "insights_by_status": dict(insights),
                "blessed": insights.get("blessed", 0), "sections": len(doc.ordered()), "document_version": doc.version,
                "threads": sum(1 for _ in client.kv_items("explorer", "threads/"))}

    def comment_latencies(self, client, since: float = 0.0) -> tuple[list[float], int]:
        """World seconds from injection to resolution of the driver's comments resolved at or after
        ``since``, and how many of them are still open."""
        lat, open_ = [], 0
        for _, _, c in client.kv_items("documenter", "comments/"):
            if not isinstance(c, dict) or c.get("id") not in self.injected:
                continue
            if c.get("status") == "resolved" and c.get("resolved_at"):
                if c["resolved_at"] >= since:
                    lat.append(c["resolved_at"] - c["created"])
            else:
                open_ += 1
        return lat, open_

    def day_report(self, day: int, busy: SM.Busy, providers: dict, rss: dict, stats: dict, errors: Counter) -> dict:
        from shared.errors import FanoError
        tasks = stats["tasks"]
        total_tasks = sum(v for k, v in tasks.items() if k.isupper())
        used, size = stats["broker"]["map_used"], stats["broker"]["map_size"]
        storage = {"lmdb_used": used, "lmdb_map": size, "tasks": total_tasks,
                   "bytes_per_task": round(used / total_tasks) if total_tasks else None,
                   "disk_data": du(Path(self.config.data_dir), exclude=("sim",)),
                   "disk_logs": du(Path(self.config.log_dir)),
                   "sim_provider_logs": du(Path(self.config.data_dir) / "sim")}
        prev = self.days_out[-1]["storage"]["lmdb_used"] if self.days_out else 0
        growth = used - prev
        storage["days_until_full"] = round((size - used) / growth, 1) if growth > 0 else None
        for p in providers.values():
            self.reply_bytes += p.reply_bytes
        try:
            research = self.research_counts(self.client)
            lat, open_ = self.comment_latencies(self.client, since=self.t0 + (day - 1) * DAY)
        except FanoError as exc:
            self.driver_errors.append(f"day {day} research counts: {exc}")
            research, lat, open_ = {}, [], None
        return {"day": day, "world": round(self.clock.world()), "tasks": dict(tasks),
                "accounts": {a: {**p.as_dict(), **busy.as_dict().get(a, {})} for a, p in providers.items()},
                "research": research,
                "comments": {"injected_so_far": len(self.injected), "resolved_today": len(lat), "open": open_,
                             "latency_p50_s": _r(SM.percentile(lat, 0.5)),
                             "latency_p95_s": _r(SM.percentile(lat, 0.95))},
                "storage": storage, "rss_max_mb": {n: v[0] for n, v in rss.items()},
                "rss_anon_max_mb": {n: v[1] for n, v in rss.items()}, "cpu_s": self.take_cpu(),
                "fatal": sorted(self.fatal),
                "broker_errors": dict(errors), "kills_so_far": dict(self.kills_by_program), "driver": dict(self.driver)}

    def take_cpu(self) -> dict[str, float]:
        """Real CPU seconds each program used since the last day report (a module whose passes grow with
        the research's history shows here first)."""
        out = {name: round(s, 1) for name, s in sorted(self.cpu_day.items())}
        self.cpu_day.clear()
        return out

    def finish(self, client, busy: SM.Busy) -> dict:
        from ops.chaos_check import _resent_without_cause
        from ops.invariants import inspect_broker_db
        from ops.snapshot import load_snapshot
        from services.backends import sim_log
        from shared.quota import normalize_windows
        lat, open_ = self.comment_latencies(client)
        comments = [c for _, _, c in client.kv_items("documenter", "comments/")
                    if isinstance(c, dict) and c.get("id") in self.injected]
        research = self.research_counts(client)
        end_world = self.clock.world()
        # the end state the test asks about: which accounts are idle with quota while work waits
        idle_now: dict[Any, Any] = {}
        for _ in range(8):
            states, _why = self.sample_accounts(client, self.clock.world())
            for a, (eligible, b) in (states or {}).items():
                idle_now[a] = idle_now.get(a, 0) + (eligible and not b)
            time.sleep(0.5)
        client.close()
        self.fatal |= {p["name"] for p in self.tree.programs() if p["statename"] == "FATAL"}
        orphans = self.tree.stop()
        violations: list[str] = []
        report = inspect_broker_db(Path(self.config.data_dir) / "broker")
        violations += [f"broker db: {v}" for v in report.violations]
        over_quota = sum(1 for v in report.violations if "quota" in v or "window" in v)
        duplicated = 0
        served_ids: set[int] = set()
        for account in self.config.accounts:
            path = Path(self.config.data_dir) / "sim" / account.name / "requests.jsonl"
            if not path.exists():
                continue
            problems = sim_log.check_log(path, self.limits[account.name], count="received")
            over_quota += len(problems)
            violations += [f"provider {account.name}: {p}" for p in problems]
            records = sim_log.read_log(path)
            resent = _resent_without_cause(records)
            duplicated += len(resent)
            violations += [f"provider {account.name}: {p}" for p in resent]
            served_ids |= {r["task_id"] for r in records if r["event"] == "served"}
        snap = load_snapshot(Path(self.config.data_dir) / "broker")
        lost_ids = sorted(served_ids - set(snap.tasks))
        violations += [f"task {t} was served by a provider and is missing from the broker" for t in lost_ids[:20]]
        violations += [f"orphaned process {o}" for o in orphans]
        violations += [f"program {p} ended FATAL" for p in sorted(self.fatal)]
        deep_tasks = sum(1 for t in snap.tasks.values() if (t.get("requires") or {}).get("mode") == "deep")
        windows = {a: normalize_windows(lim["deep"]) for a, lim in self.limits.items()}
        used = self.days_out[-1]["storage"]["lmdb_used"] if self.days_out else 0
        total = {
            "seed": self.seed, "days": self.days, "scale": self.scale, "root": str(self.root),
            "tasks": dict(Counter(t["state"] for t in snap.tasks.values())),
            "accounts": SM.merge_counters([{a: v["done"] for a, v in d["accounts"].items()} for d in self.days_out]),
            "busy": busy.as_dict(),
            "idle_with_quota_and_work_at_end": {a: n for a, n in idle_now.items() if n >= 6},
            "deep_budget": SM.deep_budgets(self.deep_times, windows, self.t0, end_world),
            "deep_tasks": deep_tasks,
            "comments": {"injected": len(self.injected), "resolved": len(lat), "open": open_,
                         "latency_p50_s": _r(SM.percentile(lat, 0.5)), "latency_p95_s": _r(SM.percentile(lat, 0.95)),
                         "breakdown_s": SM.comment_breakdown(comments, {t.get("key"): t for t in snap.tasks.values()})},
            "research": research,
            "storage": {**(self.days_out[-1]["storage"] if self.days_out else {}), "answer_bytes": self.reply_bytes,
                        "multiple_of_answers": round(used / self.reply_bytes, 2) if self.reply_bytes else None},
            "rss_max_mb": _peak(self.days_out, "rss_max_mb"),
            "rss_anon_max_mb": _peak(self.days_out, "rss_anon_max_mb"),
            "fatal": len(self.fatal), "lost": len(lost_ids), "duplicated": duplicated, "over_quota": over_quota,
            "broker_errors": SM.merge_counters([{"e": d["broker_errors"]} for d in self.days_out]).get("e", {}),
            "provider_refusals": SM.merge_counters([{a: v["refused"] for a, v in d["accounts"].items()}
                                                   for d in self.days_out]),
            "kills": dict(self.kills_by_program), "driver": dict(self.driver), "driver_errors": self.driver_errors[:20],
            "violations": violations, "notes": report.notes[:10],
        }
        total["targets"] = SM.targets(total, self.days_out, comment_target(self.config))
        return total


def _peak(days: list[dict], key: str) -> dict:
    names = {n for d in days for n in d[key]}
    return {n: max(d[key].get(n, 0.0) for d in days) for n in sorted(names)}


def _r(x):
    return None if x is None else round(x, 1)


def run(days: float, scale: float, seed: int, kills: int, size: str = "full", comments_per_day: float = 6.0,
        keep: bool = False) -> dict:
    """One soak run (see the module docstring); returns the total report. The deployment is removed
    unless ``keep`` or a violation (then ``root`` names it)."""
    soak = Soak(days, scale, seed, kills, size, comments_per_day)
    t0 = time.monotonic()
    try:
        total = soak.run()
    except BaseException:
        soak.tree.stop()
        raise
    total["elapsed_s"] = round(time.monotonic() - t0, 1)
    if not keep and not total["violations"]:
        shutil.rmtree(soak.root, ignore_errors=True)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    parser.add_argument("--scale", type=float, default=336.0,
                        help="world seconds per real second (default 336: a week in 30 minutes)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kills", type=int, default=None, help="kill -9s over the run (default 3 a day)")
    parser.add_argument("--comments-per-day", type=float, default=6.0)
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: the subscriptions' limits; small: a quarter of them (the test)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary deployment (logs, db)")
    args = parser.parse_args(argv)
    if not args.days > 0 or not args.scale > 0:
        parser.error("--days and --scale must be positive")
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    kills = args.kills if args.kills is not None else round(3 * args.days)
    total = run(args.days, args.scale, seed, kills, args.size, args.comments_per_day, args.keep)
    print(json.dumps(total, indent=2, default=str), flush=True)
    return 1 if total["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
