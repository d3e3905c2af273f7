"""The researcher module (``python -m services researcher``, supervisord program ``module-researcher``).

Flow (docs/research.md § Researcher; keys and entities in :mod:`.model`):

1. **Observe** (``plan``, every ``observe_interval``): explorer insights (``insights/<id>`` in the
   ``explorer`` namespace, not rejected) and revisions of documenter sections (``sections/<id>`` at
   their ``rev``: a revised section is observed again, once per revision) not yet observed, the most
   recent first (an insight's ``created_at``, a section revision's ``updated``), at most
   ``questions_batch`` of them, become one ``researcher.generate_questions`` task (key
   ``researcher:questions:<hash of the ids>``), about the numbers and concepts that recur in them. The
   batch is recorded (``state/questions``) in the same transaction as the submission, and only one
   batch is in flight at a time, so a restart never proposes an overlapping batch. Applying it stores
   the new questions (a question already stored, in any wording close enough, is counted on the stored
   one: see "Dedup" in :mod:`.model`), marks the items observed, and adds the URLs the model proposed
   as sources.
2. **Fetch** (not an LLM call): sources in the fetch queue (``queue/fetch/<sid>``: user-given with
   ``fanoctl research add-source``, configured, or proposed with a question) are fetched by a background
   thread (:mod:`.fetch`, whose per-domain rate limit survives restarts: it is kept in the HTTP cache
   directory); each outcome is applied in one transaction: the source, its text
   (``content/<sid>``), the end of its queue entry and the submission of ``researcher.evaluate_source``
   (key ``researcher:evaluate:<sid>``, or ``...:<sid>:<n>`` for the n-th of several evaluations).
   Transient failures are retried with backoff, permanent ones end ``fetch_failed``.
3. **Trust** (:mod:`.trust`): the evaluations and the allow-list give the trust score; below
   ``trust_min`` the source is ``ignored``; otherwise ``researcher.extract_findings`` is submitted (key
   ``researcher:extract:<sid>``) in the same transaction.
4. **Findings** are stored with deterministic ids (a finding already stored, from this source or
   another, in any wording close enough, is counted on the stored one instead), folded into the
   cross-reference index (:mod:`.crossref`) and, when ``auto_promote`` is on, promoted to seeds
   (``promotions/<fid>``).

Every effect is applied with the ack of its task (:class:`~services.modules.base.ModuleService`), so a
replay is a no-op; an unusable answer is stored under ``errors/<task id>`` and marks its entity.
"""
from __future__ import annotations

import hashlib

from shared import txn
from shared.errors import STORAGE_REFUSALS, BrokerUnavailable, FanoError

from services.modules import dedup, prompts
from services.modules.base import Effect, ModuleService
from services.modules.researcher import crossref, model as M, parsers
from services.modules.researcher.fetch import Fetcher, FetchError, FetchPool
from services.modules.researcher.settings import load_settings
from services.modules.researcher.trust import DEFAULT_TRUSTED, TrustPolicy

GENERATE_QUESTIONS = "researcher.generate_questions"
EVALUATE_SOURCE = "researcher.evaluate_source"
EXTRACT_FINDINGS = "researcher.extract_findings"
OBSERVED = (("explorer", "insights/"), ("documenter", "sections/"))


def _clip(text: str, n: int) -> str:
    text = str(text or "")
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " [...]"


