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
