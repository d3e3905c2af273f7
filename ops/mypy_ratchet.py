"""The mypy ratchet: type errors per file may only go down.

``python -m ops.mypy_ratchet`` (or ``ops/mypy-ratchet``) runs mypy with the configuration in pyproject.toml
(strict on shared/ and services/broker/, mypy's defaults elsewhere), counts the errors of each file and
compares them with the recorded baseline, ``.mypy-baseline.json`` (``{"path/to/file.py": errors}``; a file
not in it is allowed none):

- a file with more errors than its baseline fails the check (exit 1), listing its errors;
- a file with fewer prints a hint to record the progress with ``--update``;
- ``--update`` rewrites the baseline with the current counts, and refuses (exit 1) while any file is worse,
  so the baseline can only shrink (without a baseline file it records the first one);
- the strictly typed packages (the modules of pyproject.toml's ``[[tool.mypy.overrides]]`` that set
  ``disallow_untyped_defs``: shared/ and services/broker/) have no baseline: any error there fails, and
  ``--update`` never records one.

Raising a count (code merged with errors of its own) is a deliberate, reviewed edit of the JSON file, never
a command.

mypy itself failing (a crash, a syntax error that stops the run, a bad configuration) is exit 2: the count
would mean nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

BASELINE = ".mypy-baseline.json"
# "path.py:12: error: message  [code]" (columns off, the default); notes and summaries are not errors
SHOWN = 30     # error lines listed per file that got worse
ERROR_LINE = re.compile(r"^(?P<path>[^:\s][^:]*\.pyi?):\d+(?::\d+)?: error: ")


def run_mypy(root: Path, args: list[str]) -> tuple[Counter[str], dict[str, list[str]]]:
    """Run mypy in ``root``; returns errors per file and the error lines per file.

    Raises RuntimeError when mypy did not finish a check (exit status 2, or a blocking error)."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=root,
                          capture_output=True, text=True)
    counts: Counter[str] = Counter()
    lines: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = ERROR_LINE.match(line)
        if m:
            counts[m["path"]] += 1
            lines.setdefault(m["path"], []).append(line)
    blocked = "errors prevented further checking" in proc.stdout + proc.stderr
    if proc.returncode not in (0, 1) or blocked:
        raise RuntimeError(f"mypy did not complete (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return counts, lines


def strict_prefixes(root: Path) -> tuple[str, ...]:
    """Path prefixes of the modules pyproject.toml types strictly (``shared.*`` -> ``shared/``)."""
    try:
        cfg = tomllib.loads((root / "pyproject.toml").read_text())
    except FileNotFoundError:
        return ()
    out = []
    for override in cfg.get("tool", {}).get("mypy", {}).get("overrides", []):
        if not override.get("disallow_untyped_defs"):
            continue
        modules = override.get("module", [])
        for module in [modules] if isinstance(modules, str) else modules:
            out.append(module.removesuffix(".*").replace(".", "/") + ("/" if module.endswith(".*") else ".py"))
    return tuple(out)


def compare(current: Counter[str], baseline: dict[str, int]) -> tuple[dict[str, tuple[int, int]],
                                                                       dict[str, tuple[int, int]]]:
    """(worse, better): file -> (baseline, current) for every file whose count went up, resp. down."""
    worse, better = {}, {}
    for path in sorted(set(current) | set(baseline)):
        was, now = baseline.get(path, 0), current.get(path, 0)
        if now > was:
            worse[path] = (was, now)
        elif now < was:
            better[path] = (was, now)
    return worse, better


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the project directory (its pyproject.toml configures mypy)")
    ap.add_argument("--baseline", type=Path, default=None, help=f"default: ROOT/{BASELINE}")
    ap.add_argument("--update", action="store_true", help="record the current counts (only when none got worse)")
    ap.add_argument("mypy_args", nargs="*", help="extra mypy arguments (after --)")
    ns = ap.parse_args(argv)
    path = ns.baseline or ns.root / BASELINE
    baseline: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    try:
        current, lines = run_mypy(ns.root, ns.mypy_args)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    strict = strict_prefixes(ns.root)
    baseline = {f: n for f, n in baseline.items() if not f.startswith(strict)} if strict else baseline
    worse, better = compare(current, baseline)
    total = sum(current.values())
    if ns.update and not path.exists():     # the first recording: nothing to compare with
        worse = {f: c for f, c in worse.items() if f.startswith(strict)}
    for f, (was, now) in worse.items():
        limit = "strictly typed: none allowed" if f.startswith(strict) else f"baseline {was}"
        print(f"mypy: {f}: {now} errors, {limit}", file=sys.stderr)
        for line in lines.get(f, [])[:SHOWN]:
            print(f"  {line}", file=sys.stderr)
    if worse:
        print(f"mypy ratchet: {len(worse)} file(s) got worse than {path.name} (fix them; the baseline only shrinks)",
              file=sys.stderr)
        return 1
    if ns.update:
        path.write_text(json.dumps(dict(sorted((f, n) for f, n in current.items() if n)), indent=1) + "\n")
        print(f"mypy ratchet: {path.name} recorded ({total} errors in {len(current)} files)")
        return 0
    if better:
        fixed = sum(was - now for was, now in better.values())
        print(f"mypy ratchet: {fixed} fewer errors in {len(better)} file(s) than {path.name}; record it with "
              f"ops/mypy-ratchet --update")
    print(f"mypy ratchet: ok ({total} errors in {len(current)} files, none above the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
