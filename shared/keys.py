"""CURVE keys on disk: the keys directory, its key files and its ``authorized`` list (docs/security.md § Keys).

The keys directory (``[paths] keys_dir``, default ``var/keys``; ``$FANO_KEYS_DIR``) is 0700 and holds::

    server.key_secret      the server key pair of this host's broker and scheduler (0600)
    server.key             its public half: copied to every host whose programs connect to them
    NAME.key_secret        a client key pair, one per program (backend-claude, module-explorer,
                           scheduler, fanoctl ...; 0600)
    NAME.key               its public half
    authorized             the client keys the servers admit, one a line:  PUBLIC-KEY  ROLE  NAME

Key files use ZeroMQ's certificate format (``zmq.auth.load_certificate`` reads them): a ``metadata``
section with the key's ``name`` and ``role`` (informative: the role that counts is the one in
``authorized``, which the server host's operator controls) and a ``curve`` section with the Z85 keys.
A secret key file that its group or other users can read, or that another user owns, is refused
(:class:`KeysError`): whoever can read it can act with its role. ``authorized`` is refused when others
can write it. Every file is written whole to a temporary name and renamed, so a reader never sees half
of one, and a rename is what tells a running server that the list changed (:mod:`shared.zap`).

``authorized`` lines: blank lines and lines starting with ``#`` are ignored; a line that does not parse
(a bad key, an unknown role) admits nobody and is reported by :func:`read_authorized`, never fatal: a
bad edit must not lock every program out.
"""
from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ExitCode, StartupError
from shared.roles import Role

SERVER = "server"
AUTHORIZED = "authorized"
SECRET_SUFFIX, PUBLIC_SUFFIX = ".key_secret", ".key"
KEY_DIR_MODE, SECRET_MODE = 0o700, 0o600
# a Z85-encoded 32-byte CURVE key (ZeroMQ's alphabet)
_Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
# a key's name: a program name (letters, digits, _ . -), the file name stem
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")


class KeysError(StartupError):
    """CURVE keys a networked (``tcp://``) endpoint needs are missing, unreadable or not private."""

    exit_code = ExitCode.KEYS


@dataclass(frozen=True)
class ClientKeys:
    """What a client socket needs for a CURVE connection: its key pair and the server's public key (Z85)."""

    name: str
    public: bytes
    secret: bytes
    server: bytes


@dataclass(frozen=True)
class ServerKeys:
    """What a server socket needs: its key pair, and the ``authorized`` list its ZAP handler admits."""

    public: bytes
    secret: bytes
    authorized: Path


@dataclass(frozen=True)
class Entry:
    """One line of ``authorized``."""

    public: str
    role: Role
    name: str

    def line(self) -> str:
        return f"{self.public}  {self.role}  {self.name}"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in (SERVER, AUTHORIZED):
        raise KeysError(f"bad key name {name!r}: a program name (letters, digits, _ . -), not "
                        f"{SERVER!r} or {AUTHORIZED!r}")
    return name


def check_public(key: str) -> str:
    """``key`` if it is a Z85 CURVE public key (40 characters), else KeysError."""
    if not _Z85_KEY.match(key):
        raise KeysError(f"not a CURVE public key (40 characters of Z85): {key[:60]!r}")
    return key


def needs_curve(endpoint: str) -> bool:
    """Whether ``endpoint`` is a network transport (``tcp://`` and the rest): anything but ``ipc://`` and
    ``inproc://``. A string that is no endpoint at all is left to ZeroMQ's own error."""
    return "://" in endpoint and not endpoint.startswith(("ipc://", "inproc://"))


# --- files ------------------------------------------------------------------------------------------------

def _private_dir(keys_dir: Path) -> None:
    """Refuse a keys directory that is not this user's alone (KeysError): whoever may list or change it
    could replace the files in it."""
    try:
        st = keys_dir.stat()
    except FileNotFoundError:
        raise KeysError(f"the keys directory {keys_dir} does not exist (fanoctl keys init makes it)") from None
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise KeysError(f"the keys directory {keys_dir} must be this user's alone (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}): chmod 700 {keys_dir}")


