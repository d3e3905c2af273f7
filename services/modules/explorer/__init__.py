"""The explorer module (docs/research.md § Explorer): seeds -> threads of explore/critique turns -> synthesis
-> panel extraction -> dedup -> three-round review panel -> blessed insights.

Files by job: :mod:`.model` (entity shapes, key layout, task keys, settings), :mod:`.parsers` (one tolerant
parser per task kind), :mod:`.threads` (seed selection, readiness, turn tasks), :mod:`.extraction`
(synthesis, panel extraction, consolidation, dedup), :mod:`.review` (the review panel and its outcome table)
and :mod:`.service` (the process: apply settled tasks, plan new work).
"""
