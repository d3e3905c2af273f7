"""The provider interface every backend implements, and the failure classification they all share.

A backend worker (``services/backends/worker.py``) runs one :class:`Provider` for one account and calls it
for one turn at a time. The provider knows how to talk to its service; the worker knows leases, intents,
results and retries. Providers never touch the broker.

Failure classes (docs/tasks.md § Failure classes) — every exception a provider lets out is a :class:`ProviderError`:

===========  =================================================================================
transient    retry later (backoff, or ``retry_after`` seconds); includes overload ("529", "a lot of
             people are using Deep Think"): a short retry, not an account cool-down
quota        the account (in this mode) is out of quota until ``retry_after`` seconds from now;
             the task waits, no attempt burned
auth         login expired / bad key: the account is paused for the operator
terminal     this request can never succeed (context overflow, refused content): park the task
unknown      we cannot tell whether the provider got the request: reconcile before re-sending
===========  =================================================================================

``scope`` (quota only): ``"mode"`` — the limit belongs to the mode that hit it (a model's rate limit);
``"account"`` — it holds for every mode of the account (an organisation's spend limit or credit balance),
so the broker cools them all and the other mode does not spend a request to learn the same thing.

``sent`` says whether the provider may have *served* the request (it decides whether the quota unit is
refunded and whether the turn must be reconciled): False when the provider certainly never saw it, and
also when it definitively refused it before producing any output — an overload (529, "a lot of people
are using ..."), a rate-limit 429, a 5xx status answered before the first streamed byte. Such a request
was not served and does not count against the provider's limits; the broker then refunds the unit and
there is nothing to reconcile. A failure after output began (an error event mid-stream, a cut
connection) stays ``sent=True``.

Request timeout: the worker's runtime (:mod:`services.backends.runner`) bounds every ``send`` by
:meth:`Provider.request_timeout`; past it the ``cancelled()`` callable turns true, exactly as for a
cancel from the scheduler, and the outcome is reported ``unknown`` (sent) so that the turn is reconciled
before anything is re-sent (docs/tasks.md § Unknown turns).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import ExitCode, StartupError

ERROR_CLASSES = ("transient", "quota", "auth", "terminal", "unknown")
COOLDOWN_SCOPES = ("mode", "account")
# the runtime's bound on one request (real seconds) when the account's settings say nothing shorter;
# generous: deep modes of real services take many minutes, and a provider's own ``timeout`` (if any)
# should fire first with its better message
DEFAULT_REQUEST_TIMEOUTS = {"standard": 1800.0, "deep": 7200.0}
REQUEST_TIMEOUT_GRACE = 120.0   # beyond the account's own ``timeout``: the provider's deadline comes first


@dataclass(frozen=True)
class Turn:
    """One request to a provider: a task as the worker leased it."""

    task_id: int
    epoch: int
    attempt: int
    account: str
    mode: str                    # "standard" | "deep" (the mode the lease granted)
    module: str
    kind: str                    # e.g. "ask", "explorer.explore"
    payload: dict = field(default_factory=dict)
    prompt: str = ""             # the text to send (payload["prompt"] when present)
    conversation: str | None = None
    turn_index: int = 0          # position of this turn in its conversation (0 for one-shot)

    @property
    def turn_key(self) -> str:
        """Identifies the turn across attempts (reconciliation looks it up by this)."""
        if self.conversation:
            return f"{self.conversation}#{self.turn_index}"
        return f"task-{self.task_id}"


@dataclass(frozen=True)
class Reply:
    text: str
    meta: dict[str, Any] = field(default_factory=dict)   # model, usage, conversation url, ...


class ProviderError(StartupError):
    """A request's classified failure (``error_class``, see runner.py's table); one that escapes a
    provider's ``start`` stops its worker (exit ``FAILURE``)."""

    exit_code = ExitCode.FAILURE

    def __init__(self, error_class: str, message: str, retry_after: float | None = None, sent: bool = True,
                 scope: str = "mode"):
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r}")
        if scope not in COOLDOWN_SCOPES:
            raise ValueError(f"unknown cool-down scope {scope!r}")
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message
        self.retry_after = retry_after
        self.sent = sent
        self.scope = scope
        self.notice: Any = None   # a web provider's failure: the site notice it read (web/warnings.py Notice)