def _private_file(path: Path, what: str) -> None:
    """Refuse a secret file that is not this user's alone (KeysError)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeysError(f"{what} {path} does not exist (fanoctl keys init makes the keys of a tree)") from None
    if st.st_uid != os.geteuid():
        raise KeysError(f"{what} {path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})")
    if st.st_mode & 0o077:
        raise KeysError(f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                        f"it must be 0600: chmod 600 {path}")


def _write(path: Path, text: str, mode: int) -> None:
    """Write ``path`` whole, ``mode`` from its creation on, through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)   # whatever the umask
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def make_dir(keys_dir: Path) -> Path:
    """Create the keys directory (0700) if needed; tighten one of ours that is wider."""
    keys_dir.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
    st = keys_dir.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != KEY_DIR_MODE:
        os.chmod(keys_dir, KEY_DIR_MODE)
    return keys_dir


def _cert(name: str, role: str, public: bytes, secret: bytes | None) -> str:
    what = "secret key: keep it private (0600)" if secret else "public key: may be copied to other hosts"
    lines = [f"#   Fano CURVE {what}", f"#   made by fanoctl keys on {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             "metadata", f'    name = "{name}"', f'    role = "{role}"',
             "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def write_pair(keys_dir: Path, name: str, role: str) -> bytes:
    """Make a new key pair ``name`` (``server`` or a client) in ``keys_dir``; returns its public key."""
    import zmq

    public, secret = zmq.curve_keypair()
    make_dir(keys_dir)
    _write(keys_dir / f"{name}{SECRET_SUFFIX}", _cert(name, role, public, secret), SECRET_MODE)
    _write(keys_dir / f"{name}{PUBLIC_SUFFIX}", _cert(name, role, public, None), 0o644)
    return public


def _read_cert(path: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read the key file {path}: {exc}") from None
    if public is None or not _Z85_KEY.match(public.decode(errors="replace")):
        raise KeysError(f"the key file {path} holds no valid public key")
    return public, secret


def load_secret(keys_dir: Path, name: str) -> tuple[bytes, bytes]:
    """The key pair ``name`` (its ``.key_secret`` file, which must be private); KeysError if not usable."""
    path = keys_dir / f"{name}{SECRET_SUFFIX}"
    _private_dir(keys_dir)
    _private_file(path, "the secret key file")
    public, secret = _read_cert(path)
    if secret is None:
        raise KeysError(f"the key file {path} holds no secret key")
    return public, secret


def load_public(keys_dir: Path, name: str) -> bytes:
    """The public key ``name`` (its ``.key`` file, or the public half of its ``.key_secret``)."""
    path = keys_dir / f"{name}{PUBLIC_SUFFIX}"
    if not path.exists():
        return load_secret(keys_dir, name)[0]
    return _read_cert(path)[0]


def client_keys(keys_dir: Path, name: str) -> ClientKeys:
    """The keys the client program ``name`` connects with: ``name.key_secret`` and ``server.key``."""
    public, secret = load_secret(keys_dir, check_name(name))
    return ClientKeys(name, public, secret, load_public(keys_dir, SERVER))


def server_keys(keys_dir: Path) -> ServerKeys:
    """This host's server keys and its ``authorized`` list (which must exist and not be writable by others)."""
    public, secret = load_secret(keys_dir, SERVER)
    path = keys_dir / AUTHORIZED
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeysError(f"{path} does not exist: no client could connect (fanoctl keys init makes it)") from None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise KeysError(f"{path} may be changed by other users (mode {stat.S_IMODE(st.st_mode):04o}, uid "
                        f"{st.st_uid}): chmod 600 {path}")
    return ServerKeys(public, secret, path)


# --- the authorized list ----------------------------------------------------------------------------------

def parse_authorized(text: str) -> tuple[list[Entry], list[str]]:
    """``(entries, problems)``: each bad line is skipped (it admits nobody) and described in ``problems``."""
    entries: list[Entry] = []
    problems: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 3:
                raise ValueError("expected PUBLIC-KEY ROLE NAME")
            entries.append(Entry(check_public(parts[0]), Role.parse(parts[1]), parts[2]))
        except (ValueError, KeysError) as exc:
            problems.append(f"line {n}: {exc}")
    return entries, problems


def read_authorized(path: Path) -> tuple[list[Entry], list[str]]:
    """The entries of ``authorized`` and its problems. A list another user owns or may change admits nobody
    (a running server rereads it: a swapped-in file must not let anyone in)."""
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return [], [f"{path} does not exist"]
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return [], [f"{path} may be changed by other users (mode {stat.S_IMODE(st.st_mode):04o}, uid "
                    f"{st.st_uid}): it admits nobody until it is this user's alone (chmod 600)"]
    return parse_authorized(text)


_HEADER = ("# Fano: the CURVE client keys this host's broker and scheduler admit, one a line:\n"
           "#   PUBLIC-KEY  ROLE  NAME     (ROLE: worker:ACCOUNT, module:NAME, scheduler, operator)\n"
           "# Edit with fanoctl keys (add, revoke); a running server rereads it within a second.\n")


def write_authorized(path: Path, entries: Iterable[Entry]) -> None:
    _write(path, _HEADER + "".join(e.line() + "\n" for e in entries), SECRET_MODE)


# --- managing the directory (fanoctl keys; tests) --------------------------------------------------------

def authorize(keys_dir: Path, name: str, role: Role, public: str) -> None:
    """List ``public`` as key ``name`` with ``role`` in ``authorized`` (replacing an entry of that name or key)."""
    check_name(name)
    check_public(public)
    make_dir(keys_dir)
    entries, _ = read_authorized(keys_dir / AUTHORIZED)
    kept = [e for e in entries if e.name != name and e.public != public]
    write_authorized(keys_dir / AUTHORIZED, [*kept, Entry(public, role, name)])


def revoke(keys_dir: Path, name: str) -> list[Entry]:
    """Remove key ``name`` from ``authorized`` (its files stay); returns the entries removed."""
    path = keys_dir / AUTHORIZED
    entries, _ = read_authorized(path)
    gone = [e for e in entries if e.name == name]
    if gone:
        write_authorized(path, [e for e in entries if e.name != name])
    return gone


def generate(keys_dir: Path, name: str, role: Role) -> str:
    """A new client key pair ``name`` in ``keys_dir``, listed in ``authorized`` with ``role``; its public key."""
    public = write_pair(keys_dir, check_name(name), str(role)).decode()
    authorize(keys_dir, name, role, public)
    return public


def init(keys_dir: Path, programs: dict[str, Role]) -> list[str]:
    """The server key pair and a client key pair for each of ``programs`` (name -> role), listed in
    ``authorized``; what already exists is kept. Returns the names of the pairs made."""
    made = []
    make_dir(keys_dir)
    if not (keys_dir / f"{SERVER}{SECRET_SUFFIX}").exists():
        write_pair(keys_dir, SERVER, "server")
        made.append(SERVER)
    listed = {e.name for e in read_authorized(keys_dir / AUTHORIZED)[0]}
    for name, role in programs.items():
        if not (keys_dir / f"{name}{SECRET_SUFFIX}").exists():
            generate(keys_dir, name, role)
            made.append(name)
        elif name not in listed:
            authorize(keys_dir, name, role, load_public(keys_dir, name).decode())
    if not (keys_dir / AUTHORIZED).exists():
        write_authorized(keys_dir / AUTHORIZED, [])
    return made


def install_server_public(keys_dir: Path, public: str) -> None:
    """Trust ``public`` as the server key of the host this one's programs connect to (a host that runs only
    workers or modules: its ``server.key``, no secret half)."""
    check_public(public)
    make_dir(keys_dir)
    _write(keys_dir / f"{SERVER}{PUBLIC_SUFFIX}", _cert(SERVER, "server", public.encode(), None), 0o644)
