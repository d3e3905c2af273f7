"""The research writes a human makes, as plain functions: the one operations layer under ``fanoctl`` and
the web panel.

One submodule per module namespace — :mod:`.explorer` (seeds, threads, insights), :mod:`.documenter`
(comments, revert, retry; and the reads of the document's history: versions, diffs, Markdown),
:mod:`.researcher` (promote a finding, add a source), :mod:`.weights` (the scheduler's module weights, set
through its ``weights`` query, and the advisor's proposals). Each operation takes a
broker client (:class:`shared.client.BrokerClient`), validated arguments and ``now`` (world time from
the modules' clock, ``shared.clock.Clock.from_env().world()``, so that ages compare with the modules'
own), writes through :mod:`shared.txn` with version checks (a race with the running module is read
again and recomputed, see :func:`shared.txn.update`) and returns the records it wrote, as the ``--json``
output of the matching ``fanoctl`` command shows them (docs/cli.md).

Refusals raise :class:`shared.errors.FanoError` with the project's codes, the message for a human:
``NOT_FOUND`` (no such seed, thread, insight, section, version, finding), ``BAD_ARGUMENT`` (a value the
domain refuses: a seed priority of 11, an empty comment, a relative URL, an ambiguous finding prefix),
``INVALID_STATE`` (pausing a thread that is not open), ``CONDITION_FAILED`` (the record exists already,
or kept changing under us: :class:`shared.txn.Conflict`). Nothing here knows about click or the terminal.

A human's change should wake the module at once: give these a client whose ``notify_writes`` is set
(fanoctl's is), and each transaction carries a ``notify`` op.
"""
from __future__ import annotations

from shared import txn


def update(client, ns: str, what: str, compute, retries: int = txn.RETRIES, max_ops: int | None = None):
    """:func:`shared.txn.update` in ``ns``: the value ``compute`` returned with the ops that were written."""
    return txn.update(client, ns, compute, what=what, retries=retries, max_ops=max_ops).value
