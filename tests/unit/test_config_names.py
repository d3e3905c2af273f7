"""Names in fano.toml: a quota, reserve, weight or module table that names an account or module the
configuration does not have is an error naming the known ones (issue 14: they were accepted silently)."""
import pytest

from shared.config import ConfigError, load_config

ACCOUNTS = """
[accounts.gemini-sim]
backend = "sim"
modes = ["standard", "deep"]

[accounts.claude-sim]
backend = "sim"
"""


def write(tmp_path, text):
    path = tmp_path / "fano.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,fragments", [
    # a quota for an account that does not exist (a typo, or an account renamed without its quotas)
    ('[quotas.gemini-sm.deep]\nwindows = ["20/day"]\n',
     ["[quotas.gemini-sm.deep]", "unknown account 'gemini-sm'", "known: claude-sim, gemini-sim"]),
    # a mode the account does not offer, and a mode nobody has: neither would ever be charged
    ('[quotas.claude-sim.deep]\nwindows = ["20/day"]\n', ["account claude-sim does not offer mode deep"]),
    ('[quotas.gemini-sim.Deep]\nwindows = ["20/day"]\n', ["mode must be one of standard, deep"]),
    # an empty list stored a quota that admits everything: the account's deep limit was gone
    ('[quotas.gemini-sim.deep]\nwindows = []\n', ["[quotas.gemini-sim.deep] windows: expected at least one window"]),
    # a reserve for a module that does not exist eats the window for nobody
    ('[quotas.gemini-sim.deep]\nwindows = ["20/day reserve explorr=10"]\n',
     ["reserve for unknown module 'explorr'", "known: adhoc, advisor, documenter, explorer, researcher"]),
    ('[scheduler]\nmodule_weights = { explorr = 5 }\n', ["[scheduler] module_weights", "unknown module 'explorr'"]),
    ('[scheduler]\nbacklog_boosts = { documentr = [[10, 5]] }\n', ["unknown module 'documentr'"]),
    ('[modules.documentr]\nevaluators = 2\n', ["[modules.documentr]", "unknown module 'documentr'"]),
])
def test_unknown_names_are_errors_with_the_known_ones(tmp_path, text, fragments):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, ACCOUNTS + text))
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


@pytest.mark.parametrize("text,key", [('[scheduler]\nmodule_weights = { explorr = 5 }\n', "module_weights"),
                                      ('[scheduler]\nbacklog_boosts = { documentr = [[10, 5]] }\n', "backlog_boosts")])
def test_an_unknown_module_in_a_scheduler_setting_has_the_settings_error_format(tmp_path, text, key):
    """The [scheduler] table is a settings table (shared/settings.py): its name check says what its own
    checks say, in the one format ``FILE: [table] key: problem``."""
    from shared.settings import SettingsError
    path = write(tmp_path, ACCOUNTS + text)
    with pytest.raises(SettingsError) as err:
        load_config(path)
    assert (err.value.where, err.value.key) == (f"{path}: [scheduler]", key)
    assert str(err.value).startswith(f"{path}: [scheduler] {key}: unknown module '"), str(err.value)


@pytest.mark.parametrize("text,head", [
    ('[quotas.gemini-sim.deep]\nwindows = []\n', "[quotas.gemini-sim.deep] windows: expected at least one window"),
    ('[quotas.gemini-sim.deep]\nwindows = "20/day"\n', "[quotas.gemini-sim.deep] windows: expected a list"),
    ('[quotas.gemini-sim.deep]\nwindows = ["x"]\n', "[quotas.gemini-sim.deep] windows: cannot parse quota window"),
    ('[quotas.gemini-sim.deep]\nwindow = ["20/day"]\n', "[quotas.gemini-sim.deep]: needs exactly one key, windows"),
    ('[quotas.gemini-sim.Deep]\nwindows = ["20/day"]\n', "[quotas.gemini-sim.Deep]: mode must be one of"),
    ('[quotas]\ngemini-sim = 3\n', "[quotas.gemini-sim]: must contain [quotas.gemini-sim.MODE] tables"),
    ('quotas = 3\n', "[quotas]: must be a table of [quotas.ACCOUNT.MODE]"),
    ('[quotas.gemini-sm.deep]\nwindows = ["20/day"]\n', "[quotas.gemini-sm.deep]: unknown account 'gemini-sm'"),
    ('[quotas.gemini-sim.deep]\nwindows = ["20/day reserve explorr=10"]\n',
     "[quotas.gemini-sim.deep] windows: reserve for unknown module 'explorr'"),
])
def test_a_quota_table_error_has_the_settings_error_format(tmp_path, text, head):
    """[quotas.ACCOUNT.MODE] errors read as every settings error does: ``FILE: [table] key: problem``, or
    ``FILE: [table]: problem`` for the table itself (shared/settings.py)."""
    # first: a top-level key after the accounts would be theirs
    assert_settings_error(tmp_path, text + ACCOUNTS, head)


@pytest.mark.parametrize("text,head", [
    ('accounts = 3\n', "[accounts]: must be a table of [accounts.NAME]"),
    ('[accounts]\nsim-b = 3\n', "[accounts.sim-b]: must be a table"),
    ('[accounts.Sim]\nbackend = "sim"\n', "[accounts.Sim]: the name must match ^[a-z0-9]"),
    ('modules = 3\n', "[modules]: must contain [modules.NAME] tables"),
    ('[modules.documentr]\nevaluators = 2\n', "[modules.documentr]: unknown module 'documentr'"),
])
def test_an_accounts_or_modules_table_error_has_the_settings_error_format(tmp_path, text, head):
    assert_settings_error(tmp_path, text, head)


def assert_settings_error(tmp_path, text, head):
    """Loading ``text`` fails with a SettingsError whose message starts ``FILE: head``."""
    from shared.settings import SettingsError
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {head}"), str(err.value)


def test_known_names_load(tmp_path):
    cfg = load_config(write(tmp_path, ACCOUNTS + '[quotas.gemini-sim.deep]\n'
                            'windows = ["20/day reserve explorer=10,adhoc=2"]\n'
                            '[scheduler]\nmodule_weights = { documenter = 20 }\n'))
    assert cfg.names_checked and cfg.account_names == ("gemini-sim", "claude-sim")
    assert cfg.backend_names() == ("gemini-sim", "claude-sim", "sim")


def test_a_config_without_accounts_is_a_bare_broker(tmp_path):
    # no backend program runs: scripts and tests lease under names of their own, so names are not checked
    cfg = load_config(write(tmp_path, '[quotas.acct.deep]\nwindows = ["20/day reserve alpha=3"]\n'))
    assert not cfg.names_checked
    # module tables are always checked: the modules are the repository's, whatever the accounts
    with pytest.raises(ConfigError, match="unknown module 'explorr'"):
        load_config(write(tmp_path, "[modules.explorr]\n"))
