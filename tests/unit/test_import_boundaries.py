"""docs/architecture.md § Invariants: only backend processes import provider SDKs or Playwright; and the
layering: the CLI is a client of the services, never a library of theirs."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {"anthropic", "playwright", "openai", "httpx", "httpx2"}
BACKENDS = REPO / "services" / "backends"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["shared", "cli", "services/broker", "services/scheduler", "services/modules"])
def test_no_provider_sdk_outside_the_backends(package):
    offenders = {str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN)
                 for p in (REPO / package).rglob("*.py") if _imports(p) & FORBIDDEN}
    assert offenders == {}


def test_modules_and_shared_do_not_import_backends():
    for package in ("shared", "services/modules", "services/scheduler", "services/broker"):
        for path in (REPO / package).rglob("*.py"):
            text_imports = {n for n in _full_imports(path) if n.startswith("services.backends")}
            assert not text_imports, f"{path.relative_to(REPO)} imports {text_imports}"


def test_services_and_shared_do_not_import_the_cli():
    """What a service and ``fanoctl`` both need (wording of times, the health report) lives in shared/ or
    services/; a service importing cli/ would pull click and the command graph into every process."""
    offenders = {}
    for package in ("shared", "services"):
        for path in (REPO / package).rglob("*.py"):
            bad = sorted(n for n in _full_imports(path) if n == "cli" or n.startswith("cli."))
            if bad:
                offenders[str(path.relative_to(REPO))] = bad
    assert offenders == {}


def _full_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_importing_every_non_backend_package_loads_no_provider_sdk():
    code = ("import sys, pkgutil, importlib\n"
            "import shared, cli, services.broker, services.scheduler, services.modules\n"
            "for pkg in (shared, cli, services.broker, services.scheduler, services.modules):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
