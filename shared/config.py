"""The one config loader: a TOML file (``fano.toml``), validated into frozen dataclasses.

Lookup: the ``path`` argument, else ``$FANO_CONFIG``, else ``fano.toml`` at the repository root.
Relative paths inside the file are relative to the file's folder. Unknown keys are errors (a typo in
a quota must not silently mean "unlimited").
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ExitCode, StartupError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "fano.toml"


class ConfigError(StartupError):
    """The configuration cannot be loaded; the message names the file and the key."""

    exit_code = ExitCode.CONFIG


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value) -> int:
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


@dataclass(frozen=True)
class BrokerConfig:
    map_size: int = 1024**3           # the map at first start; it grows by itself up to map_ceiling
    # kept free for running work (acks, completions, failures, cancels) once new work is refused, both in
    # the map and as disk blocks allocated ahead of use in data.mdb (services/broker/capacity.py)
    headroom: int = 32 * 1024**2
    map_ceiling: int = 64 * 1024**3   # the map grows by itself (doubling) up to this, and what the disk allows
    disk_reserve: int = 1024**3       # free disk space the broker leaves to everything else (logs, transcripts)
    max_batch: int = 256              # requests folded into one group commit
    lease_ttl: float = 60.0           # default lease length, seconds (monotonic)
    max_lease_ttl: float = 3 * 3600.0
    backoff_base: float = 5.0         # world seconds; doubled per attempt
    backoff_max: float = 3600.0
    default_max_attempts: int = 3
    parked_key_window: float = 3600.0  # a key parked this recently is refused unless forced
    request_log_ttl: float = 86400.0   # how long retried request ids are remembered
    event_retention: int = 200_000     # events kept in the outbox
    history_limit: int = 50            # transitions kept per task
    # world seconds a task whose last turn has an unknown outcome waits for that account to reconcile it
    # (e.g. the account's worker is frozen); then any account may take it (0 = wait for that account forever)
    unknown_turn_hold: float = 1800.0
    # provider refusals (transient, nothing sent: overload, 5xx) that do not burn an attempt, per task
    max_refusals: int = 20
    # world seconds after which an acked DONE/CANCELLED task is compacted (payload, result and history
    # dropped, identity and key kept); 0 = keep every task whole forever. PARKED tasks are never compacted
    task_retention: float = 14 * 86400.0
    # world seconds after its last put that a module's working-data key (put with "working": true: an
    # unusable answer, a finished job's scratch; docs/storage.md) is deleted; 0 = keep it forever
    working_retention: float = 14 * 86400.0


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


@dataclass(frozen=True)
class SchedulerConfig:
    """Dynamic priority = base(kind) + module weight + min(aging_cap, aging_per_hour * hours waiting)
    + backlog boost + seed_weight * attrs.seed_priority + attrs.comment_boost; ties: oldest first."""

    base_priorities: dict = field(default_factory=lambda: dict(DEFAULT_BASE_PRIORITIES))
    default_base: int = 50
    module_weights: dict = field(default_factory=dict)    # module -> additive weight (run-time adjustable)
    aging_per_hour: float = 2.0
    aging_cap: float = 20.0
    seed_weight: float = 10.0
    # module -> [[waiting_tasks_threshold, boost], ...]: e.g. documenter +15 above 10 waiting, +30 above 20
    # module -> [[queued tasks, boost], ...]; none by default: the documenter boosts its own tasks by the
    # blessed insights waiting (its queue never holds more than a handful), see its settings
    backlog_boosts: dict = field(default_factory=dict)
    lease_ttl: float = 60.0       # what the scheduler asks workers to lease for; they renew at ttl/3
    assign_timeout: float = 10.0  # an assignment the worker neither leased nor declined is retried after this
    # world seconds a conversation turn waits while the account holding its conversation cannot run it
    # (quota window used up, cooling down, paused, offline) before another account it allows may continue
    # the conversation (services/broker/ops_handoff.py); 0 = never hand a conversation off
    conversation_handoff: float = 900.0
    # accounts kept out of deep turns while they have standard work, so that a comment or a short step
    # never waits for a deep turn to end (services/scheduler/responsive.py); 0 = every account may be in one
    responsive_accounts: int = 1


@dataclass(frozen=True)
class QuotaConfig:
    account: str
    mode: str
    windows: tuple  # of window dicts or compact strings, validated by shared.quota


BACKENDS = ("sim", "claude", "chatgpt", "gemini", "openai")
MODES = ("standard", "deep")
# the research modules, one supervisord program ``module-NAME`` each (services/__main__.py runs them), and
# ``adhoc``, the module of the operator's ``fanoctl ask``: the module names a quota reserve, a module weight,
# a backlog boost or a ``[modules.NAME]`` table may use
MODULES = ("explorer", "documenter", "researcher", "advisor")
ADHOC = "adhoc"
KNOWN_MODULES = MODULES + (ADHOC,)


def unknown_name(what: str, name, known) -> str:
    """The one wording of "no such account/module", with the known names (config, broker, scheduler, CLI)."""
    return f"unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})"


@dataclass(frozen=True)
class AccountConfig:
    """One LLM account = one backend worker program ``backend-<name>``."""

    name: str
    backend: str                      # one of BACKENDS
    modes: tuple[str, ...] = ("standard",)
    settings: dict = field(default_factory=dict)   # everything else in [accounts.NAME], backend-specific
    # world seconds a turn of this account with an unknown outcome stays bound to it for reconciling
    # (None: [broker] unknown_turn_hold; 0: forever). Read by the broker, not the worker
    unknown_turn_hold: float | None = None

    @property
    def program(self) -> str:
        return f"backend-{self.name}"


def _endpoint(env: str, run_dir: Path, socket: str) -> str:
    return os.environ.get(env) or f"ipc://{run_dir}/{socket}"


class _Sockets:
    """The programs' socket endpoints under ``run_dir`` (each overridable by its environment variable)."""

    run_dir: Path

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
    modules: dict = field(default_factory=dict)

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
    def account_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.accounts)

    def backend_names(self) -> tuple[str, ...]:
        """What a task's ``requires.backends`` may name: a configured account or a configured backend kind."""
        return tuple(dict.fromkeys([a.name for a in self.accounts] + [a.backend for a in self.accounts]))

    def lock_path(self, program: str) -> Path:
        return self.run_dir / f"{program}.lock"


