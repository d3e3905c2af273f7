"""The one config loader: a TOML file (``fano.toml``), validated into frozen dataclasses.

Lookup: the ``path`` argument, else ``$FANO_CONFIG``, else ``fano.toml`` at the repository root.
Relative paths inside the file are relative to the file's folder. Unknown keys are errors (a typo in
a quota must not silently mean "unlimited").
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import ExitCode, StartupError

if TYPE_CHECKING:
    from shared.keys import ClientKeys, ServerKeys

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "fano.toml"


class ConfigError(StartupError):
    """The configuration cannot be loaded; the message names the file and the key."""

    exit_code = ExitCode.CONFIG


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: Any) -> int:
    """``1073741824``, ``"1GiB"``, ``"512 MiB"``, ``"64M"`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"not a size: {value!r} (use e.g. 1GiB, 512MiB)")
    unit = (m.group(2) or "").upper().replace("I", "").replace("B", "") or ""
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: int | float) -> str:
    """Bytes as ``512.0 MiB`` (the inverse of :func:`parse_size`, for messages and tables)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# the largest map the broker will mmap (services/broker/core.py MAX_MAP_SIZE is the same bound): past it
# mmap fails, and far below it a map larger than the disk only turns a clean refusal into write errors
MAX_MAP_CEILING = 1 << 40


# shared/settings.py (the one settings validator) imports this module, so the sections below declare their
# keys for it as field metadata (the same rules its ``setting()`` takes) instead of importing it here
SETTING = "fano.setting"
T = TypeVar("T")


def _key(default: Any, doc: str, **rules: Any) -> Any:
    """A key of a ``[broker]`` / ``[scheduler]`` table: its default, doc line and rules (see
    :func:`shared.settings.setting`)."""
    meta = {SETTING: dict(doc=doc, **rules)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def _sizes_ok(cfg: BrokerConfig) -> None:
    from shared.settings import Invalid

    if cfg.headroom >= cfg.map_size:
        raise Invalid(f"expected less than map_size ({format_size(cfg.map_size)}), got {format_size(cfg.headroom)}",
                      key="headroom")
    if cfg.map_ceiling < cfg.map_size:
        raise Invalid(f"expected at least map_size ({format_size(cfg.map_size)}), got {format_size(cfg.map_ceiling)}",
                      key="map_ceiling")


@dataclass(frozen=True)
class BrokerConfig:
    """The ``[broker]`` table (validated by :func:`shared.settings.load`; README "Configuration")."""

    map_size: int = _key(1024**3, "the map at first start; it grows by itself up to map_ceiling", kind="size", lo=1)
    headroom: int = _key(32 * 1024**2, "kept free for running work (acks, completions, failures, cancels) once new "
                                       "work is refused, in the map and as disk blocks allocated ahead of use in "
                                       "data.mdb (services/broker/capacity.py)", kind="size", lo=0)
    map_ceiling: int = _key(64 * 1024**3, "the map grows by itself (doubling) up to this, and to what the disk "
                                          "allows", kind="size", lo=1, hi=MAX_MAP_CEILING)
    disk_reserve: int = _key(1024**3, "free disk space the broker leaves to everything else (logs, transcripts)",
                             kind="size", lo=0)
    max_batch: int = _key(256, "requests folded into one group commit", lo=1)
    lease_ttl: float = _key(60.0, "default lease length, seconds (monotonic)", lo=0)
    max_lease_ttl: float = _key(3 * 3600.0, "the longest lease a worker may ask for, seconds", lo=0)
    backoff_base: float = _key(5.0, "retry backoff, world seconds; doubled per attempt", lo=0)
    backoff_max: float = _key(3600.0, "the longest retry backoff, world seconds", lo=0)
    default_max_attempts: int = _key(3, "attempts of a task that does not say", lo=1)
    parked_key_window: float = _key(3600.0, "a key parked this recently is refused unless forced (seconds)", lo=0)
    request_log_ttl: float = _key(86400.0, "how long retried request ids are remembered (seconds)", lo=0)
    event_retention: int = _key(200_000, "events kept in the outbox", lo=0)
    history_limit: int = _key(50, "transitions kept per task", lo=0)
    unknown_turn_hold: float = _key(1800.0, "world seconds a task whose last turn has an unknown outcome waits for "
                                            "that account to reconcile it (e.g. its worker is frozen); then any "
                                            "account may take it; 0 = wait for that account forever", lo=0)
    max_refusals: int = _key(20, "provider refusals (transient, nothing sent: overload, 5xx) that do not burn an "
                                 "attempt, per task", lo=0)
    task_retention: float = _key(14 * 86400.0, "world seconds after which an acked DONE/CANCELLED task is compacted "
                                               "(payload, result and history dropped, identity and key kept); "
                                               "0 = keep every task whole forever; PARKED tasks are never compacted",
                                 lo=0)
    working_retention: float = _key(14 * 86400.0, "world seconds after its last put that a module's working-data key "
                                                  "(docs/storage.md) is deleted; 0 = keep it forever", lo=0)

    def check(self) -> None:
        _sizes_ok(self)


# docs/research.md § Default priorities: base priority by task kind (the part after the module's dot, or the whole kind)
DEFAULT_BASE_PRIORITIES = {
    "address_comment": 70, "synthesis": 60, "review": 55, "review1": 55, "review2": 55, "review3": 55,
    "incorporate_insight": 55, "explore": 50, "draft_section": 50, "draft": 50, "synthesize_findings": 50,
    "critique": 45, "evaluate_source": 45, "review_section": 40, "extract_content": 40, "extract": 40,
    "generate_questions": 35, "extract_findings": 40,
    # an operator's `fanoctl ask` (module adhoc): someone waits at a terminal, so it takes its account's next
    # free slot, far above anything research reaches (base <= 70, seed priority <= 10 x 10, aging <= 20,
    # module weights and backlog boosts of a few tens)
    "ask": 1000,
    "consolidate": 40, "mathcheck": 55, "dedup": 50,
    # the documenter's incorporation steps (55, like incorporate_insight)
    "documenter.plan": 55, "documenter.evaluate": 55, "documenter.exposition": 55,
}


def _with_default_priorities(table: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULT_BASE_PRIORITIES, **table}


@dataclass(frozen=True)
class SchedulerConfig:
    """Dynamic priority = base(kind) + module weight + min(aging_cap, aging_per_hour * hours waiting)
    + backlog boost + seed_weight * attrs.seed_priority + attrs.comment_boost; ties: oldest first.
    The ``[scheduler]`` table (validated by :func:`shared.settings.load`)."""

    base_priorities: dict[str, Any] = _key(DEFAULT_BASE_PRIORITIES, "base priority by task kind (the part after the "
                                           "module's dot, or the whole kind); the table given is laid over these "
                                           "defaults", kind="table", parse=_with_default_priorities)
    default_base: int = _key(50, "the base priority of a kind the table does not name")
    module_weights: dict[str, Any] = _key({}, "module -> additive weight (run-time adjustable: fanoctl modules "
                                              "weights)")
    aging_per_hour: float = _key(2.0, "priority gained per hour waiting ...", lo=0)
    aging_cap: float = _key(20.0, "... up to this", lo=0)
    seed_weight: float = _key(10.0, "priority per point of attrs.seed_priority", lo=0)
    # none by default: the documenter boosts its own tasks by the blessed insights waiting (its queue never
    # holds more than a handful), see its settings
    backlog_boosts: dict[str, Any] = _key({}, "module -> [[queued tasks, boost], ...]: e.g. +15 above 10 queued")
    lease_ttl: float = _key(60.0, "what the scheduler asks workers to lease for; they renew at ttl/3", lo=0)
    assign_timeout: float = _key(10.0, "an assignment the worker neither leased nor declined is retried after this",
                                 lo=0)
    conversation_handoff: float = _key(300.0, "world seconds a conversation turn waits while the account holding its "
                                              "conversation cannot run it (quota used up, cooling down, paused, "
                                              "offline) or is busy with other work, before another account it "
                                              "allows (and that asks for work: an idle one) may continue the "
                                              "conversation (services/broker/ops_handoff.py); 0 = never", lo=0)
    responsive_accounts: int = _key(1, "accounts kept out of deep turns while they have standard work, so that a "
                                       "comment or a short step never waits for a deep turn to end "
                                       "(services/scheduler/responsive.py); 0 = every account may be in one", lo=0)


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``: only then may the
    web panel serve without a token, since nobody but this machine's users can reach it."""
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False   # a host name other than localhost may resolve to anything


@dataclass(frozen=True)
class WebConfig:
    """The ``[web]`` table: the control panel (services/web/, docs/web.md § Security)."""

    host: str = _key("127.0.0.1", "the address the panel listens on; anything but loopback needs a token",
                     nonempty=True)
    port: int = _key(8080, "the panel's TCP port", lo=1, hi=65535)
    token: str = _key("", "the secret a browser signs in with (login form, then a cookie) and a script sends as "
                          "'Authorization: Bearer TOKEN'; empty: no sign-in (loopback only)")

    def check(self) -> None:
        """A panel anyone on the network could reach must ask for a token: without one, every program (and
        ``ops/config_check``) refuses the file (a SettingsError: a StartupError with the configuration's
        exit code), so the panel never serves an open control of Fano beyond this machine."""
        from shared.settings import Invalid

        if self.token and len(self.token) < 16:
            raise Invalid(f"expected at least 16 characters, got {len(self.token)}", key="token")
        if not self.token and not is_loopback(self.host):
            raise Invalid(f"required when host is not a loopback address (host = {self.host!r}): without it "
                          "anyone who reaches the port could drive Fano; set a token of at least 16 characters, "
                          "or bind 127.0.0.1", key="token")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


@dataclass(frozen=True)
class QuotaConfig:
    account: str
    mode: str
    windows: tuple[Any, ...]  # of window dicts or compact strings, validated by shared.quota


BACKENDS = ("sim", "claude", "chatgpt", "gemini", "openai")
MODES = ("standard", "deep")
# the research modules, one supervisord program ``module-NAME`` each (services/__main__.py runs them), and
# ``adhoc``, the module of the operator's ``fanoctl ask``: the module names a quota reserve, a module weight,
# a backlog boost or a ``[modules.NAME]`` table may use
MODULES = ("explorer", "documenter", "researcher", "advisor")
ADHOC = "adhoc"
KNOWN_MODULES = MODULES + (ADHOC,)


@dataclass(frozen=True)
class PathKeys:
    """The ``[paths]`` table: folders relative to the file's own (``FANO_RUN_DIR`` etc. override them)."""

    run_dir: str = _key("var/run", "sockets and lock files", nonempty=True)
    data_dir: str = _key("var/data", "the database, the simulated providers' logs, the accounts' own files",
                         nonempty=True)
    log_dir: str = _key("var/log", "the programs' logs", nonempty=True)
    keys_dir: str = _key("var/keys", "CURVE key pairs and the authorized list, needed only when an endpoint is "
                                     "tcp:// (fanoctl keys; docs/security.md)", nonempty=True)


@dataclass(frozen=True)
class AccountKeys:
    """The keys of an ``[accounts.NAME]`` table every kind has (:data:`ACCOUNT_KEYS`); the rest of the
    table is the kind's own settings, which its settings class (e.g. ``services/backends/sim.py``'s) checks."""

    backend: str = _key(None, "the kind of account (required)", kind="str", choices=BACKENDS, required=True)
    modes: tuple[str, ...] = _key(("standard",), "the modes the account offers (deep: ChatGPT Pro, Gemini Deep "
                                                 "Think, Claude extended thinking)", choices=MODES, min_items=1)
    unknown_turn_hold: float | None = _key(None, "seconds: this account's own [broker] unknown_turn_hold, read by "
                                                 "the broker (0 = wait for this account forever; at most ten years)",
                                           kind="float", lo=0, hi=10 * 366 * 86400)
    remote: bool = _key(False, "true: this account's worker runs on another host (docs/remote.md): this host runs "
                               "no program for it, makes no key for it and does not check its own settings (they "
                               "live in the worker host's fano.toml); its name, modes, quotas and hold apply here")


def unknown_name(what: str, name: object, known: Iterable[str]) -> str:
    """The one wording of "no such account/module", with the known names (config, broker, scheduler, CLI)."""
    return f"unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})"


@dataclass(frozen=True)
class AccountConfig:
    """One LLM account = one backend worker program ``backend-<name>``."""

    name: str
    backend: str                      # one of BACKENDS
    modes: tuple[str, ...] = ("standard",)
    settings: dict[str, Any] = field(default_factory=dict)   # everything else in [accounts.NAME], backend-specific
    # world seconds a turn of this account with an unknown outcome stays bound to it for reconciling
    # (None: [broker] unknown_turn_hold; 0: forever). Read by the broker, not the worker
    unknown_turn_hold: float | None = None
    # its worker runs on another host (docs/remote.md): no program, key or settings check here
    remote: bool = False

    @property
    def program(self) -> str:
        return f"backend-{self.name}"


def _endpoint(env: str, run_dir: Path, socket: str) -> str:
    return os.environ.get(env) or f"ipc://{run_dir}/{socket}"


class _Sockets:
    """The programs' socket endpoints under ``run_dir`` (each overridable by its environment variable), and
    the CURVE keys the networked ones need (docs/security.md § Keys): the one way programs get them."""

    run_dir: Path
    keys_dir: Path

    @property
    def networked(self) -> bool:
        """Whether any endpoint leaves the host's own sockets (``tcp://``): then CURVE keys are needed."""
        from shared.keys import needs_curve
        return any(needs_curve(e) for e in (self.broker_endpoint, self.events_endpoint, self.scheduler_endpoint))

    def client_keys(self, name: str, *endpoints: str) -> ClientKeys | None:
        """The CURVE keys program ``name`` connects with (``keys_dir/NAME.key_secret`` and ``server.key``);
        None when every endpoint (the tree's, and ``endpoints`` given on a command line) is ``ipc://``.
        Raises :class:`shared.keys.KeysError` (a StartupError) when one is networked and they are
        missing or not private."""
        from shared.keys import needs_curve
        if not self.networked and not any(needs_curve(e) for e in endpoints):
            return None
        from shared.keys import client_keys
        return client_keys(self.keys_dir, name)

    def server_keys(self) -> ServerKeys | None:
        """The broker's and the scheduler's CURVE server keys and ``authorized`` list; None when every
        endpoint is ``ipc://``; :class:`shared.keys.KeysError` when one is networked and they are unusable."""
        if not self.networked:
            return None
        from shared.keys import server_keys
        return server_keys(self.keys_dir)

    @property
    def broker_endpoint(self) -> str:
        return _endpoint("FANO_BROKER", self.run_dir, "broker.sock")

    @property
    def events_endpoint(self) -> str:
        return _endpoint("FANO_EVENTS", self.run_dir, "events.sock")

    @property
    def scheduler_endpoint(self) -> str:
        return _endpoint("FANO_SCHEDULER", self.run_dir, "scheduler.sock")


@dataclass(frozen=True)
class Endpoints(_Sockets):
    """Where a running tree's sockets are: :func:`find_endpoints`."""

    run_dir: Path
    keys_dir: Path
    problem: str | None = None   # why the whole configuration was not used (it does not load)


@dataclass(frozen=True)
class Config(_Sockets):
    path: Path | None
    run_dir: Path
    data_dir: Path
    log_dir: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    quotas: tuple[QuotaConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()
    # [modules.NAME] tables, validated by each module's own settings loader (one per module)
    modules: dict[str, Any] = field(default_factory=dict)
    web: WebConfig = field(default_factory=WebConfig)
    # [paths] keys_dir, resolved (a Config built by hand, in a test, gets it relative to the working directory)
    keys_dir: Path = Path("var/keys")

    def account(self, name: str) -> AccountConfig:
        for acct in self.accounts:
            if acct.name == name:
                return acct
        raise ConfigError(f"{self.path}: no account named {name!r} (known: "
                          f"{', '.join(a.name for a in self.accounts) or 'none'})")

    @property
    def names_checked(self) -> bool:
        """Whether account and module names are checked against this configuration: it lists accounts.

        A configuration without ``[accounts]`` runs no backend program, so no worker of the tree can use
        any name: it is a bare broker driven by scripts, tests and benchmarks whose clients lease under
        names of their own. Every deployment of the tree lists its accounts, and then an account or
        module name it does not know is refused everywhere (here, in the broker, the scheduler, fanoctl).
        """
        return bool(self.accounts)

    @property
    def local_accounts(self) -> tuple[AccountConfig, ...]:
        """The accounts whose worker program runs on this host (every one not marked ``remote``)."""
        return tuple(a for a in self.accounts if not a.remote)

    @property
    def clients(self) -> tuple[str, ...]:
        """The programs of this tree that connect to the broker or the scheduler, by name (each uses the CURVE
        key of that name on a tcp:// endpoint): the scheduler, the worker of every account that runs here
        (a remote account's key is made on its own host, docs/remote.md), every module, the web panel,
        fanoctl."""
        return ("scheduler", *(a.program for a in self.local_accounts), *(f"module-{m}" for m in MODULES), "web",
                "fanoctl")

    @property
    def account_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.accounts)

    def backend_names(self) -> tuple[str, ...]:
        """What a task's ``requires.backends`` may name: a configured account or a configured backend kind."""
        return tuple(dict.fromkeys([a.name for a in self.accounts] + [a.backend for a in self.accounts]))

    def lock_path(self, program: str) -> Path:
        return self.run_dir / f"{program}.lock"


def _table(cls: type[T], table: Any, where: str) -> T:
    """``table`` as ``cls`` (its keys declared with :func:`_key`); errors name ``where`` (file and table)."""
    from shared.settings import load  # here: shared/settings.py imports this module

    return load(cls, table, where)


def _quotas(data: dict[str, Any], where: str) -> tuple[QuotaConfig, ...]:
    """The ``[quotas.ACCOUNT.MODE]`` tables; their errors have the settings' format (shared/settings.py)."""
    from shared.settings import SettingsError  # here: shared/settings.py imports this module

    out = []
    quotas = data.get("quotas", {})
    if not isinstance(quotas, dict):
        raise SettingsError(f"{where}: [quotas]", None, "must be a table of [quotas.ACCOUNT.MODE]")
    for account, modes in quotas.items():
        if not isinstance(modes, dict):
            raise SettingsError(f"{where}: [quotas.{account}]", None, f"must contain [quotas.{account}.MODE] tables")
        for mode, spec in modes.items():
            table = f"{where}: [quotas.{account}.{mode}]"
            if mode not in MODES:
                # a mode no account has would never be charged: the quota would silently not apply
                raise SettingsError(table, None, f"mode must be one of {', '.join(MODES)}")
            if not isinstance(spec, dict) or set(spec) - {"windows"} or "windows" not in spec:
                raise SettingsError(table, None, "needs exactly one key, windows")
            windows = spec["windows"]
            if not isinstance(windows, list):
                raise SettingsError(table, "windows", f"expected a list of quota windows, got {windows!r}")
            from shared.quota import QuotaSpecError, normalize_windows
            try:
                normalized = normalize_windows(list(windows))
            except QuotaSpecError as exc:
                raise SettingsError(table, "windows", exc.message) from None
            if not normalized:
                # an empty list would store a quota that admits everything: say "no quota" by leaving it out
                raise SettingsError(table, "windows", "expected at least one window (remove the table for no "
                                    "limit), got []")
            out.append(QuotaConfig(account, mode, tuple(windows)))
    return tuple(out)


# the keys of an [accounts.NAME] table that are not the backend's own settings (those go to its worker)
ACCOUNT_KEYS = tuple(f.name for f in dataclasses.fields(AccountKeys))
_ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _accounts(data: dict[str, Any], where: str) -> tuple[AccountConfig, ...]:
    from shared.settings import SettingsError  # here: shared/settings.py imports this module

    accounts = data.get("accounts", {})
    if not isinstance(accounts, dict):
        raise SettingsError(f"{where}: [accounts]", None, "must be a table of [accounts.NAME]")
    out = []
    for name, spec in accounts.items():
        if not _ACCOUNT_NAME.match(name):
            raise SettingsError(f"{where}: [accounts.{name}]", None, f"the name must match {_ACCOUNT_NAME.pattern}")
        if not isinstance(spec, dict):
            raise SettingsError(f"{where}: [accounts.{name}]", None, "must be a table")
        common = _table(AccountKeys, {k: spec[k] for k in ACCOUNT_KEYS if k in spec}, f"{where}: [accounts.{name}]")
        settings = {k: v for k, v in spec.items() if k not in ACCOUNT_KEYS}
        out.append(AccountConfig(name, common.backend, common.modes, settings, common.unknown_turn_hold,
                                 common.remote))
    return tuple(out)


def _modules(data: dict[str, Any], where: str) -> dict[str, Any]:
    from shared.settings import SettingsError  # here: shared/settings.py imports this module

    modules = data.get("modules", {})
    if not isinstance(modules, dict) or not all(isinstance(v, dict) for v in modules.values()):
        raise SettingsError(f"{where}: [modules]", None, "must contain [modules.NAME] tables")
    for name in modules:
        if name not in MODULES:  # a misspelt table would otherwise be ignored and its module run on defaults
            raise SettingsError(f"{where}: [modules.{name}]", None, unknown_name("module", name, MODULES))
    return {name: dict(table) for name, table in modules.items()}


def _check_names(cfg: Config, where: str) -> None:
    """Every account and module a quota, reserve, weight or boost names must exist (see
    :attr:`Config.names_checked`): a typo must not leave a real account without its limit, nor a
    reserve that no module can use eating a scarce window."""
    if not cfg.names_checked:
        return
    from shared.quota import normalize_windows
    from shared.settings import SettingsError  # here: shared/settings.py imports this module

    accounts = {a.name: a for a in cfg.accounts}
    for q in cfg.quotas:
        at = f"{where}: [quotas.{q.account}.{q.mode}]"
        if q.account not in accounts:
            raise SettingsError(at, None, unknown_name("account", q.account, accounts))
        if q.mode not in accounts[q.account].modes:
            raise SettingsError(at, None, f"account {q.account} does not offer mode {q.mode} (its modes: "
                                f"{', '.join(accounts[q.account].modes)})")
        for window in normalize_windows(list(q.windows)):
            for module in window.get("reserves", {}):
                if module not in KNOWN_MODULES:
                    raise SettingsError(at, "windows", "reserve for " + unknown_name("module", module, KNOWN_MODULES))
    for key in ("module_weights", "backlog_boosts"):
        for module in getattr(cfg.scheduler, key):
            if module not in KNOWN_MODULES:   # a settings table: its error has the settings' format
                raise SettingsError(f"{where}: [scheduler]", key, unknown_name("module", module, KNOWN_MODULES))


def _config_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path or os.environ.get("FANO_CONFIG") or DEFAULT_CONFIG).resolve()


def _resolve_path(cfg_path: Path, paths: dict[str, Any], key: str, default: str) -> Path:
    env = os.environ.get(f"FANO_{key.upper()}")
    return (cfg_path.parent / (env or paths.get(key, default))).resolve()


def find_endpoints(path: str | os.PathLike[str] | None = None) -> Endpoints:
    """The sockets of the tree ``path`` configures, even when that file does not load.

    A running tree keeps working on the configuration it started with, so an edit that breaks the file
    (a typo, a half-written table) must not lock the operator out of it: when the file exists but does
    not load, its run directory comes from its ``[paths]`` table if that part still reads, else the
    default (``var/run`` beside the file), and ``problem`` says why. A missing file is still an error
    (ConfigError): that is a wrong path, not a broken configuration.
    """
    try:
        cfg = load_config(path)
        return Endpoints(cfg.run_dir, cfg.keys_dir)
    except ConfigError as exc:
        cfg_path = _config_path(path)
        if not cfg_path.is_file():
            raise
        problem = str(exc)
    paths: dict[str, Any] = {}
    try:
        with open(cfg_path, "rb") as f:
            table = tomllib.load(f).get("paths")
        if isinstance(table, dict):
            paths = {k: v for k, v in table.items() if isinstance(v, str)}
    except (OSError, tomllib.TOMLDecodeError):
        pass   # the file does not even parse: the default run directory
    return Endpoints(_resolve_path(cfg_path, paths, "run_dir", "var/run"),
                     _resolve_path(cfg_path, paths, "keys_dir", "var/keys"), problem)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    cfg_path = _config_path(path)
    where = str(cfg_path)
    try:
        with open(cfg_path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {where}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = set(data) - {"paths", "broker", "quotas", "accounts", "modules", "scheduler", "web"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s): {', '.join(sorted(unknown))}")
    paths = dataclasses.asdict(_table(PathKeys, data.get("paths", {}), f"{where}: [paths]"))

    def resolve(key: str, default: str) -> Path:
        return _resolve_path(cfg_path, paths, key, default)

    broker = _table(BrokerConfig, data.get("broker", {}), f"{where}: [broker]")
    scheduler = _table(SchedulerConfig, data.get("scheduler", {}), f"{where}: [scheduler]")
    web = _table(WebConfig, data.get("web", {}), f"{where}: [web]")
    cfg = Config(path=cfg_path, run_dir=resolve("run_dir", "var/run"), data_dir=resolve("data_dir", "var/data"),
                 log_dir=resolve("log_dir", "var/log"), broker=broker, scheduler=scheduler, quotas=_quotas(data, where),
                 accounts=_accounts(data, where), modules=_modules(data, where), web=web,
                 keys_dir=resolve("keys_dir", "var/keys"))
    _check_names(cfg, where)
    return cfg
