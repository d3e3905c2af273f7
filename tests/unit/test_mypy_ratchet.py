"""The mypy ratchet (ops/mypy_ratchet.py) on a tiny package of its own: real mypy runs, a real baseline file."""
from __future__ import annotations

import json

from ops import mypy_ratchet

PYPROJECT = '[tool.mypy]\npython_version = "3.11"\nfiles = ["pkg"]\n'
ONE_ERROR = 'def f() -> int:\n    return "one"\n'
TWO_ERRORS = ONE_ERROR + 'def g() -> str:\n    return 2\n'
CLEAN = 'def f() -> int:\n    return 1\n'


def project(tmp_path, source: str):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text(source)
    return tmp_path


def run(root, *args: str) -> int:
    return mypy_ratchet.main(["--root", str(root), *args])


def test_the_baseline_is_recorded_then_a_new_error_fails_and_fewer_errors_pass_with_a_hint(tmp_path, capsys):
    root = project(tmp_path, ONE_ERROR)
    baseline = root / mypy_ratchet.BASELINE
    assert run(root, "--update") == 0
    assert json.loads(baseline.read_text()) == {"pkg/a.py": 1}
    assert run(root) == 0

    (root / "pkg" / "a.py").write_text(TWO_ERRORS)
    capsys.readouterr()
    assert run(root) == 1
    err = capsys.readouterr().err
    assert "pkg/a.py: 2 errors, baseline 1" in err and "got worse" in err
    assert run(root, "--update") == 1                     # a worse count is never recorded
    assert json.loads(baseline.read_text()) == {"pkg/a.py": 1}

    (root / "pkg" / "a.py").write_text(CLEAN)
    capsys.readouterr()
    assert run(root) == 0
    assert "--update" in capsys.readouterr().out          # the hint to lower the baseline
    assert run(root, "--update") == 0
    assert json.loads(baseline.read_text()) == {}


def test_a_new_file_with_an_error_fails_against_the_baseline(tmp_path):
    root = project(tmp_path, CLEAN)
    assert run(root, "--update") == 0
    (root / "pkg" / "b.py").write_text(ONE_ERROR)
    assert run(root) == 1


def test_mypy_that_cannot_check_is_exit_2_not_a_pass(tmp_path, capsys):
    root = project(tmp_path, "def f(:\n")                  # a syntax error stops mypy
    assert run(root) == 2
    assert "did not complete" in capsys.readouterr().err


STRICT = '[[tool.mypy.overrides]]\nmodule = ["pkg.*"]\ndisallow_untyped_defs = true\n'


def test_a_strictly_typed_package_allows_no_error_whatever_the_baseline_says(tmp_path, capsys):
    root = project(tmp_path, ONE_ERROR)
    (root / "pyproject.toml").write_text(PYPROJECT + STRICT)
    assert run(root, "--update") == 1                     # not even the first recording takes it
    assert not (root / mypy_ratchet.BASELINE).exists()
    (root / mypy_ratchet.BASELINE).write_text(json.dumps({"pkg/a.py": 1}))   # a hand-made entry is ignored
    capsys.readouterr()
    assert run(root) == 1
    assert "strictly typed" in capsys.readouterr().err
    (root / "pkg" / "a.py").write_text(CLEAN)
    assert run(root) == 0