class ResearcherService(ModuleService):
    module = M.NS

    def __init__(self, config, clock):
        super().__init__(config, clock)
        self.settings = s = load_settings(config)
        self.plan_interval = s.plan_interval
        trusted = dict(s.trusted_domains) if s.replace_trusted else {**DEFAULT_TRUSTED, **s.trusted_domains}
        self.policy = TrustPolicy(trusted, s.excluded_domains, s.trust_min)
        self.pool: FetchPool | None = None
        self._next_observe = 0.0
        self._configured = False
        self._source_count = 0

    # --- process --------------------------------------------------------------------------------------

    def initialize(self) -> None:
        super().initialize()
        f = self.settings.fetch
        fetcher = Fetcher(self.config.data_dir / "researcher" / "cache", timeout=f.timeout, max_bytes=f.max_bytes,
                          min_interval=f.min_interval, cache_ttl=f.cache_ttl, cache_max_bytes=f.cache_max_bytes,
                          user_agent=f.user_agent, content_types=f.content_types)
        self.pool = FetchPool(fetcher)

    def loop(self) -> None:
        super().loop()
        try:
            self.collect_fetches()
        except BrokerUnavailable as exc:
            # the outcomes are lost, not the work: the sources are still queued and get fetched again
            self.log.warning("broker unavailable while applying fetches (%s)", exc)
        except FanoError as exc:
            if exc.code not in STORAGE_REFUSALS:
                raise
            self.storage_refused(exc)  # as above: lost outcomes are fetched again

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.close()
        super().shutdown()

    def _world(self) -> float:
        return self.clock.world()

    def scan_ns(self, namespace: str, prefix: str):
        """(key, version, value) of another module's namespace (read only: we never write there)."""
        return self.client.kv_items(namespace, prefix)

    # --- plan -----------------------------------------------------------------------------------------

    def plan(self) -> None:
        if not self._configured:
            self.add_configured_sources()
            self._configured = True
        self.schedule_fetches()
        if self.clock.mono() >= self._next_observe:
            self._next_observe = self.clock.mono() + self.settings.observe_interval
            self._source_count = sum(1 for _ in self.store.scan("sources/"))
            self.observe()

    def add_configured_sources(self) -> None:
        for url in self.settings.sources:
            try:
                sid = M.source_id(url)
            except ValueError as exc:
                self.log.error("[modules.researcher] sources: %s", exc)
                continue
            if self.store.get(M.k_source(sid))[1] is None:
                self._txn_if_absent(M.add_source_ops(url, "config", self._world())[1])

    def _txn_if_absent(self, ops: list) -> bool:
        return txn.conditional(self.client, self.module, ops)   # False: someone (the CLI) was first: fine

    def schedule_fetches(self) -> None:
        busy = self.pool.busy() if self.pool else set()
        now = self._world()
        for key, qv, entry in self.store.scan("queue/fetch/"):
            sid = key.rsplit("/", 1)[1]
            if sid in busy or (entry or {}).get("not_before", 0) > now:
                continue
            sv, src = self.store.get(M.k_source(sid))
            if src is None or src.get("status") != "new":
                self._txn_if_absent([txn.delete(key, if_version=qv)])  # a stale index entry
            elif self.policy.excluded_domain(src["domain"]):
                src = dict(src, status="excluded", trust_score=0, error={"reason": "excluded",
                           "message": f"{src['domain']} is on the deny list"})
                self._txn_if_absent([txn.put(M.k_source(sid), src, if_version=sv), txn.delete(key, if_version=qv)])
            elif self.pool is not None:
                self.pool.submit(sid, src["url"])

    def observe(self) -> None:
        """Propose one ``generate_questions`` batch about the most recent items not yet observed."""
        if self.store.get(M.K_QUESTION_BATCH)[1] is not None:
            return  # one batch at a time: its key stays the same whatever arrives meanwhile
        seen = {key: value for key, _, value in self.store.scan("observed/")}
        fresh = []
        for ns, prefix in OBSERVED:
            for key, version, value in self.scan_ns(ns, prefix):
                ident = key[len(prefix):]
                if not ident or "/" in ident or not self._observable(value):
                    continue
                obs = M.observation_id(ns, ident, value, version)
                if M.k_observed(ns, obs) in seen or M.legacy_observed(ns, value, seen.get(M.k_observed(ns, ident))):
                    continue
                fresh.append({**value, "ns": ns, "id": ident, "obs": obs,
                              "version": M.observed_version(ns, value, version)})
        if not fresh:
            return
        fresh.sort(key=lambda i: -M.recency(i["ns"], i))   # most recent first (stable: key order on ties)
        items = fresh[:self.settings.questions_batch]
        observed = [f"{i['ns']}/{i['obs']}" for i in items]
        spec = {"key": M.key_questions(observed), "module": self.module, "kind": GENERATE_QUESTIONS,
                "payload": {"prompt": self._questions_prompt(items), "observed": observed,
                            "versions": [i["version"] for i in items]}}
        self._txn_if_absent([txn.put(M.K_QUESTION_BATCH, spec, if_version=0), txn.submit(spec)])

    @staticmethod
    def _observable(value) -> bool:
        if not isinstance(value, dict) or not isinstance(value.get("text"), str) or not value["text"].strip():
            return False
        return value.get("status") not in ("rejected", "duplicate")   # nothing to research in those

    def _questions_prompt(self, items: list[dict]) -> str:
        rec = crossref.recurring(items)
        material = []
        for i in items:
            if i["ns"] == "explorer":
                tags = ", ".join(map(str, i.get("tags") or [])) or "none"
                material.append(f"[insight {i['id']}, {i.get('status', '?')}] {_clip(i['text'], 600)} (tags: {tags})")
            else:
                material.append(f"[section {i['id']}, revision {i['version']}: {i.get('title') or ''}] "
                                f"{_clip(i['text'], 900)}")
        existing = sorted((v for _, _, v in self.store.scan("questions/")), key=lambda q: -q.get("created", 0))[:20]
        return prompts.render(
            "researcher", "generate_questions",
            numbers=", ".join(f"{n} ({c}x)" for n, c in rec["numbers"]) or "none",
            concepts=", ".join(f"{n} ({c}x)" for n, c in rec["concepts"]) or "none",
            material="\n\n".join(material), existing="\n".join(f"- {q['question']}" for q in existing) or "none")

    # --- fetch outcomes -------------------------------------------------------------------------------

    def collect_fetches(self) -> None:
        if self.pool is None:
            return
        for sid, url, result in self.pool.results():
            self.apply_fetch(sid, result)

    def apply_fetch(self, sid: str, result) -> bool:
        """Record one fetch outcome in one transaction (version-checked; retried on a conflict)."""
        def compute():   # read again after a race: the source changed under us (a concurrent writer)
            sv, src = self.store.get(M.k_source(sid))
            qv, entry = self.store.get(M.k_fetch(sid))
            if src is None or src.get("status") != "new":
                return [], False
            return self._fetch_ops(src, sv, qv, entry, result), True
        try:
            if not txn.update(self.client, self.module, compute, what=f"source {sid}",
                              retries=self.max_conflict_retries).value:
                return False
        except txn.Conflict:
            return False
        except FanoError as exc:
            self.log.error("source %s: cannot record the fetch: %s", sid, exc)
            return False
        if isinstance(result, FetchError):
            self.log.info("source %s: fetch failed (%s): %s", sid, result.reason, result.message)
        else:
            self.log.info("source %s: fetched (%s)", sid, result.cache)
        return True

    def _fetch_ops(self, src: dict, sv: int, qv: int, entry, result) -> list:
        f, now, sid = self.settings.fetch, self._world(), src["id"]
        src = dict(src, fetch_attempts=src.get("fetch_attempts", 0) + 1)
        queue_op = txn.delete(M.k_fetch(sid), if_version=qv) if qv else None
        if isinstance(result, FetchError):
            src["error"] = result.as_dict()
            if result.permanent or src["fetch_attempts"] >= f.max_attempts:
                src["status"] = "fetch_failed"
            else:
                src["next_fetch_at"] = now + f.retry_backoff * 2 ** (src["fetch_attempts"] - 1)
                queue_op = txn.put(M.k_fetch(sid), dict(entry or M.fetch_entry(src), not_before=src["next_fetch_at"]),
                                     if_version=qv)
            return [txn.put(M.k_source(sid), src, if_version=sv)] + ([queue_op] if queue_op else [])
        title, text = result.title_and_text()
        text = text[:f.max_text_chars]
        src.update(fetched_at=now, fetch_count=src.get("fetch_count", 0) + 1, cache=result.cache, error=None,
                   content_type=result.content_type, content_hash=hashlib.sha256(result.body).hexdigest()[:16],
                   title=title or src.get("title") or "")
        ops = [queue_op] if queue_op else []
        if not text.strip():
            src.update(status="empty", error={"reason": "empty", "message": "the page has no text"})
            return [txn.put(M.k_source(sid), src, if_version=sv)] + ops
        src["status"] = "fetched"
        ops.append(txn.put(M.k_content(sid), {"url": src["url"], "title": src["title"], "text": text,
                                                 "content_hash": src["content_hash"],
                                                 "content_type": result.content_type, "fetched_at": now}))
        n = self.settings.evaluations
        prompt = prompts.render("researcher", "evaluate_source", url=src["url"], domain=src["domain"],
                                title=src["title"] or "(none)", excerpt=_clip(text, self.settings.eval_chars))
        for i in range(n):
            ops.append(txn.submit({"key": M.key_evaluate(sid, i), "module": self.module, "kind": EVALUATE_SOURCE,
                                     "payload": {"prompt": prompt, "url": src["url"], "source_id": sid,
                                                 "evaluator": i, "of": n}}))
        return [txn.put(M.k_source(sid), src, if_version=sv)] + ops

    # --- results --------------------------------------------------------------------------------------

    def handle(self, task: dict) -> Effect:
        text = (task.get("result") or {}).get("text")
        kind = task["kind"]
        if kind == GENERATE_QUESTIONS:
            return Effect(self._questions_ops(task, parsers.parse_questions(text)))
        if kind == EVALUATE_SOURCE:
            return Effect(self._evaluation_ops(task, parsers.parse_evaluation(text)))
        if kind == EXTRACT_FINDINGS:
            return Effect(self._findings_ops(task, parsers.parse_findings(text)))
        self.log.warning("task %s: unknown kind %s; acknowledged without effect", task["id"], kind)
        return Effect([])

    def on_unusable(self, task: dict, error: str) -> list:
        kind = task["kind"]
        if kind == GENERATE_QUESTIONS:
            return self._questions_ops(task, None)
        if kind == EVALUATE_SOURCE:
            return self._evaluation_ops(task, {"error": error})
        if kind == EXTRACT_FINDINGS:
            sid = (task.get("payload") or {}).get("source_id", "")
            sv, src = self.store.get(M.k_source(sid))
            if src is not None and src.get("status") == "trusted":
                return [txn.put(M.k_source(sid), dict(src, status="extraction_failed",
                                  error={"reason": "unusable", "message": error}), if_version=sv)]
        return []

    def _partial(self, task: dict, dropped: int, what: str) -> list:
        if not dropped:
            return []
        return [txn.put(f"errors/{task['id']:012d}", {
            "task_id": task["id"], "kind": task["kind"], "key": task["key"], "partial": True, "at": self._world(),
            "error": f"{dropped} malformed {what} dropped", "answer": (task["result"].get("text") or "")[:4000]},
            working=True)]  # working data, as every errors/ record (docs/storage.md)

    def _questions_ops(self, task: dict, parsed: dict | None) -> list:
        """Store new questions (or none, for an unusable answer), mark the batch observed, end the batch."""
        payload, now = task.get("payload") or {}, self._world()
        ops = []
        bv, batch = self.store.get(M.K_QUESTION_BATCH)
        if batch is not None and batch.get("key") == task["key"]:
            ops.append(txn.delete(M.K_QUESTION_BATCH, if_version=bv))
        versions = payload.get("versions") or []
        for i, item in enumerate(payload.get("observed") or []):
            ns, _, ident = item.partition("/")
            ops.append(txn.put(M.k_observed(ns, ident), {"version": versions[i] if i < len(versions) else None,
                                                           "at": now, "task_id": task["id"]}))
        if parsed is None:
            return ops
        corpus = {q["id"]: q["question"] for _, _, q in self.store.scan("questions/")
                  if isinstance(q, dict) and q.get("id") and isinstance(q.get("question"), str)}
        new: dict[str, dict] = {}              # qid -> question stored by this batch
        touched: dict[str, list] = {}          # key -> [version, record]: stored questions asked again
        added_sources = set()
        for q in parsed["questions"]:
            qid = M.question_id(q["question"])
            hit = (qid, 1.0) if qid in corpus else dedup.lexical_duplicate(q["question"], corpus,
                                                                           self.settings.dedup_threshold)
            if hit is not None:
                # asked before (in other words, or by this batch): one record, the repeat counted on it
                canon = hit[0]
                rec = new.get(canon) or self._touch(touched, M.k_question(canon))
                if rec is None:
                    continue   # (cannot happen: the corpus was read from the store)
                M.note_duplicate(rec, {"question": q["question"], "type": q["type"], "score": hit[1],
                                       "batch": task["key"], "at": now})
                qid = canon
            else:
                new[qid] = {"id": qid, **q, "batch": task["key"], "created": now}
                corpus[qid] = q["question"]
            for url in q["urls"]:
                try:
                    sid = M.source_id(url)
                except ValueError:
                    continue
                if sid in added_sources or self._source_count + len(added_sources) >= self.settings.max_sources:
                    continue
                if self.store.get(M.k_source(sid))[1] is None:
                    added_sources.add(sid)
                    ops += M.add_source_ops(url, f"question:{qid}", now)[1]
        ops += [txn.put(M.k_question(qid), rec, if_version=0) for qid, rec in new.items()]
        ops += [txn.put(key, rec, if_version=v) for key, (v, rec) in touched.items()]
        return ops + self._partial(task, parsed["dropped"], "questions")

    def _touch(self, touched: dict, key: str) -> dict | None:
        """The stored record at ``key`` for an update in this transaction (read once, version-checked)."""
        if key not in touched:
            v, rec = self.store.get(key)
            if not isinstance(rec, dict):
                return None
            touched[key] = [v, dict(rec)]
        return touched[key][1]

    def _evaluation_ops(self, task: dict, evaluation: dict) -> list:
        """Record one evaluation; when all are in, score the source and propose the extraction."""
        payload = task.get("payload") or {}
        sid, n, of = payload.get("source_id", ""), int(payload.get("evaluator", 0)), int(payload.get("of", 1))
        sv, src = self.store.get(M.k_source(sid))
        if src is None or src.get("status") != "fetched":
            return []   # already decided (or unknown): nothing to change
        evaluations = dict(src.get("evaluations") or {}, **{str(n): evaluation})
        src = dict(src, evaluations=evaluations)
        ops = []
        if len(evaluations) >= of:
            usable = [e for e in evaluations.values() if "error" not in e]
            now = self._world()
            if not usable:
                src.update(status="evaluation_failed", evaluated_at=now,
                           error={"reason": "unusable", "message": evaluation.get("error", "no usable evaluation")})
            else:
                verdict = self.policy.score(src["domain"], usable)
                trusted = verdict.pop("trusted")
                src.update(verdict, status="trusted" if trusted else "ignored", evaluated_at=now)
                if trusted:
                    ops.append(txn.submit(self._extract_task(src)))
                else:
                    ops += self._content_done(sid)
        return [txn.put(M.k_source(sid), src, if_version=sv)] + ops

    def _content_done(self, sid: str) -> list:
        """The page text is working data once its source is decided (extracted or ignored): the findings
        and the source record keep what came of it, the disk cache the page (docs/storage.md)."""
        cv, content = self.store.get(M.k_content(sid))
        return [txn.put(M.k_content(sid), content, if_version=cv, working=True)] if content is not None else []

    def _extract_task(self, src: dict) -> dict:
        content = self.store.get(M.k_content(src["id"]))[1] or {}
        questions = sorted((v for _, _, v in self.store.scan("questions/")),
                           key=lambda q: (-q.get("priority", 5), -q.get("created", 0)))[:8]
        prompt = prompts.render("researcher", "extract_findings", url=src["url"], title=src.get("title") or "(none)",
                                questions="\n".join(f"- ({q['type']}) {q['question']}" for q in questions) or "none yet",
                                text=_clip(content.get("text", ""), self.settings.extract_chars))
        return {"key": M.key_extract(src["id"]), "module": self.module, "kind": EXTRACT_FINDINGS,
                "payload": {"prompt": prompt, "url": src["url"], "source_id": src["id"]}}

    def _findings_ops(self, task: dict, parsed: dict) -> list:
        payload, now = task.get("payload") or {}, self._world()
        sid = payload.get("source_id", "")
        sv, src = self.store.get(M.k_source(sid))
        if src is None or src.get("status") != "trusted":
            return []
        questions = [v for _, _, v in self.store.scan("questions/")]
        corpus = {v["id"]: v["summary"] for _, _, v in self.store.scan("findings/")
                  if isinstance(v, dict) and v.get("id") and isinstance(v.get("summary"), str)}
        findings, ops, evidence = [], [], []
        touched: dict[str, list] = {}          # key -> [version, record]: stored findings found again
        duplicates = 0
        for f in parsed["findings"]:
            fid = M.finding_id(sid, f["summary"])
            status = "kept" if f["confidence"] >= self.settings.min_confidence else "low_confidence"
            hit = (fid, 1.0) if fid in corpus else dedup.lexical_duplicate(f["summary"], corpus,
                                                                           self.settings.dedup_threshold)
            if hit is not None:
                # the same finding again (reworded, or from another source): counted on the stored one;
                # its numbers and concepts still count for this source's domain in the cross-references
                canon = hit[0]
                rec = next((x for x in findings if x["id"] == canon), None) or self._touch(touched, M.k_finding(canon))
                if rec is None:
                    continue   # (cannot happen: the corpus was read from the store)
                M.note_duplicate(rec, {"source_id": sid, "url": src["url"], "domain": src["domain"],
                                       "summary": f["summary"], "quote": str(f.get("quote") or "")[:300],
                                       "type": f["type"], "confidence": f["confidence"], "score": hit[1],
                                       "task_id": task["id"], "at": now})
                evidence.append({"id": canon, "domain": src["domain"], "status": status,
                                 "numbers": f.get("numbers") or [], "concepts": f.get("concepts") or []})
                duplicates += 1
                continue
            findings.append({"id": fid, "source_id": sid, "url": src["url"], "domain": src["domain"], **f,
                             "status": status, "related_questions": self._related(f, questions),
                             "extracted_at": now, "task_id": task["id"]})
            corpus[fid] = f["summary"]
        ops += [txn.put(M.k_finding(f["id"]), f, if_version=0) for f in findings]
        ops += [txn.put(key, rec, if_version=v) for key, (v, rec) in touched.items()]
        existing = {}
        versions = {}
        for key in crossref.keys_for(findings + evidence):
            versions[key], existing[key] = self.store.get(key)
        changed = crossref.merge(existing, findings + evidence, now)
        ops += [txn.put(key, rec, if_version=versions[key]) for key, rec in changed.items()]
        if self.settings.auto_promote:
            ops += self._auto_promotions(findings, {**existing, **changed}, changed, questions, now)
        src = dict(src, status="extracted", findings=len(findings), duplicates=duplicates, numbers=parsed["numbers"],
                   extracted_at=now, error=None)
        ops.append(txn.put(M.k_source(sid), src, if_version=sv))
        return ops + self._content_done(sid) + self._partial(task, parsed["dropped"], "findings")

    @staticmethod
    def _related(finding: dict, questions: list[dict], limit: int = 3) -> list[str]:
        nums = set(finding.get("numbers") or [])
        cons = {M.concept_slug(c) for c in finding.get("concepts") or []}
        scored = []
        for q in questions:
            overlap = len(nums & set(q.get("numbers") or [])) + len(cons & {M.concept_slug(c) for c in q.get("concepts") or []})
            if overlap:
                scored.append((-overlap, -q.get("priority", 5), q["id"]))
        return [qid for *_, qid in sorted(scored)[:limit]]

    def _auto_promotions(self, findings: list[dict], index: dict, changed: dict, questions: list, now: float) -> list:
        """Promote confident findings (cross-referenced ones, by default). A cross-reference that just
        became active can qualify findings extracted earlier, so those are considered too."""
        s = self.settings
        candidates = {f["id"]: f for f in findings}
        for rec in changed.values():
            for fid in rec["findings"] if rec.get("active") else ():
                if fid not in candidates and len(candidates) < 50:
                    old = self.store.get(M.k_finding(fid))[1]
                    if old is not None:
                        candidates[fid] = old
        by_id = {q["id"]: q for q in questions}
        ops = []
        for f in candidates.values():
            if f.get("status") != "kept" or f["confidence"] < s.auto_promote_min_confidence:
                continue
            if s.auto_promote_requires_crossref and not crossref.is_crossreferenced(f, index):
                continue
            if self.store.get(M.k_promotion(f["id"]))[1] is not None:
                continue
            related = [by_id[q] for q in f.get("related_questions") or [] if q in by_id]
            ops.append(txn.put(M.k_promotion(f["id"]), M.promotion(f, "auto", now, question=(related or [None])[0]),
                                 if_version=0))
        return ops
