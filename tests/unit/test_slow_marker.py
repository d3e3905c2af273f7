"""The ``slow`` marker (tests/conftest.py): ``-m "not slow"`` leaves out the process tiers and keeps the
fast unit tests; a unit test marked slow by hand is left out too."""
import subprocess
import sys

import pytest

from tests.support import REPO

FILES = ["tests/integration/test_broker_smoke.py", "tests/soak/test_soak.py", "tests/unit/test_states.py",
         "tests/unit/test_slow_marker.py"]


def collected(marker: str) -> set[str]:
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", marker, *FILES], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return {line.split("::")[0] for line in res.stdout.splitlines() if "::" in line}


@pytest.mark.slow   # two pytest collections in subprocesses: itself one of the hand-marked unit tests
def test_not_slow_keeps_only_the_fast_tests():
    assert collected("not slow") == {"tests/unit/test_states.py"}
    assert collected("slow") == {"tests/integration/test_broker_smoke.py", "tests/soak/test_soak.py",
                                 "tests/unit/test_slow_marker.py"}

