"""The CLI's structure (issue 12): an import graph without cycles, one place that registers commands,
every module importable on its own, and a ``--help`` for every command.

cli/app.py is the bottom of the graph (the root group and the helpers), each command module imports
it and no other command module, and cli/fanoctl.py registers them all in its ``COMMANDS`` list;
nothing imports cli/fanoctl.py back except cli/__main__.py (``python -m cli``).
"""
import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "cli"
MODULES = sorted(p.stem for p in CLI.glob("*.py") if p.stem != "__init__")


def _cli_imports(path: Path) -> set[str]:
    """The cli modules ``path`` imports, at the top or inside a function (a deferred import is still an
    edge: a cycle through one only moves the failure to run time)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "cli":
                found |= {a.name for a in node.names}
            elif node.module.startswith("cli."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cli.")}
    return found & set(MODULES)


def _graph() -> dict[str, set[str]]:
    return {m: _cli_imports(CLI / f"{m}.py") for m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None when it is acyclic."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    # the check below can fail: a graph with the cycle fanoctl had (fanoctl -> work -> fanoctl)
    assert _cycle({"fanoctl": {"work"}, "work": {"fanoctl", "render"}, "render": set()}) == [
        "fanoctl", "work", "fanoctl"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_cli_import_graph_is_acyclic():
    assert _cycle(_graph()) is None


def test_only_the_entry_points_import_the_assembly():
    importers = {m for m, deps in _graph().items() if "fanoctl" in deps}
    assert importers <= {"__main__"}


def _defines_commands(module: str) -> bool:
    tree = ast.parse((CLI / f"{module}.py").read_text())
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr in ("command", "group")
               for node in tree.body if isinstance(node, ast.FunctionDef) for d in node.decorator_list)


def test_command_modules_import_no_other_command_module():
    graph = _graph()
    commands = {m for m in MODULES if _defines_commands(m)} - {"app"}   # app: the root group itself
    assert {"queue", "work", "backends", "research_explorer", "health"} <= commands
    # backends_setup holds two commands of the backends group, which adds them: part of that group
    allowed = {"backends": {"backends_setup"}}
    offenders = {m: sorted(graph[m] & commands - allowed.get(m, set())) for m in commands}
    assert {m: deps for m, deps in offenders.items() if deps} == {}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    # a cycle that only shows with one import order (e.g. importing cli.work before cli.fanoctl)
    # breaks here; the assembly stays out of every module but the entry point
    code = (f"import sys, cli.{module}\n"
            "print('cli.fanoctl' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(module in ("fanoctl", "__main__"))


def test_every_command_is_registered_once_from_the_one_list():
    from cli import fanoctl
    from cli.app import main
    names = [c.name for c in fanoctl.COMMANDS]
    assert len(names) == len(set(names))
    assert sorted(main.commands) == sorted(names)


def _paths(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _paths(cmd, prefix + (name,))


def test_every_command_has_help():
    from cli.fanoctl import main
    paths = [(), *_paths(main)]
    assert len(paths) > 60   # the whole tree was walked, not just the top level
    for path in paths:
        res = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)
        assert res.exit_code == 0, (path, res.output)
        assert res.output.startswith("Usage: "), path
        doc = res.output.split("\n\n")[1].strip()
        assert doc and not doc.startswith("Options"), (path, res.output)


@pytest.mark.parametrize("argv", [["-m", "cli"], ["-m", "cli.fanoctl"]])
def test_python_dash_m_lists_every_command(argv):
    from cli.fanoctl import COMMANDS
    res = subprocess.run([sys.executable, *argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: fanoctl ")
    listed = {line.split()[0] for line in res.stdout.split("Commands:\n")[1].splitlines() if line.strip()}
    assert listed == {c.name for c in COMMANDS}


def test_only_the_entry_points_run_as_scripts():
    # a command module run as a script (`python -m cli.research_explorer`) would be a second fanoctl that
    # has to import the assembly back: `python -m cli` (or `-m cli.fanoctl`) is the way
    scripts = {m for m in MODULES if '__name__ == "__main__"' in (CLI / f"{m}.py").read_text()}
    assert scripts <= {"fanoctl", "__main__"}
