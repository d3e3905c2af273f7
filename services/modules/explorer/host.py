"""What the explorer's mixins use of the service they are mixed into, for the type checker.

:class:`ExplorerService` is assembled from mixins (:class:`.state.StateReader`, :class:`.recovery.Recovery`,
:class:`.panels.Panels`) over :class:`services.modules.base.ModuleService`; each mixin calls methods and
reads attributes another part defines. :class:`ExplorerHost` declares them once (annotations and
signatures, no code), so mypy checks those calls. The mixins derive from it only while type checking
(``Host`` is ``object`` at run time), so the running classes and their method order are unchanged.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.modules import capacity as CAP
    from services.modules.base import Store
    from services.modules.explorer import review as R
    from services.modules.explorer.model import ExplorerSettings
    from services.modules.explorer.state import Ops
    from shared.client import BrokerClient
    from shared.clock import Clock
    from shared.config import Config
    from shared.keys import ClientKeys


class ExplorerHost:
    # the service's (shared.service.Service, ModuleService, ExplorerService.initialize)
    module: str
    config: Config
    keys: ClientKeys | None
    clock: Clock
    log: logging.Logger
    client: BrokerClient
    store: Store
    settings: ExplorerSettings

    # ModuleService / ExplorerService
    def submit_if_absent(self, tasks: list[dict]) -> None:
        raise NotImplementedError

    def txn_or_skip(self, ops: list, what: str) -> bool:
        raise NotImplementedError

    def align_priorities(self, records: list[dict], field: str, key: Any) -> None:
        raise NotImplementedError

    def world_interval(self, world_s: float, real_min: float, real_max: float) -> float:
        raise NotImplementedError


    # StateReader
    def now(self) -> float:
        raise NotImplementedError

    def values(self, prefix: str) -> list:
        raise NotImplementedError

    def exchanges(self, tid: str) -> list[dict]:
        raise NotImplementedError

    def configured_accounts(self) -> list[str]:
        raise NotImplementedError

    def available_accounts(self, cap: CAP.Capacity | None = None, mode: str = "standard") -> list[str]:
        raise NotImplementedError

    def capacity(self) -> CAP.Capacity:
        raise NotImplementedError

    def documented(self) -> list[tuple[str, object]]:
        raise NotImplementedError

    def review_ctx(self) -> R.Ctx:
        raise NotImplementedError

    def thread_of(self, task: dict) -> Any:
        raise NotImplementedError

    def expected_thread_task(self, thread: dict | None, task: dict) -> bool:
        raise NotImplementedError

    def close_panel(self, thread: dict, ops: Ops, now: float) -> dict:
        raise NotImplementedError

    def thread_tasks(self, thread: dict) -> list[dict]:
        raise NotImplementedError

    def start_review(self, insight: dict, ops: Ops, panel: list[dict] | None = None) -> None:
        raise NotImplementedError

    @staticmethod
    def put_thread(old: dict, new: dict, version: int, ops: Ops) -> None:
        raise NotImplementedError

    @staticmethod
    def expected_dedup(insight: dict | None, task: dict) -> bool:
        raise NotImplementedError

    @staticmethod
    def review_ops(iid: Any, review: Any, vr: Any, insight: Any, old_insight: Any, vi: Any,
                   tasks: Any) -> list:
        raise NotImplementedError


    # Panels
    def follow_capacity(self, full: bool = False) -> None:
        raise NotImplementedError

    def backlogged(self) -> set[str]:
        raise NotImplementedError


if TYPE_CHECKING:
    Host = ExplorerHost
else:
    Host = object
