"""The explorer module (docs/research.md § Explorer): seeds -> threads of explore/critique turns -> synthesis
-> panel extraction -> dedup -> three-round review panel -> blessed insights.

Written in the modules' style (docs/modules.md § Module style). Files by job: :mod:`.model` (entity
shapes, key layout, task keys, settings), :mod:`.context` (``Env``, what a step reads, and the thread and
insight bookkeeping the steps share), :mod:`.flow` (one handler per task kind), :mod:`.recovery` (unusable
answers, and what the repair pass re-proposes), :mod:`.panels` (following capacity: thread slots, panel
seats blocked past patience), :mod:`.pacing` (a seed's hourly budget and pause), :mod:`.parsers` (one
tolerant parser per task kind), :mod:`.threads` (seed selection, readiness, turn tasks), :mod:`.load`
(work for every account with room), :mod:`.extraction` (synthesis, panel extraction, consolidation, dedup),
:mod:`.review` (the review panel and its outcome table), :mod:`.seeds`, :mod:`.priorities` and
:mod:`.service` (the process: the ``HANDLERS`` and ``UNUSABLE`` tables, planning, the reads and caches).
"""
