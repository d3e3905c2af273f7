"""What the web provider's mixins use of :class:`~.provider.WebProvider`, for the type checker.

:class:`~.operator.OperatorSession` (check, login) and :class:`~.reconcile.TurnReconcile` are mixins of the
provider, which owns the profile, the browser thread, the conversation store and the page classification
they use. :class:`WebHost` declares those once (annotations and signatures, no code); the mixins derive from
it only while type checking (``Host`` is ``object`` at run time), so the running classes are unchanged.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.backends.base import ProviderError, Reply, Turn
    from services.backends.conversations import ConversationStore
    from services.backends.web.browser import BrowserHost, ProfileLock
    from services.backends.web.page import ChatPage, PageSample, SiteProblem
    from services.backends.web.settings import WebSettings
    from services.backends.web.site import SiteSpec


class WebHost:
    account: str
    site: SiteSpec
    cfg: WebSettings
    lock: ProfileLock
    host: BrowserHost
    store: ConversationStore
    _started: bool | None
    _headless_override: bool | None   # a check or login decides headless itself (None: the settings do)
    unspent_attempts: set[tuple[int, int]]   # (task id, attempt) reconcile found spent nothing

    def close(self) -> None:
        raise NotImplementedError

    def _own_profile(self) -> bool:
        raise NotImplementedError

    def _require_profile(self) -> None:
        raise NotImplementedError

    def _take_pause_request(self) -> None:
        raise NotImplementedError

    def _recycle(self, host: Any) -> None:
        raise NotImplementedError

    def _chat(self, host: Any) -> ChatPage:
        raise NotImplementedError

    def _raise_blocking(self, s: PageSample, sent: bool) -> None:
        raise NotImplementedError

    def _problem_error(self, chat: ChatPage, problem: SiteProblem, sent: bool, mode: str | None = None,
                       reconciling: bool = False) -> ProviderError:
        raise NotImplementedError

    def _downgrade_error(self, chat: ChatPage, turn: Turn, label: str, evidence: str,
                         reconciled: bool = False) -> ProviderError:
        raise NotImplementedError

    def _finish(self, turn: Turn, key: str, s: PageSample, meta: dict, reconciled: bool = False) -> Reply:
        raise NotImplementedError

    def _await_reply(self, chat: ChatPage, key: str, index: int, baseline: Counter, deadline: float,
                     cancelled: Callable[[], bool], seen: dict | None = None) -> PageSample:
        raise NotImplementedError

    def _screenshot(self, chat: ChatPage, kind: str) -> str | None:
        raise NotImplementedError


if TYPE_CHECKING:
    Host = WebHost
else:
    Host = object
