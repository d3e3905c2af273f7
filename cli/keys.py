"""``fanoctl keys ...``: the CURVE keys of a tree whose endpoints are ``tcp://`` (docs/security.md § Keys).

Every command works on the keys directory of the configuration (``[paths] keys_dir``, ``$FANO_KEYS_DIR``;
found even when fano.toml does not load) and needs no running tree. The files and the ``authorized`` list
are written by :mod:`shared.keys`; a running broker and scheduler reread the list within a second, so
``add`` and ``revoke`` take effect without a restart.
"""
from __future__ import annotations

import click

from cli.app import ctl, fail, json_option, out
from shared.errors import ExitCode


def _keys_dir():
    return ctl().endpoints().keys_dir


def _role(ctx, param, value):
    if value is None:
        return None
    from shared.roles import Role
    try:
        return Role.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _check_scope(role) -> None:
    """Fail unless a worker or module role names an account or module of the configuration: a key listed for
    a typo would be refused at every message (FORBIDDEN). Names are checked as everywhere else
    (``Config.names_checked``: a configuration that lists accounts); not when fano.toml does not load, which
    must not lock the keys out (ctl() has warned of it)."""
    from shared.config import KNOWN_MODULES, ConfigError, load_config, unknown_name
    from shared.roles import MODULE, WORKER
    if role is None or role.kind not in (WORKER, MODULE):
        return
    try:
        config = load_config(ctl().config_path)
    except ConfigError:
        return
    if not config.names_checked:
        return
    what, known = ("account", config.account_names) if role.kind == WORKER else ("module", KNOWN_MODULES)
    if role.scope not in known:
        fail(f"{unknown_name(what, role.scope, known)}: no key is made or listed for role {role}", ExitCode.FAILURE)


def _programs() -> dict:
    """Every program of the configuration that connects to the broker or the scheduler -> its role."""
    from shared.config import load_config
    from shared.roles import program_role
    return {name: program_role(name) for name in load_config(ctl().config_path).clients}


class KeyArgument(click.Command):
    """A command that takes a Z85 public key as an argument. Z85 keys may begin with ``-`` (one in 85
    does), which the parser reads as an option: the error then says to put the key after ``--``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            raise click.UsageError(f"{exc.format_message()} (a public key that starts with '-' goes after "
                                   f"'--': fanoctl keys {ctx.info_name} ... -- KEY)", ctx) from None


@click.group()
def keys():
    """CURVE keys for tcp:// endpoints: make, list, add, revoke (docs/security.md)."""


@keys.command("init")
@json_option
def keys_init():
    """Make the server key pair and a key pair for every program of the configuration (existing ones kept)."""
    from shared import keys as K
    made = K.init(_keys_dir(), _programs())
    out({"keys_dir": str(_keys_dir()), "made": made},
        lambda d: f"{len(d['made'])} key pair(s) made in {d['keys_dir']}: {', '.join(d['made']) or 'none'}")


@keys.command("generate")
@click.argument("name")
@click.option("--role", callback=_role, metavar="ROLE",
              help="worker:ACCOUNT, module:NAME, scheduler or operator (default: the one NAME implies).")
@click.option("--force", is_flag=True, help="Replace an existing key pair NAME (its old key stops working).")
@json_option
def keys_generate(name, role, force):
    """Make a new client key pair NAME and list it in authorized (a program name: backend-ACCOUNT, ...)."""
    from shared import keys as K
    from shared.roles import program_role
    if (_keys_dir() / f"{name}{K.SECRET_SUFFIX}").exists() and not force:
        fail(f"a key pair {name!r} exists in {_keys_dir()}: --force replaces it (and its old key stops working)",
             ExitCode.FAILURE)
    role = role or program_role(name)
    if role is None:
        raise click.UsageError(f"{name!r} is not a program name (backend-ACCOUNT, module-NAME, scheduler, "
                               "fanoctl): say its --role")
    _check_scope(role)
    public = K.generate(_keys_dir(), name, role)
    out({"name": name, "role": str(role), "public": public},
        lambda d: f"key {d['name']} ({d['role']}) made; public key {d['public']}")


@keys.command("add", cls=KeyArgument)
@click.argument("name")
@click.argument("public_key", metavar="PUBLIC-KEY")
@click.option("--role", callback=_role, metavar="ROLE", required=True,
              help="worker:ACCOUNT, module:NAME, scheduler or operator.")
@json_option
def keys_add(name, public_key, role):
    """List a client key made on another host: its Z85 public key, or the path of its .key file (a key
    that starts with '-' goes after '--': keys add NAME --role ROLE -- KEY)."""
    from pathlib import Path

    from shared import keys as K
    _check_scope(role)
    path = Path(public_key)
    if path.is_file():
        public_key = K.load_public(path.parent, path.name.removesuffix(K.PUBLIC_SUFFIX)).decode()
    K.authorize(_keys_dir(), name, role, public_key)
    out({"name": name, "role": str(role), "public": public_key},
        lambda d: f"key {d['name']} ({d['role']}) authorized")


@keys.command("revoke")
@click.argument("name")
@json_option
def keys_revoke(name):
    """Remove key NAME from authorized: refused from the next second on (its files stay)."""
    from shared import keys as K
    gone = K.revoke(_keys_dir(), name)
    if not gone:
        fail(f"no authorized key named {name!r} (fanoctl keys ls lists them)", ExitCode.FAILURE)
    out({"revoked": [e.name for e in gone]}, f"key {name} revoked")


@keys.command("server-key", cls=KeyArgument)
@click.argument("public_key", metavar="[PUBLIC-KEY]", required=False)
@json_option
def keys_server_key(public_key):
    """Print this host's server public key (to copy to another host), or install PUBLIC-KEY (a Z85 key or a
    server.key file) as the key of the server this host's programs connect to."""
    from pathlib import Path

    from shared import keys as K
    kd = _keys_dir()
    if public_key is None:
        pub = K.load_public(kd, K.SERVER).decode()
        out({"server": pub}, pub)
        return
    path = Path(public_key)
    if path.is_file():
        public_key = K.load_public(path.parent, path.name.removesuffix(K.PUBLIC_SUFFIX)).decode()
    K.install_server_public(kd, public_key)
    out({"server": public_key}, f"server key {public_key} installed in {kd}")


@keys.command("ls")
@json_option
def keys_ls():
    """The authorized client keys: name, role, public key."""
    from shared import keys as K
    entries, problems = K.read_authorized(_keys_dir() / K.AUTHORIZED)
    rows = [{"name": e.name, "role": str(e.role), "public": e.public} for e in entries]
    for problem in problems:
        click.echo(f"fanoctl: warning: {problem}", err=True)
    out({"keys": rows}, lambda d: "\n".join(f"{r['name']:<28} {r['role']:<24} {r['public']}" for r in d["keys"])
        or "no authorized keys")
