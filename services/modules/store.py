"""Read access to one module's namespace in the broker (the ``kv_get`` and ``kv_scan`` commands).

Writes are never made here: they are ops built with :mod:`shared.txn` and run in a module transaction.
Kept apart from the module base class so that readers which are not module processes (``fanoctl``, the
operations layer in services/modules/operations/) do not load the service machinery.
"""
from __future__ import annotations

from typing import Any

from shared.errors import ErrorCode, FanoError


class Store:
    """``get`` and ``scan`` over ``module``'s namespace through a broker client."""

    def __init__(self, client, module: str):
        self.client = client
        self.module = module

    def get(self, key: str) -> tuple[int, Any]:
        """(version, value); version 0 and None when absent."""
        rec = self.client.kv_get(self.module, key)
        return (0, None) if rec is None else (rec["version"], rec["value"])

    def scan(self, prefix: str):
        """Yield (key, version, value) for every key with the prefix, in key order."""
        return self.client.kv_items(self.module, prefix)

    def records(self, prefix: str) -> list[dict]:
        """The values under ``prefix`` that are maps (records; anything else is skipped), in key order."""
        return [value for _, _, value in self.scan(prefix) if isinstance(value, dict)]

    def must(self, key: str, what: str, ident: str) -> tuple[int, dict]:
        """(version, record) of ``key``, or ``NOT_FOUND`` "no {what} {ident!r}" (e.g. "no seed 'q-x'")."""
        version, value = self.get(key)
        if value is None:
            raise FanoError(ErrorCode.NOT_FOUND, f"no {what} {ident!r}", {"id": ident})
        return version, value


class SharedScans(Store):
    """Another module's namespace, read only, whose scans are reused for a short while.

    A module that plans after every result it applies would otherwise read the whole prefix (the
    explorer's insights, say: every insight ever) several times a second, a cost that grows with the
    research's history. What another module wrote is never this module's to keep exact: a scan up to
    ``ttl()`` real seconds old only delays noticing a change by that long. ``get`` is never cached.
    The records returned are shared between callers: read them, never change them in place.

    ``shapes`` maps a prefix to ``shape(key, value) -> value | None``: what of each record the reader
    needs (None: not at all). A scan kept for a while is then only as large as what the module uses (the
    documenter keeps the blessed insights' texts, not every insight's history), so the reader's memory
    follows its working set rather than the other module's whole history. A shaped prefix is kept
    (:class:`KeptPrefix`): once its time is up, only the records whose version changed are read again."""

    def __init__(self, client, module: str, ttl, mono, shapes: dict[str, Any] | None = None):
        super().__init__(client, module)
        self._ttl, self._mono = ttl, mono
        self._shapes = dict(shapes or {})
        self._scans: dict[str, tuple[float, list[tuple[str, int, Any]]]] = {}
        self._kept: dict[str, KeptPrefix] = {}

    def scan(self, prefix: str):
        now = self._mono()
        hit = self._scans.get(prefix)
        if hit is None or now >= hit[0]:
            self._scans.pop(prefix, None)   # the old scan is garbage before the new one is read
            hit = self._scans[prefix] = (now + self._ttl(), self._read(prefix))
        return iter(hit[1])

    def _read(self, prefix: str) -> list[tuple[str, int, Any]]:
        shape = self._shapes.get(prefix)
        if shape is None:
            return list(super().scan(prefix))
        # a shaped prefix is kept between reads: only the records whose version changed are read again
        if prefix not in self._kept:
            self._kept[prefix] = KeptPrefix(Store(self.client, self.module), prefix, shape)
        return self._kept[prefix].items()


class KeptPrefix:
    """The records under one prefix of a namespace, kept in memory between reads, as ``shape`` cuts them.

    A module that plans after every result it applies would otherwise read (and the reader inflate and
    decode) every record of a prefix that grows with the research's history — the explorer's insights — on
    every step: CPU per step and peak memory growing by the day. Kept records are brought up to date by a
    versions-only scan (:meth:`shared.client.BrokerClient.kv_versions`: a key and a number per record);
    only records whose version changed are read again (one ``kv_get`` each, or one scan at the first read
    and when more than :attr:`REREAD` changed), and removed ones are dropped. So :meth:`values` is as
    exact as a scan at the moment of the versions scan, at a fraction of its cost.

    ``shape(key, value) -> value | None``: what of a record the reader keeps (None: nothing; the default
    keeps maps whole and skips anything else, as :meth:`Store.records`). The values returned are shared
    between callers: read them, never change them in place."""

    REREAD = 64

    def __init__(self, store: Store, prefix: str, shape: Any = None):
        self.store, self.prefix = store, prefix
        self._shape = shape or (lambda _key, value: value if isinstance(value, dict) else None)
        self._kept: dict[str, tuple[int, Any]] = {}   # key -> (version, shaped value or None), in key order
        self._read = False                             # the prefix has been scanned whole once
        self.reads = 0                                 # records read again (for tests and stats)

    def values(self) -> list:
        """The shaped records under the prefix, in key order, brought up to date first."""
        self.refresh()
        return [value for _, value in self._kept.values() if value is not None]

    def items(self) -> list[tuple[str, int, Any]]:
        """``(key, version, shaped value)`` of the records under the prefix, as a scan gives them, brought
        up to date first."""
        self.refresh()
        return [(key, version, value) for key, (version, value) in self._kept.items() if value is not None]

    def refresh(self) -> None:
        current = list(self.store.client.kv_versions(self.store.module, self.prefix))
        old = self._kept
        changed = [key for key, version in current if old.get(key, (0, None))[0] != version]
        if not self._read or len(changed) > self.REREAD:
            self._read = True
            kept = {}
            for key, version, value in self.store.scan(self.prefix):
                kept[key] = (version, self._shape(key, value))
            self.reads += len(kept)
            self._kept = kept
            return
        fresh: dict[str, tuple[int, Any] | None] = {}
        for key in changed:
            version, value = self.store.get(key)
            self.reads += 1
            # version 0: deleted since the versions scan, gone
            fresh[key] = (version, self._shape(key, value)) if version else None
        kept = {}
        for key, _ in current:
            got = fresh[key] if key in fresh else old.get(key)
            if got is not None:
                kept[key] = got
        self._kept = kept
