"""Who a caller is allowed to be: the four roles of docs/security.md § Roles, and how a caller gets one.

A role is ``worker:ACCOUNT`` (the backend worker of one account), ``module:NAME`` (one research module,
writing its own namespace), ``scheduler`` or ``operator`` (everything: ``fanoctl`` and the operator's own
scripts). It comes from one of two places:

- over ``tcp://`` (CURVE), from the client's authenticated public key: the ``authorized`` list of the keys
  directory names each key's role (:mod:`shared.keys`), and the ZAP handler (:mod:`shared.zap`) stamps the
  key on every message of the connection;
- over ``ipc://``, from the program name at the head of the socket identity (``name#pid.nonce``,
  :func:`shared.sockets.configure_socket`): :func:`of_program`. A process that can open the 0600 socket
  runs as the tree's own user and could name itself anything, so this guards against a confused program
  (a bug that writes another module's data, a worker finishing another account's task), not against a
  hostile process of the same user; any other name (``fanoctl``, scripts, tests) is the operator's.

What each role may do is decided where the commands are served: services/broker/roles.py for the
broker, services/scheduler/core.py for the scheduler.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

WORKER, MODULE, SCHEDULER, OPERATOR = "worker", "module", "scheduler", "operator"
KINDS = (WORKER, MODULE, SCHEDULER, OPERATOR)
_SCOPED = (WORKER, MODULE)
# an account or module name (shared/config.py's account rule, which module names also follow)
_SCOPE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Role:
    """A caller's role: ``kind`` is one of :data:`KINDS`; ``scope`` the account (worker) or module (module)."""

    kind: str
    scope: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.scope}" if self.scope is not None else self.kind

    @classmethod
    def parse(cls, text: str) -> Role:
        """``worker:claude``, ``module:explorer``, ``scheduler``, ``operator`` -> a Role; ValueError saying why."""
        kind, sep, scope = text.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown role {text!r} (roles: worker:ACCOUNT, module:NAME, scheduler, operator)")
        if kind in _SCOPED:
            if not sep or not _SCOPE.match(scope):
                raise ValueError(f"role {text!r} needs a name: {kind}:NAME (lower case, digits, _ . -)")
            return cls(kind, scope)
        if sep:
            raise ValueError(f"role {kind} takes no name (got {text!r})")
        return cls(kind)

    def is_worker_of(self, account: object) -> bool:
        return self.kind == WORKER and self.scope == account

    def is_module(self, module: object) -> bool:
        return self.kind == MODULE and self.scope == module


OPERATOR_ROLE = Role(OPERATOR)
# the role of a CURVE client whose key is no longer in the authorized list (revoked while connected): no
# role a key can be given, and refused everything
NOBODY = Role("nobody")


def program_role(name: str) -> Role | None:
    """The role a supervised program's name implies (``backend-A`` worker:A, ``module-M`` module:M,
    ``scheduler``, ``fanoctl`` and the ``web`` panel operator); None for any other name."""
    if name == SCHEDULER:
        return Role(SCHEDULER)
    if name in ("fanoctl", "web"):   # the operator's command line and control panel
        return OPERATOR_ROLE
    for prefix, kind in (("backend-", WORKER), ("module-", MODULE)):
        if name.startswith(prefix) and _SCOPE.match(name[len(prefix):]):
            return Role(kind, name[len(prefix):])
    return None


def of_program(name: str) -> Role:
    """The role of a caller over ``ipc://`` from its program name: :func:`program_role`, else operator."""
    return program_role(name) or OPERATOR_ROLE


@functools.lru_cache(maxsize=4096)
def of_identity(ident: bytes) -> Role:
    """The role of an ``ipc://`` caller from its socket identity (``name#pid.nonce``): :func:`of_program`.

    Cached: the broker and the scheduler ask it for every message, and an identity's role never changes
    (it is a function of the name alone)."""
    return of_program(ident.split(b"#", 1)[0].decode(errors="replace"))
