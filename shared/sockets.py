"""ZeroMQ socket plumbing shared by every program: one place for socket options, binding and connecting
(with CURVE on a networked endpoint), and sending and receiving whole messages within the byte bound of
:mod:`shared.protocol` (which builds and parses the frames themselves).

CURVE (docs/security.md): :func:`bind` and :func:`connect` are the only places a socket meets its
endpoint. An ``ipc://`` endpoint gets no keys; any other (``tcp://``) must have them — a server its key
pair (and a ZAP handler, :mod:`shared.zap`, started on its context), a client its key pair and the
server's public key — or :class:`shared.keys.KeysError` says which are missing, so a program refuses to
start instead of talking in clear text.
"""
from __future__ import annotations

import os

import zmq

from shared.errors import ErrorCode, FanoError
from shared.keys import ClientKeys, KeysError, ServerKeys, needs_curve
from shared.protocol import MAX_MESSAGE, new_id

_NOBLOCK, _SNDMORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)  # see send_nowait
# ZMTP heartbeats of the server sockets (configure_socket): a ping every 5 s, a connection silent for 15 s
# after one is closed; a live peer's libzmq answers from its I/O thread even while its program is busy
PEER_PING_MS, PEER_TIMEOUT_MS = 5_000, 15_000
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Is a message waiting on ``sock``? For draining loops: asking costs about half of what a receive
    that finds nothing does (pyzmq raises ``zmq.Again``, building an exception and its errno enum), and
    a loop woken by one message would otherwise pay that on every wake-up."""
    events = sock.get(_EVENTS)   # an int option (pyzmq types every option as int | bytes)
    return isinstance(events, int) and bool(events & _POLLIN)


def recv_bounded(sock: zmq.Socket[bytes], limit: int = MAX_MESSAGE) -> tuple[list[bytes], int]:
    """:func:`recv_from` without the sender's key."""
    frames, total, _ = recv_from(sock, limit)
    return frames, total


def recv_from(sock: zmq.Socket[bytes], limit: int = MAX_MESSAGE,
              curve: bool = False) -> tuple[list[bytes], int, str | None]:
    """Receive one whole multipart message without blocking (``zmq.Again`` if none is waiting).

    Returns ``(frames, total, user)``. With ``curve`` (the socket is a CURVE server), ``user`` is the
    ``User-Id`` the ZAP handler gave the sender's connection: its public key in Z85
    (:meth:`shared.zap.Gate.caller` maps it to a role); otherwise None.

    Returns ``(frames, total)``, ``total`` being the bytes of all its frames. ``ZMQ_MAXMSGSIZE`` bounds
    each frame only, so a peer could send hundreds of MiB as many frames: past ``limit`` in total the
    message is read frame by frame and discarded without being copied, and ``frames`` holds only its
    first frame (on a ROUTER, the sender's identity, to answer ``TOO_LARGE`` to)."""
    first = sock.recv(_NOBLOCK, copy=False)
    user: str | None = None
    if curve:
        try:
            user = str(first.get("User-Id"))
        except zmq.ZMQError:   # no ZAP User-Id on this message: treated as an unknown key
            user = None
    kept, total, frame = [first], len(first), first
    while frame.more:
        frame = sock.recv(copy=False)   # the rest is already here: a multipart message arrives whole
        total += len(frame)
        if total <= limit:
            kept.append(frame)
    if total > limit:
        return [first.bytes], total, user
    return [f.bytes for f in kept], total, user


def too_large_message(total: int) -> FanoError:
    """The error for a message whose frames hold more than :data:`MAX_MESSAGE` bytes in total."""
    return FanoError(ErrorCode.TOO_LARGE, f"message of {total} bytes in all frames exceeds {MAX_MESSAGE}")


def send_nowait(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """``sock.send_multipart(frames, flags=zmq.NOBLOCK)`` (same frames, same errors), with plain-int flags.

    pyzmq's ``send_multipart`` combines its flag enums on every frame, which costs more than sending a
    small frame: the broker pays that on every reply and every event, each client on every request.
    """
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _NOBLOCK if i == last else _SNDMORE_NOBLOCK)


def bind(sock: zmq.Socket[bytes], endpoint: str, keys: ServerKeys | None = None, domain: str | None = None) -> bool:
    """Bind ``sock`` to ``endpoint``; returns whether it is a CURVE server (a networked endpoint).

    An ``ipc://`` socket file is then made mode 0600: connecting to a Unix socket needs write permission
    on it, so 0600 keeps every other local user off the broker and the scheduler (the program's umask
    077 already gives that; this holds whatever umask the socket was created under). A ``tcp://``
    endpoint needs ``keys`` (KeysError without them), and a ZAP handler on the socket's context that
    admits only authorized client keys (:class:`shared.zap.Gate`) in the socket's ZAP ``domain`` (default
    :data:`shared.zap.DOMAIN`); ZAP_ENFORCE_DOMAIN makes every handshake fail, rather than pass unchecked,
    if that handler is missing."""
    curve = needs_curve(endpoint)
    if curve:
        if keys is None:
            raise KeysError(f"{endpoint} is a network endpoint: it needs the server's CURVE keys")
        from shared.zap import DOMAIN
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, (domain or DOMAIN).encode())
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.bind(endpoint)
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://"):], 0o600)
    return curve


def connect(sock: zmq.Socket[bytes], endpoint: str, keys: ClientKeys | None = None) -> None:
    """Connect ``sock`` to ``endpoint``: with CURVE (``keys``: this program's pair and the server's public
    key) when the endpoint is networked, else KeysError; an ``ipc://`` endpoint takes no keys."""
    if needs_curve(endpoint):
        if keys is None:
            raise KeysError(f"{endpoint} is a network endpoint: it needs this program's CURVE keys")
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.connect(endpoint)


def configure_socket(sock: zmq.Socket[bytes], role: str, identity: str | None = None) -> None:
    """Set every socket option of the project in one place.

    role: ``router`` (broker, scheduler), ``dealer`` (clients, workers), ``pub``, ``sub``.
    """
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
    if role in ("router", "pub"):
        # the servers ping every peer (ZMTP heartbeats, answered by the peer's libzmq, whatever its program is
        # doing) and drop a connection that stays silent: a tcp:// peer that vanished without closing it (a cut
        # link, a host powered off) would otherwise hold a descriptor and a pipe here for ever (docs/remote.md)
        sock.setsockopt(zmq.HEARTBEAT_IVL, PEER_PING_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, PEER_TIMEOUT_MS)
    if role == "router":
        # fail loudly instead of silently dropping replies to unknown peers
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # a restarted client with the same identity takes over its old connection
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
    elif role == "dealer":
        if identity:
            # a unique suffix per socket: two sockets never share an identity; the name stays readable
            sock.setsockopt(zmq.IDENTITY, f"{identity}#{os.getpid()}.{new_id()[:8]}".encode())
    elif role == "pub":
        sock.setsockopt(zmq.SNDHWM, 100_000)
    elif role == "sub":
        sock.setsockopt(zmq.RCVHWM, 100_000)
    else:
        raise ValueError(f"unknown socket role {role!r}")
