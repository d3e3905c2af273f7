"""The ZAP handler of a process's CURVE server sockets: only keys in the ``authorized`` list get in.

ZeroMQ asks a ZAP handler (RFC 27) about every CURVE handshake on a socket with a ZAP domain. This is
pyzmq's :class:`zmq.auth.thread.ThreadAuthenticator` — the protocol as its maintainers implement it, in a
thread of its own, so handshakes are answered while the broker's loop is inside a long group commit — with
:class:`Gate` as its credentials provider. The gate reads ``authorized`` (:mod:`shared.keys`) and reads it
again whenever the file has been replaced (``fanoctl keys add``/``revoke``), checked at each handshake and
by the server's loop every tick (:meth:`Gate.refresh`), so a revocation needs no restart:

- a new connection with a revoked key fails its handshake;
- an open connection keeps its socket, but the ZAP handler stamped its messages with the key (the
  ``User-Id`` message property), and the server looks the key up in the current list on every message
  (:meth:`Gate.caller`): a revoked key's requests are answered ``FORBIDDEN``;
- a PUB socket cannot refuse one subscriber's messages, so the broker re-binds its event socket when a
  key is removed: every subscriber reconnects through a new handshake, and catches up on what it missed
  from the broker's outbox (docs/wire.md § Events).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from shared.keys import Entry, read_authorized
from shared.roles import WORKER

if TYPE_CHECKING:
    import zmq

    from shared.keys import ServerKeys

DOMAIN = "fano"   # the ZAP domain of the CURVE request sockets (broker, scheduler: shared/sockets.py)
# the broker's event socket: a PUB cannot refuse one subscriber's messages, so who may read events is
# decided at the handshake: every role but a worker (which reads nothing: services/broker/roles.py)
EVENTS_DOMAIN = "fano.events"
log = logging.getLogger("zap")


class Gate:
    """The ``authorized`` list as a ZAP credentials provider, and the key -> caller lookup for servers."""

    def __init__(self, keys: ServerKeys):
        self.path = keys.authorized
        self._lock = threading.Lock()   # the ZAP thread and the server's loop both refresh
        self._stamp: tuple[int, int, int] | None = None
        self._by_key: dict[str, Entry] = {}
        self.refused = 0                 # handshakes refused (stats)
        self._auth: object | None = None
        self.refresh()

    def start(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """Start the authenticator on ``ctx`` (before any CURVE socket of ``ctx`` binds)."""
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx, log=logging.getLogger("zap.auth"))
        auth.start()
        for domain in (DOMAIN, EVENTS_DOMAIN):
            auth.configure_curve_callback(domain=domain, credentials_provider=self)
        self._auth = auth

    def stop(self) -> None:
        auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()  # type: ignore[attr-defined]

    def refresh(self) -> set[str]:
        """Reread ``authorized`` if it was replaced since the last look; returns the public keys removed."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp == self._stamp and stamp is not None:
                return set()
            self._stamp = stamp
            entries, problems = read_authorized(self.path)
            for problem in problems:
                log.error("%s: %s (that line admits nobody)", self.path, problem)
            before = self._by_key
            self._by_key = {e.public: e for e in entries}
        removed = set(before) - set(self._by_key)
        if before or removed:
            log.info("%s reread: %d key(s) admitted, %d removed", self.path, len(self._by_key), len(removed))
        return removed

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: admit the client key (Z85) when ``authorized`` lists it, to the event socket unless it is a
        worker's (called in the ZAP thread)."""
        self.refresh()
        entry = self._by_key.get(key.decode(errors="replace"))
        if entry is None:
            self.refused += 1
            log.warning("refused a CURVE client whose key is not authorized: %s", key.decode(errors="replace"))
            return False
        if domain == EVENTS_DOMAIN and entry.role.kind == WORKER:
            self.refused += 1
            log.warning("refused %s (%s) on the event socket: a worker reads no events", entry.name, entry.role)
            return False
        return True

    def caller(self, user_id: str | None) -> Entry | None:
        """The authorized entry of a message's ``User-Id`` (its client's public key), None if revoked."""
        return self._by_key.get(user_id) if user_id else None

    def entries(self) -> list[Entry]:
        return list(self._by_key.values())
