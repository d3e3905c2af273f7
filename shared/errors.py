"""The one error table of the wire contract, the exceptions that carry it, and process exit codes.

Codes are stable: a number is never reused for another meaning, names never change. Clients match on
``name`` (or ``code``), never on the message text, which is for humans.

======  =====================  ==============================================================
code    name                   meaning
======  =====================  ==============================================================
1       BAD_FRAME              wrong number of frames or an empty/garbled envelope
2       BAD_VERSION            protocol header is not the one this broker speaks
3       BAD_ENCODING           the body is not valid msgpack or not a map
4       TOO_LARGE              the body exceeds the protocol's size limit
5       UNKNOWN_COMMAND        ``cmd`` is not in the command table
6       BAD_ARGUMENT           a field is missing, has the wrong type or an invalid value
7       REQUEST_ID_REUSED      a request id was reused for a different request
10      NOT_FOUND              no such task (or other addressed object)
11      KEY_CONFLICT           idempotency key already used with a different payload
12      KEY_PARKED             the key's task was parked recently; resubmit with force
13      STALE_EPOCH            the lease epoch is not the task's current one (zombie worker)
14      INVALID_STATE          the task is not in a state that allows this operation
15      CONDITION_FAILED       a conditional put/delete in a module transaction did not hold
16      INVALID_QUOTA          a quota spec could not be parsed or is inconsistent
17      ACCOUNT_PAUSED         the account is paused (operator or auth failure)
20      MAP_FULL               the database map is (nearly) full at its ceiling; new work refused,
                               reads, acks, completions, failures and cancels served
22      DISK_FULL              the disk holding the database is full (or failing at commit); new work
                               refused, the rest served from room allocated ahead; resumes by itself
23      FORBIDDEN              the caller's role may not run this command on this account, module or task
                               (shared/roles.py: ``revoke`` is the scheduler's, a lease for another
                               account, a write into another module's namespace, a quota change by a
                               non-operator), or its CURVE key has been revoked
21      INTERNAL               a bug in the broker; the request was rolled back
30      UNAVAILABLE            client side: the broker did not answer after all retries
======  =====================  ==============================================================
"""
from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.IntEnum):
    BAD_FRAME = 1
    BAD_VERSION = 2
    BAD_ENCODING = 3
    TOO_LARGE = 4
    UNKNOWN_COMMAND = 5
    BAD_ARGUMENT = 6
    REQUEST_ID_REUSED = 7
    NOT_FOUND = 10
    KEY_CONFLICT = 11
    KEY_PARKED = 12
    STALE_EPOCH = 13
    INVALID_STATE = 14
    CONDITION_FAILED = 15
    INVALID_QUOTA = 16
    ACCOUNT_PAUSED = 17
    MAP_FULL = 20
    INTERNAL = 21
    DISK_FULL = 22
    FORBIDDEN = 23
    UNAVAILABLE = 30


class FanoError(Exception):
    """An error with a stable code from the table above.

    Raised inside the broker to abort one request (its sub-transaction is rolled back) and raised by
    the client library when the broker answers with an error.
    """

    def __init__(self, code: ErrorCode | int, message: str, details: dict[str, Any] | None = None):
        self.code = ErrorCode(code)
        self.message = message
        self.details = details or {}
        super().__init__(f"{self.code.name}: {message}")

    @property
    def name(self) -> str:
        return self.code.name

    def to_wire(self) -> dict[str, Any]:
        out = {"code": int(self.code), "name": self.code.name, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_wire(cls, err: dict[str, Any]) -> FanoError:
        try:
            code = ErrorCode(int(err.get("code", ErrorCode.INTERNAL)))
        except ValueError:
            code = ErrorCode.INTERNAL
        return cls(code, str(err.get("message", "")), err.get("details") or None)


# refusals for want of storage: they pass (space is freed, the map grows, the disk is cleaned), so a
# program receiving one backs off and retries instead of exiting
STORAGE_REFUSALS = frozenset({ErrorCode.MAP_FULL, ErrorCode.DISK_FULL})


class BrokerUnavailable(FanoError):
    """The broker did not answer within the client's retry budget."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.UNAVAILABLE, message)


def bad_argument(message: str, **details: Any) -> FanoError:
    return FanoError(ErrorCode.BAD_ARGUMENT, message, details or None)


def not_found(what: str, ident: object) -> FanoError:
    return FanoError(ErrorCode.NOT_FOUND, f"no such {what}: {ident}", {"id": ident})


class ExitCode(enum.IntEnum):
    """Process exit codes; supervisord and scripts see these."""

    OK = 0
    FAILURE = 1          # generic: a refused request, a failed check
    USAGE = 2            # bad command line (click uses 2 as well)
    UNAVAILABLE = 3      # the broker is down or did not answer
    LOCKED = 4           # another instance holds this program's lock file
    CONFIG = 5           # the configuration cannot be loaded
    STORAGE = 6          # the database cannot be opened or has a newer schema
    KEYS = 7             # a tcp:// endpoint needs CURVE keys that are missing, unreadable or not private


class StartupError(Exception):
    """The root of the conditions that keep a program from working, each with the exit code it ends with.

    ``python -m services`` (services/__main__.py) turns any of them that reaches it into one log line and
    ``exit_code``, so supervisord and scripts see why a program stopped without reading a traceback.
    Subclasses set ``exit_code``:

    =========================================  ====================  ==================================
    exception                                  exit code             raised when
    =========================================  ====================  ==================================
    shared.config.ConfigError                  5 ``CONFIG``          the configuration does not load or
                                                                     names what does not exist
    shared.quota.QuotaSpecError                5 ``CONFIG``          a quota window cannot be parsed
                                                                     (also a wire error: INVALID_QUOTA)
    shared.service.LockHeld                    4 ``LOCKED``          another instance holds the lock
    services.broker.schema.SchemaError         6 ``STORAGE``         the database has a newer schema
    services.backends.sim_log.LogCorrupt       6 ``STORAGE``         a simulated provider's request log
                                                                     is corrupt before its last line
    services.backends.base.ProviderError       1 ``FAILURE``         a provider fails while it starts
                                                                     (at run time it is a task outcome)
    shared.keys.KeysError                      7 ``KEYS``            a tcp:// endpoint's CURVE keys are
                                                                     missing, unreadable or not 0600
    =========================================  ====================  ==================================
    """

    exit_code: ExitCode = ExitCode.FAILURE