class Provider:
    """Base class of providers. Subclasses implement :meth:`send` and :meth:`reconcile`."""

    backend = "base"

    def __init__(self, account: str, settings: dict, clock, data_dir):
        self.account = account
        self.settings = settings
        self.clock = clock
        self.data_dir = data_dir

    @property
    def modes(self) -> list[str]:
        return list(self.settings.get("modes", ["standard"]))

    def start(self) -> None:
        """Open connections, browsers, files. Called once before the first send."""

    def send(self, turn: Turn, cancelled: Callable[[], bool]) -> Reply:
        """Send the turn and wait for the complete reply. Poll ``cancelled()`` while waiting and raise
        ProviderError("unknown", ..., sent=True) promptly when it turns true."""
        raise NotImplementedError

    def reconcile(self, turn: Turn) -> Reply | None:
        """For a turn whose outcome is UNKNOWN (the worker died between intent and outcome): return the
        provider's reply if it served the turn, or None if it certainly never received it (then the
        worker may send it). Raise ProviderError("unknown") when it cannot tell yet."""
        raise NotImplementedError

    def resend_note(self, turn: Turn) -> str:
        """Why the runtime may send ``turn`` again after :meth:`reconcile` returned None for its previous
        attempt (``turn``), for the log. The default fits providers whose reconcile asks the provider itself
        (the sim, the web sites): it said it never got the request. Stateless APIs override it: they cannot
        ask, and must not claim the provider never got a request that may have left."""
        return f"the provider never got attempt {turn.attempt}"

    def unspent(self, turn: Turn) -> bool:
        """After :meth:`reconcile` returned None for the previous attempt ``turn``: whether that attempt
        certainly spent nothing of its mode's quota (its request never left or never arrived, or the
        provider answered it in another mode). The runtime then has the broker refund that attempt's unit
        (turn_begin ``refund_unknown``). False by default: the unit stays counted."""
        return False

    def request_timeout(self, mode: str) -> float:
        """Real seconds one ``send`` in ``mode`` may take before the runtime cancels it (its outcome is then
        unknown and reconciled). This default serves the real services: the account's ``timeout``
        setting — a number or a ``{standard = s, deep = s}`` table; the web backends' turn timeout, the API
        backends' longest silence — plus REQUEST_TIMEOUT_GRACE, never below DEFAULT_REQUEST_TIMEOUTS (a
        streamed reply may take far longer than its longest silence). Providers whose settings know
        better (the sim: its latency model) override it."""
        floor = DEFAULT_REQUEST_TIMEOUTS.get(mode, DEFAULT_REQUEST_TIMEOUTS["standard"])
        own = self.configured_timeout(mode)
        return floor if own is None else max(floor, own + REQUEST_TIMEOUT_GRACE)

    def configured_timeout(self, mode: str) -> float | None:
        """The account's own ``timeout`` for ``mode``, from the provider's validated settings (each provider
        reads its settings once, through shared.settings); None here: this base class has no settings."""
        return None

    def check(self) -> dict:
        """A cheap live check for ``fanoctl backends check``: can this account serve right now? Returns
        ``{"ok": bool, "detail": str, ...}`` (never a secret); raises ProviderError for a classified
        failure (auth: log in again; quota: cooling until ...)."""
        return {"ok": True, "detail": f"{self.backend}: nothing to check"}

    def login(self, headless: bool = False) -> dict:
        """Interactive sign-in for ``fanoctl backends login``: web backends open the account's profile in a
        browser (headed unless ``headless``) and return ``{"ok", "detail"}``. API backends have nothing to
        do (their key comes from the environment or a file): refused."""
        raise ProviderError("terminal", f"backend {self.backend} has no interactive login", sent=False)

    def close(self) -> None:
        """Release resources; called at worker shutdown (never relied upon: crash-only)."""

