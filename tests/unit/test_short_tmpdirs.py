"""Short temporary directories (tests/support.py ``short_tmpdir``) do not outlive the test session."""
import subprocess
import sys
import textwrap
from pathlib import Path

from shared.config import REPO_ROOT


def test_every_short_tmpdir_is_removed_when_the_session_ends():
    # in a process of its own: in this one, removing them would pull directories from under other tests
    script = textwrap.dedent("""
        from tests.support import remove_short_tmpdirs, short_tmpdir
        made = [short_tmpdir("zz") for _ in range(3)]
        (made[0] / "run").mkdir()
        (made[0] / "run" / "broker.sock").write_text("")
        print(*made)
        print(remove_short_tmpdirs())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    made, removed = out.stdout.splitlines()
    paths = [Path(p) for p in made.split()]
    assert len(paths) == 3 and all(str(p).startswith("/tmp/zz") and len(str(p)) < 20 for p in paths)
    assert removed == "3"
    assert not any(p.exists() for p in paths)


def test_a_pytest_session_leaves_none_behind():
    def made() -> set[Path]:
        return set(Path("/tmp").glob("ev*"))   # tests/unit/test_events.py's sockets live in /tmp/ev…

    before = made()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_events.py"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
    assert made() <= before
