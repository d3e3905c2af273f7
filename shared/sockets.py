"""ZeroMQ socket plumbing shared by every program: one place for socket options, binding, and sending and
receiving whole messages within the byte bound of :mod:`shared.protocol` (which builds and parses the
frames themselves)."""
from __future__ import annotations

import os

import zmq

from shared.errors import ErrorCode, FanoError
from shared.protocol import MAX_MESSAGE, new_id

_NOBLOCK, _SNDMORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)  # see send_nowait


def recv_bounded(sock: zmq.Socket[bytes], limit: int = MAX_MESSAGE) -> tuple[list[bytes], int]:
    """Receive one whole multipart message without blocking (``zmq.Again`` if none is waiting).

    Returns ``(frames, total)``, ``total`` being the bytes of all its frames. ``ZMQ_MAXMSGSIZE`` bounds
    each frame only, so a peer could send hundreds of MiB as many frames: past ``limit`` in total the
    message is read frame by frame and discarded without being copied, and ``frames`` holds only its
    first frame (on a ROUTER, the sender's identity, to answer ``TOO_LARGE`` to)."""
    first = sock.recv(_NOBLOCK, copy=False)
    kept, total, frame = [first], len(first), first
    while frame.more:
        frame = sock.recv(copy=False)   # the rest is already here: a multipart message arrives whole
        total += len(frame)
        if total <= limit:
            kept.append(frame)
    if total > limit:
        return [first.bytes], total
    return [f.bytes for f in kept], total


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


def bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    """Bind ``sock`` to ``endpoint``; an ``ipc://`` socket file is then made mode 0600.

    Connecting to a Unix socket needs write permission on it, so 0600 keeps every other local user
    off the broker and the scheduler (the program's umask 077 already gives that; this holds whatever
    umask the socket was created under)."""
    sock.bind(endpoint)
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://"):], 0o600)


def configure_socket(sock: zmq.Socket[bytes], role: str, identity: str | None = None) -> None:
    """Set every socket option of the project in one place.

    role: ``router`` (broker, scheduler), ``dealer`` (clients, workers), ``pub``, ``sub``.
    """
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
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
