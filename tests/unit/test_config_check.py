"""ops.config_check: the whole configuration as the programs read it, before ops/up touches the tree
(issue 14: a bad time zone left a program FATAL while ops/up said "Fano is up"; a bad `evaluators` failed
only after half the tree had restarted)."""
import pytest

from ops import config_check
from shared.config import MODULES, load_config
from shared.errors import ExitCode

ACCOUNT = """
[accounts.gemini-sim]
backend = "sim"
modes = ["standard", "deep"]
"""


def check(tmp_path, text):
    path = tmp_path / "fano.toml"
    path.write_text(text)
    return config_check.problems(load_config(path))


def test_the_repository_config_passes(capsys):
    assert config_check.main([]) == ExitCode.OK
    assert capsys.readouterr().out.startswith("configuration OK (")


def test_every_module_has_its_settings_checked_and_runs_as_a_program():
    from ops.supervisor_conf import static_programs
    from services.__main__ import PROGRAMS
    assert set(config_check.SETTINGS) == set(MODULES)
    assert set(MODULES) <= set(PROGRAMS)
    assert {f"module-{m}" for m in MODULES} <= set(static_programs())


@pytest.mark.parametrize("extra,fragment", [
    # an account's own settings, with its worker's validator: a provider-side limit in a zone that does not exist
    ('rate_limits = { deep = ["20/day@00:00 Mars/Olympus"] }\n',
     "[accounts.gemini-sim] rate_limits.deep: unknown time zone 'Mars/Olympus'"),
    ('latency = { standard = 2.0 }\nlatncy = 3\n', "[accounts.gemini-sim]: unknown key(s) latncy (known: "),
    # a module's settings, with the module's own loader
    ("[modules.documenter]\nevaluators = 5\n", "[modules.documenter] evaluators: expected an integer in [2, 3], got 5"),
    ("[modules.explorer]\nturns = 'many'\n", "[modules.explorer]"),
    # accounts and modules named in module settings
    ('[modules.documenter]\npanel_accounts = ["gemini-sm"]\n',
     "[modules.documenter] panel_accounts: unknown account 'gemini-sm' (known: gemini-sim)"),
    ('[modules.advisor]\nbackends = ["claude"]\n',
     "[modules.advisor] backends: unknown account or backend 'claude' (known: gemini-sim, sim)"),
    ('[modules.advisor]\nmodules = ["explorer", "explorr"]\n', "[modules.advisor] modules: unknown module 'explorr'"),
])
def test_problems_are_found_with_their_reason(tmp_path, extra, fragment):
    found = check(tmp_path, ACCOUNT + extra)
    assert len(found) == 1 and fragment in found[0], found
    assert found[0].startswith(str(tmp_path / "fano.toml"))


def test_a_key_file_the_worker_could_not_read_is_a_problem(tmp_path):
    claude = '[accounts.c]\nbackend = "claude"\n'
    missing = tmp_path / "nope.key"
    (found,) = check(tmp_path, claude + f'api_key_file = "{missing}"\n')
    assert f"[accounts.c] api_key_file: cannot read {missing}" in found
    key = tmp_path / "c.key"
    key.write_text("sk-test-not-shown\n")
    assert check(tmp_path, claude + f'api_key_file = "{key}"\n') == []
    # a key from a variable is the worker's business: its environment is supervisord's
    assert check(tmp_path, claude + 'api_key_env = "FANO_TEST_UNSET_KEY"\n') == []


def test_main_prints_every_problem_and_exits_with_the_config_code(tmp_path, capsys):
    path = tmp_path / "fano.toml"
    path.write_text(ACCOUNT + 'rate_limits = { deep = ["1/day@00:00 Nowhere/City"] }\n'
                    "[modules.documenter]\nevaluators = 9\n")
    assert config_check.main(["--config", str(path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("configuration error: ") for line in err)
    path.write_text("[brokr]\n")
    assert config_check.main(["--config", str(path)]) == ExitCode.CONFIG
    assert "unknown section(s): brokr" in capsys.readouterr().err


def test_the_broker_restarts_when_the_accounts_change_not_when_one_account_does(tmp_path):
    """ops/up restarts the static programs when the shared digest changes: the broker refuses names its
    configuration does not have, so it must learn an added or removed account (or a new backend kind)."""
    from ops.supervisor_conf import shared_digest
    path = tmp_path / "fano.toml"

    def digest(text):
        path.write_text(text)
        return shared_digest(path)
    base = digest(ACCOUNT)
    assert digest(ACCOUNT + "seed = 7\n") == base                         # its worker alone reads that
    assert digest(ACCOUNT + '[accounts.b]\nbackend = "sim"\n') != base    # added
    assert digest(ACCOUNT.replace('"sim"', '"openai"')) != base           # another backend kind
    assert digest("") != base                                             # removed
    assert digest(ACCOUNT + "unknown_turn_hold = 60\n") != base           # the broker applies the hold
