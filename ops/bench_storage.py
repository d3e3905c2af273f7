"""Storage benchmark: bytes per task in the broker's LMDB for the research workload, and what they are made of.

Starts a real broker process (``python -m services broker``, default durability) in a temporary directory
and replays the writes of the research pipeline through the client library, as the modules make them:

* explorer threads of ``--turns`` turns: each turn's task is built by the explorer's own
  :func:`services.modules.explorer.threads.turn_task` (its prompt quotes the recent exchanges, as in
  production), leased, completed with an answer of about ``--answer-kb`` KB, then applied as the module
  applies it: the exchange record of :func:`~services.modules.explorer.threads.exchange_record` put in
  one transaction with the ack;
* ``--reviews`` one-shot review tasks per thread (a ~1.5 KB prompt, an answer of the same size, the
  parsed review stored in the module's namespace with the ack).

Answers are the simulated provider's well-formed text (``services.backends.sim_answers``) padded to
size with real English (the repository's own docs; ``--text sim``: the sim's template sentences, which
compress several times better than a model's prose). ``texts.zlib_ratio`` reports how well the answers
compress.

It then reads the database read-only (LMDB readers never block the writer) and prints JSON: per
sub-database entries, live pages (bytes) and stored value bytes; the ``kv`` namespace by module and
first key segment (stored and uncompressed bytes); tasks; ``bytes_per_task`` (live pages / tasks); and,
with ``--compact``, the same after a task-retention pass over every acked task (what a database older
than ``broker.task_retention`` holds per task).

``ops/bench-storage [--threads 20 --turns 8 --answer-kb 4 --reviews 3 --compact]``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

import lmdb

from shared import txn
from shared.client import BrokerClient
from shared.protocol import pack_value, unpack_value

from ops.bench_broker import Broker
from services.backends import sim_answers as A
from services.broker import schema as S
from services.modules.explorer import model as M
from services.modules.explorer import parsers as P
from services.modules.explorer import threads as T

ACCOUNT = "bench-acct"


def _decode(raw):
    decode = getattr(S, "decode_value", None)  # absent before schema version 2 (to measure the old code)
    return decode(raw) if decode else unpack_value(raw)


class Prose:
    """Real English to pad answers with: the repository's own documentation, in random slices of whole
    lines (the sim's template sentences compress far better than a model's prose)."""

    def __init__(self):
        root = Path(__file__).resolve().parent.parent
        lines = []
        for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
            lines += [line.strip("#|-* ") for line in path.read_text().splitlines() if len(line) > 40]
        self.lines = lines

    def sentences(self, rng: random.Random, n: int) -> str:
        start = rng.randrange(len(self.lines))
        return " ".join(self.lines[(start + i) % len(self.lines)] for i in range(n))


def answer_text(kind: str, payload: dict, rng: random.Random, size: int, prose: Prose | None) -> str:
    """The sim's well-formed answer of ``kind``, padded to about ``size`` characters with bullets of
    ``prose`` (or of the sim's own sentences); the padding lands in the answer's last section, where a
    longer real answer puts more bullets."""
    text = A.answer(kind, payload, payload.get("prompt", ""), "standard", rng)
    while len(text) < size:
        text += f"- {prose.sentences(rng, 2) if prose else A._sentences(rng, 3)}\n"
    return text


def replay(client: BrokerClient, args, rng: random.Random) -> dict:
    settings = M.ExplorerSettings()
    prose = Prose() if args.text == "prose" else None
    seeds = [{"id": "fano", "type": "axiom", "text": "The Fano plane has 7 points and 7 lines, 3 points per line.",
              "priority": 5}]
    size = int(args.answer_kb * 1024)
    texts = {"answers": 0, "prompts": 0, "compressed": 0}
    threads: list[dict] = []
    for n in range(args.threads):
        seed = {"id": f"q{n}", "type": "question", "text": f"Why does the number 168 appear ({n})?", "priority": 5}
        thread = T.new_thread(seed, threads, time.time())
        threads.append(thread)
        exchanges: list[dict] = []
        for k in range(1, args.turns + 1):
            spec = T.turn_task(thread, k, seeds + [seed], exchanges, [ACCOUNT], settings)
            tid = client.submit(spec["key"], M.MODULE, spec["kind"], spec["payload"], requires={},
                                attrs=spec["attrs"])["task"]["id"]
            lease = client.lease("bench-worker", ACCOUNT, modes=["standard"], task_id=tid)
            text = answer_text(spec["kind"], spec["payload"], rng, size, prose)
            client.complete(tid, lease["epoch"], {"text": text, "meta": {}})
            task = client.get(tid, history=False)
            parsed = (P.parse_explore if k % 2 else P.parse_critique)(text)
            served = task.get("served") or {"account": ACCOUNT}
            if "previous" in inspect.signature(T.exchange_record).parameters:   # as the module calls it
                ex = T.exchange_record(thread, k, parsed, task, served, time.time(), list(exchanges))
            else:   # the code before exchanges kept their prompt by reference (to measure it)
                ex = T.exchange_record(thread, k, parsed, task, served, time.time())
            client.txn(M.MODULE, [txn.put(M.exchange_key(thread["id"], k), ex, if_version=0), txn.ack(tid)])
            exchanges.append(ex)
            texts["answers"] += len(text)
            texts["prompts"] += len(spec["payload"]["prompt"])
            texts["compressed"] += len(zlib.compress(text.encode(), 6))
        for r in range(args.reviews):
            iid = f"{thread['id']}.i{r + 1}"
            prompt = prose.sentences(rng, 8) if prose else A._sentences(rng, 12)
            payload = {"insight_id": iid, "reviewer": ACCOUNT, "round": 1, "prompt": prompt}
            tid = client.submit(f"bench:review1:{iid}", M.MODULE, "explorer.review1", payload,
                                requires={})["task"]["id"]
            lease = client.lease("bench-worker", ACCOUNT, modes=["standard"], task_id=tid)
            text = answer_text("explorer.review1", payload, rng, len(prompt), prose)
            client.complete(tid, lease["epoch"], {"text": text, "meta": {}})
            review = P.parse_review1(text)
            client.txn(M.MODULE, [txn.put(M.review_key(iid), {
                "insight_id": iid, "rounds": {"1": {"responses": {ACCOUNT: review}}}}), txn.ack(tid)])
            texts["answers"] += len(text)
            texts["prompts"] += len(prompt)
            texts["compressed"] += len(zlib.compress(text.encode(), 6))
    return texts


def measure(db_dir: Path) -> dict:
    """Live bytes per sub-database and the kv namespace by module / first key segment (read-only)."""
    env = lmdb.open(str(db_dir), readonly=True, lock=True, subdir=True, max_dbs=len(S.DATABASES) + 1,
                    map_size=2 * (db_dir / "data.mdb").stat().st_size + (64 << 20), max_readers=126)
    try:
        psize = env.stat()["psize"]
        out: dict = {"databases": {}, "kv": {}}
        total_pages = 0
        with env.begin() as rtxn:
            main = rtxn.stat()
            total_pages += main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
            for name in S.DATABASES:
                try:
                    db = env.open_db(name.encode(), txn=rtxn, create=False)
                except lmdb.NotFoundError:
                    continue
                st = rtxn.stat(db)
                pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                total_pages += pages
                stored = 0
                kv = defaultdict(lambda: {"entries": 0, "stored": 0, "raw": 0})
                for k, v in rtxn.cursor(db=db):
                    stored += len(k) + len(v)
                    if name == "kv":
                        module, _, key = bytes(k).partition(S.SEP)
                        group = kv[f"{module.decode()}/{key.decode().split('/', 1)[0]}/"]
                        group["entries"] += 1
                        group["stored"] += len(v)
                        group["raw"] += len(pack_value(_decode(bytes(v))))
                if st["entries"]:
                    out["databases"][name] = {"entries": st["entries"], "bytes": pages * psize, "stored": stored}
                if name == "kv":
                    out["kv"] = dict(sorted(kv.items()))
            tasks = out["databases"].get("tasks", {}).get("entries", 0)
            out["tasks"] = tasks
            out["live_bytes"] = total_pages * psize
            out["bytes_per_task"] = round(total_pages * psize / tasks) if tasks else None
            out["file_bytes"] = (db_dir / "data.mdb").stat().st_size
        return out
    finally:
        env.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--answer-kb", type=float, default=4.0, help="size of a turn's answer (KB)")
    ap.add_argument("--reviews", type=int, default=3, help="one-shot review tasks per thread")
    ap.add_argument("--compact", action="store_true", help="also measure after compacting every acked task")
    ap.add_argument("--text", choices=("prose", "sim"), default="prose",
                    help="pad answers with real prose (the repository's docs) or the sim's template sentences")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="fbs-", dir="/tmp"))
    cfg = root / "fano.toml"
    cfg.write_text("\n".join(["[paths]", f'run_dir = "{root}/run"', f'data_dir = "{root}/data"',
                              f'log_dir = "{root}/log"', "[broker]", 'map_size = "1GiB"']) + "\n")
    broker = Broker(root, cfg, None)
    client = BrokerClient(broker.endpoint, name="bench-storage", timeout=10)
    try:
        t0 = time.monotonic()
        texts = replay(client, args, random.Random(args.seed))
        result = {"schema_version": S.SCHEMA_VERSION, "workload": vars(args),
                  "seconds": round(time.monotonic() - t0, 1),
                  "texts": {"answer_chars": texts["answers"], "prompt_chars": texts["prompts"],
                            "zlib_ratio": round(texts["answers"] / max(1, texts["compressed"]), 2)},
                  "after_run": measure(root / "data" / "broker")}
        tasks = result["after_run"]["tasks"]
        result["texts"]["answer_chars_per_task"] = round(texts["answers"] / max(1, tasks))
        if args.compact:
            done = client.call("compact", older_than=0)
            while done.get("more"):
                done = client.call("compact", older_than=0)
            result["after_compaction"] = measure(root / "data" / "broker")
        print(json.dumps(result, indent=1))
    finally:
        client.close()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