def _section(data: dict, name: str, allowed: set[str], where: str) -> dict:
    sec = data.get(name, {})
    if not isinstance(sec, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    unknown = set(sec) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    return sec


def _broker(sec: dict, where: str) -> BrokerConfig:
    kw = {}
    defaults = BrokerConfig()
    for key, value in sec.items():
        if key in ("map_size", "headroom", "map_ceiling", "disk_reserve"):
            try:
                kw[key] = parse_size(value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: broker.{key}: {exc}") from None
        else:
            want = type(getattr(defaults, key))
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{where}: broker.{key} must be a number")
            kw[key] = want(value)
    cfg = BrokerConfig(**kw)
    if cfg.headroom >= cfg.map_size:
        raise ConfigError(f"{where}: broker.headroom must be smaller than broker.map_size")
    if cfg.working_retention < 0:
        raise ConfigError(f"{where}: broker.working_retention must be >= 0 seconds (0 = keep forever)")
    if cfg.map_ceiling < cfg.map_size:
        raise ConfigError(f"{where}: broker.map_ceiling ({format_size(cfg.map_ceiling)}) must not be below "
                          f"broker.map_size ({format_size(cfg.map_size)})")
    if cfg.map_ceiling > MAX_MAP_CEILING:
        raise ConfigError(f"{where}: broker.map_ceiling must be at most {format_size(MAX_MAP_CEILING)}")
    return cfg


def _scheduler(sec: dict, where: str) -> SchedulerConfig:
    defaults = SchedulerConfig()
    kw = {}
    for key, value in sec.items():
        want = type(getattr(defaults, key))
        if want is dict:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: scheduler.{key} must be a table")
            if key == "base_priorities":
                value = {**DEFAULT_BASE_PRIORITIES, **value}
            kw[key] = dict(value)
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: scheduler.{key} must be a number")
        else:
            kw[key] = want(value)
    if kw.get("responsive_accounts", 0) < 0 or kw.get("responsive_accounts", 0) != sec.get("responsive_accounts", 0):
        raise ConfigError(f"{where}: scheduler.responsive_accounts must be a whole number >= 0 (0 = off)")
    if kw.get("conversation_handoff", 0.0) < 0:
        raise ConfigError(f"{where}: scheduler.conversation_handoff must be >= 0 seconds (0 = never)")
    return SchedulerConfig(**kw)


def _quotas(data: dict, where: str) -> tuple[QuotaConfig, ...]:
    out = []
    quotas = data.get("quotas", {})
    if not isinstance(quotas, dict):
        raise ConfigError(f"{where}: [quotas] must be a table of [quotas.ACCOUNT.MODE]")
    for account, modes in quotas.items():
        if not isinstance(modes, dict):
            raise ConfigError(f"{where}: [quotas.{account}] must contain [quotas.{account}.MODE] tables")
        for mode, spec in modes.items():
            if mode not in MODES:
                # a mode no account has would never be charged: the quota would silently not apply
                raise ConfigError(f"{where}: [quotas.{account}.{mode}]: mode must be one of {', '.join(MODES)}")
            if not isinstance(spec, dict) or set(spec) - {"windows"} or "windows" not in spec:
                raise ConfigError(f"{where}: [quotas.{account}.{mode}] needs exactly one key, windows")
            windows = spec["windows"]
            if not isinstance(windows, list):
                raise ConfigError(f"{where}: quotas.{account}.{mode}.windows must be a list")
            from shared.quota import QuotaSpecError, normalize_windows
            try:
                normalized = normalize_windows(list(windows))
            except QuotaSpecError as exc:
                raise ConfigError(f"{where}: quotas.{account}.{mode}: {exc.message}") from None
            if not normalized:
                # an empty list would store a quota that admits everything: say "no quota" by leaving it out
                raise ConfigError(f"{where}: quotas.{account}.{mode}.windows is empty; remove the table for "
                                  "no limit")
            out.append(QuotaConfig(account, mode, tuple(windows)))
    return tuple(out)


# the keys of an [accounts.NAME] table that are not the backend's own settings (those go to its worker)
ACCOUNT_KEYS = ("backend", "modes", "unknown_turn_hold")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _accounts(data: dict, where: str) -> tuple[AccountConfig, ...]:
    accounts = data.get("accounts", {})
    if not isinstance(accounts, dict):
        raise ConfigError(f"{where}: [accounts] must be a table of [accounts.NAME]")
    out = []
    for name, spec in accounts.items():
        if not _ACCOUNT_NAME.match(name):
            raise ConfigError(f"{where}: account name {name!r} must match {_ACCOUNT_NAME.pattern}")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: [accounts.{name}] must be a table")
        backend = spec.get("backend")
        if backend not in BACKENDS:
            raise ConfigError(f"{where}: accounts.{name}.backend must be one of {', '.join(BACKENDS)}")
        modes = spec.get("modes", ["standard"])
        if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
            raise ConfigError(f"{where}: accounts.{name}.modes must be a non-empty list of standard/deep")
        hold = spec.get("unknown_turn_hold")
        if hold is not None and (isinstance(hold, bool) or not isinstance(hold, (int, float))
                                 or not 0 <= hold <= 10 * 366 * 86400):
            raise ConfigError(f"{where}: accounts.{name}.unknown_turn_hold must be a number of seconds in "
                              f"[0, ten years] (0 = wait for this account forever), got {hold!r}")
        settings = {k: v for k, v in spec.items() if k not in ACCOUNT_KEYS}
        out.append(AccountConfig(name, backend, tuple(modes), settings,
                                 None if hold is None else float(hold)))
    return tuple(out)


def _modules(data: dict, where: str) -> dict:
    modules = data.get("modules", {})
    if not isinstance(modules, dict) or not all(isinstance(v, dict) for v in modules.values()):
        raise ConfigError(f"{where}: [modules] must contain [modules.NAME] tables")
    for name in modules:
        if name not in MODULES:  # a misspelt table would otherwise be ignored and its module run on defaults
            raise ConfigError(f"{where}: [modules.{name}]: " + unknown_name("module", name, MODULES))
    return {name: dict(table) for name, table in modules.items()}


def _check_names(cfg: "Config", where: str) -> None:
    """Every account and module a quota, reserve, weight or boost names must exist (see
    :attr:`Config.names_checked`): a typo must not leave a real account without its limit, nor a
    reserve that no module can use eating a scarce window."""
    if not cfg.names_checked:
        return
    accounts = {a.name: a for a in cfg.accounts}
    from shared.quota import normalize_windows
    for q in cfg.quotas:
        at = f"{where}: [quotas.{q.account}.{q.mode}]"
        if q.account not in accounts:
            raise ConfigError(f"{at}: " + unknown_name("account", q.account, accounts))
        if q.mode not in accounts[q.account].modes:
            raise ConfigError(f"{at}: account {q.account} does not offer mode {q.mode} (its modes: "
                              f"{', '.join(accounts[q.account].modes)})")
        for window in normalize_windows(list(q.windows)):
            for module in window.get("reserves", {}):
                if module not in KNOWN_MODULES:
                    raise ConfigError(f"{at}: reserve for " + unknown_name("module", module, KNOWN_MODULES))
    for key in ("module_weights", "backlog_boosts"):
        for module in getattr(cfg.scheduler, key):
            if module not in KNOWN_MODULES:
                raise ConfigError(f"{where}: scheduler.{key}: " + unknown_name("module", module, KNOWN_MODULES))


def _config_path(path) -> Path:
    return Path(path or os.environ.get("FANO_CONFIG") or DEFAULT_CONFIG).resolve()


def _resolve_path(cfg_path: Path, paths: dict, key: str, default: str) -> Path:
    env = os.environ.get(f"FANO_{key.upper()}")
    return (cfg_path.parent / (env or paths.get(key, default))).resolve()


def find_endpoints(path: str | os.PathLike | None = None) -> Endpoints:
    """The sockets of the tree ``path`` configures, even when that file does not load.

    A running tree keeps working on the configuration it started with, so an edit that breaks the file
    (a typo, a half-written table) must not lock the operator out of it: when the file exists but does
    not load, its run directory comes from its ``[paths]`` table if that part still reads, else the
    default (``var/run`` beside the file), and ``problem`` says why. A missing file is still an error
    (ConfigError): that is a wrong path, not a broken configuration.
    """
    try:
        return Endpoints(load_config(path).run_dir)
    except ConfigError as exc:
        cfg_path = _config_path(path)
        if not cfg_path.is_file():
            raise
        problem = str(exc)
    paths: dict = {}
    try:
        with open(cfg_path, "rb") as f:
            table = tomllib.load(f).get("paths")
        if isinstance(table, dict):
            paths = {k: v for k, v in table.items() if isinstance(v, str)}
    except (OSError, tomllib.TOMLDecodeError):
        pass   # the file does not even parse: the default run directory
    return Endpoints(_resolve_path(cfg_path, paths, "run_dir", "var/run"), problem)


def load_config(path: str | os.PathLike | None = None) -> Config:
    cfg_path = _config_path(path)
    where = str(cfg_path)
    try:
        with open(cfg_path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {where}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = set(data) - {"paths", "broker", "quotas", "accounts", "modules", "scheduler"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s): {', '.join(sorted(unknown))}")
    paths = _section(data, "paths", {"run_dir", "data_dir", "log_dir"}, where)

    def resolve(key: str, default: str) -> Path:
        return _resolve_path(cfg_path, paths, key, default)

    broker = _broker(_section(data, "broker", set(BrokerConfig.__dataclass_fields__), where), where)
    scheduler = _scheduler(_section(data, "scheduler", set(SchedulerConfig.__dataclass_fields__), where), where)
    cfg = Config(path=cfg_path, run_dir=resolve("run_dir", "var/run"), data_dir=resolve("data_dir", "var/data"),
                 log_dir=resolve("log_dir", "var/log"), broker=broker, scheduler=scheduler, quotas=_quotas(data, where),
                 accounts=_accounts(data, where), modules=_modules(data, where))
    _check_names(cfg, where)
    return cfg
