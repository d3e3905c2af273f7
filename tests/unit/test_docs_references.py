"""Every reference to the project's contract points at a section that exists.

Code, configuration, scripts and docs cite the contract as ``docs/<page>.md § <Heading>``: the page's
path from the repository root, a space, ``§``, a space, and a heading of that page written exactly as it
is, ended by punctuation (``) . , ; : " ' ` * ]``), by `` (`` or by the end of the line. A citation is never wrapped
across lines. This test reads every such citation in the repository's source, configuration, scripts,
templates, static files and Markdown (the CI script and the pre-commit configuration too) and checks that
the page and the heading exist; a page citing one of its own sections (``(§ Keys)``) names a heading of
that page; a section sign after a source file (``shared/protocol.py § Events``) is refused, since only
the docs have sections to cite. It also checks that nothing still cites the notes the contract was first
written from, which are not part of the repository.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SUFFIXES = {".py", ".md", ".toml", ".conf", ".sh", ".cfg", ".ini", ".html", ".js", ".css", ".yaml", ".yml", ".json"}
# run-time data, caches and build output, and every hidden folder (.git, .venv, ...) but the CI's
SKIP_DIRS = {"var", "__pycache__", "node_modules", "build", "dist"}
HIDDEN_SCANNED = {".ci"}

CITATION = re.compile(r"docs/([\w-]+\.md) §")
# a page's citation of its own section: a section sign and a space not after a page name ("(§ Keys)")
OWN_SECTION = re.compile(r"(?<!\.md )§ ")
# a section sign after a source or configuration file: those have no sections (RFC 9110 §10.2.3 is fine)
FILE_SECTION = re.compile(r"[\w/-]+\.(?!md\b)[a-z]+`* §")
TERMINATORS = set(").,;:\"'`*]")
# the design notes outside the repository, spelled in two parts so that this file does not cite them, and
# the research notes on the providers (a "notes" path or word followed by a section sign)
OLD_NOTES = ("DESI" + "GN", "DOMA" + "IN")
OLD_ALTERNATIVES = "|".join(OLD_NOTES)
OLD_REFERENCE = re.compile(rf"\b(?:{OLD_ALTERNATIVES})(?:\.md\b|'s\b|\s*§)|\bnotes(?:/[\w-]+\.md)?`*\s*§")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def scanned_files() -> list[Path]:
    """The repository's source, configuration, script and Markdown files (ops/ scripts have no suffix)."""
    out = []
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO)
        if any((part.startswith(".") and part not in HIDDEN_SCANNED) or part in SKIP_DIRS
               or part.endswith(".egg-info") for part in rel.parts[:-1]) or not path.is_file():
            continue
        scripts = rel.parts[0] in ("ops", ".ci") and len(rel.parts) == 2 and not path.suffix
        if path.suffix in SUFFIXES or scripts:
            out.append(path)
    return out


def headings(text: str) -> list[str]:
    """The Markdown headings of a page, outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.append(m.group(1))
    return out


def cited_heading(rest: str, known: list[str]) -> str | None:
    """The heading a citation names: the longest known heading that ``rest`` (the text after ``§ ``) starts
    with and that is followed by a terminator, `` (`` or the end of the line; None if there is none."""
    for heading in sorted(known, key=len, reverse=True):
        if rest.startswith(heading):
            after = rest[len(heading):]
            if not after or after[0] in TERMINATORS or after.startswith(" ("):
                return heading
    return None


def check_line(line: str, pages: dict[str, list[str]]) -> list[str]:
    """The problems of every citation on one line (empty when all are right)."""
    problems = []
    for m in CITATION.finditer(line):
        page, rest = m.group(1), line[m.end():]
        if page not in pages:
            problems.append(f"docs/{page} does not exist")
        elif not rest.startswith(" ") or cited_heading(rest[1:], pages[page]) is None:
            problems.append(f"docs/{page} has no heading {rest.strip()[:60]!r} (headings: {pages[page]})")
    for m in re.finditer(r"(?<![\w/])([\w-]+\.md) §", line):
        if m.group(1) in pages:
            problems.append(f"cite {m.group(1)} as docs/{m.group(1)} § <Heading>")
    for m in FILE_SECTION.finditer(line):
        problems.append(f"{m.group(0)!r}: a source file has no sections; cite docs/<page>.md § <Heading>")
    return problems


def check_own_sections(line: str, own: list[str]) -> list[str]:
    """The problems of a docs page's citations of its own sections on one line (``own``: its headings)."""
    return [f"no heading {line[m.end():].strip()[:60]!r} on this page (headings: {own}; a section of another "
            f"page is cited in full, docs/<page>.md § <Heading>, also after another citation of that page)"
            for m in OWN_SECTION.finditer(line) if cited_heading(line[m.end():], own) is None]


@pytest.fixture(scope="module")
def pages() -> dict[str, list[str]]:
    return {p.name: headings(p.read_text()) for p in sorted(DOCS.glob("*.md"))}


def test_citations_name_existing_pages_and_headings(pages):
    problems, count = [], 0
    for path in scanned_files():
        if path == Path(__file__).resolve():
            continue   # the checker's own examples below, good and bad
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            count += len(CITATION.findall(line))
            problems += [f"{path.relative_to(REPO)}:{n}: {p}" for p in check_line(line, pages)]
    assert problems == []
    assert count >= 40, f"only {count} citations found: is the scan reading the repository?"


def test_every_docs_page_named_exists(pages):
    """A mention of a page without a section (``see docs/security.md``) names one that exists too."""
    mention = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)\b")
    missing = [f"{path.relative_to(REPO)}:{n}: docs/{m.group(1)}"
               for path in scanned_files() if path != Path(__file__).resolve()
               for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
               for m in mention.finditer(line) if m.group(1) not in pages]
    assert missing == []


def test_the_scan_reads_templates_static_files_and_the_ci_script():
    scanned = {path.relative_to(REPO).as_posix() for path in scanned_files()}
    assert {".ci/run", ".pre-commit-config.yaml", "services/web/static/document.js", "ops/check"} <= scanned
    assert any(name.endswith(".html") for name in scanned)
    assert not any(name.startswith((".git/", ".venv/")) for name in scanned)


def test_a_page_citing_its_own_sections_names_its_headings(pages):
    problems, count = [], 0
    for name, own in pages.items():
        for n, line in enumerate((DOCS / name).read_text().splitlines(), 1):
            count += len(OWN_SECTION.findall(line))
            problems += [f"docs/{name}:{n}: {p}" for p in check_own_sections(line, own)]
    assert problems == []
    assert count >= 5, f"only {count} own-section citations found: is the pattern right?"


def test_nothing_cites_the_notes_outside_the_repository():
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in scanned_files()
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if OLD_REFERENCE.search(line)]
    assert found == []


def test_the_readme_citing_its_own_sections_names_its_headings():
    """The README's ``(§ Heading)`` citations of its own sections, read as a docs page's are."""
    text = (REPO / "README.md").read_text()
    own = headings(text)
    problems, count = [], 0
    for n, line in enumerate(text.splitlines(), 1):
        count += len(OWN_SECTION.findall(line))
        problems += [f"README.md:{n}: {p}" for p in check_own_sections(line, own)]
    assert problems == []
    assert count >= 2, f"only {count} own-section citations found in the README: is the pattern right?"


def test_headings_are_unique_within_a_page(pages):
    assert {name: sorted({h for h in hs if hs.count(h) > 1}) for name, hs in pages.items()
            if len(set(hs)) != len(hs)} == {}


def test_the_contract_pages_exist(pages):
    assert {"architecture.md", "wire.md", "tasks.md", "scheduling.md", "modules.md", "research.md",
            "providers.md", "storage.md", "cli.md"} <= set(pages)


# --- the checker itself -----------------------------------------------------------------------------------

PAGES = {"tasks.md": ["Tasks", "Leases", "Leases and epochs", "Quotas"]}


@pytest.mark.parametrize("line", [
    "see docs/tasks.md § Leases and epochs.",
    "(docs/tasks.md § Leases; docs/tasks.md § Quotas)",
    "# turn intents: docs/tasks.md § Leases",
    '"""The lease (docs/tasks.md § Quotas)."""',
    "the base priorities of docs/tasks.md § Quotas (review 55, ...)",
])
def test_checker_accepts_good_citations(line):
    assert check_line(line, PAGES) == []


@pytest.mark.parametrize("line", [
    "docs/tasks.md § Lease, and more",            # no such heading
    "docs/tasks.md § Leases and more",            # a heading followed by a word: the heading is longer
    "docs/tasks.md § Quotas(per window)",         # a parenthesis without the space: not the heading
    "docs/tasks.md §",                            # wrapped: the heading is on the next line
    "docs/tasks.md §Leases",                      # no space
    "docs/nosuch.md § Leases",                    # no such page
    "see tasks.md § Leases",                      # without the docs/ folder
    "(shared/protocol.py § Events)",              # a source file has no sections
    "see ``services/broker/ops_kv.py`` § Ops",    # ... quoted or not
])
def test_checker_refuses_bad_citations(line):
    assert check_line(line, PAGES) != []


@pytest.mark.parametrize("line, good", [
    ("a revoked lease (no backoff: § Leases)", True), ("operator get in (§ Quotas).", True),
    ("see docs/tasks.md § Leases and epochs", True),   # another page's form: checked by check_line
    ("Retry-After (RFC 9110 §10.2.3)", True),         # no space: not a heading citation
    ("(§ Lease)", False), ("see § Quotas per window", False),
])
def test_checker_of_own_sections(line, good):
    assert (check_own_sections(line, PAGES["tasks.md"]) == []) is good


@pytest.mark.parametrize("line, old", [
    (OLD_NOTES[0] + ".md §9", True), ("(" + OLD_NOTES[1] + ".md, Review panel)", True),
    ("the " + OLD_NOTES[1] + "'s table", True), (OLD_NOTES[0] + " §3.2", True),
    ("INSIGHT:, " + OLD_NOTES[1] + "S:, SCORES:", False), ("a DESIGNER", False),
    ("completion gate (notes " + "§1.1)", True), ("(``shared/notes/llm-backends.md`` " + "§2)", True),
    ("Layers (notes/llm-backends.md " + "§1.8):", True), ("keys = notes/01", False),
])
def test_old_reference_pattern(line, old):
    assert bool(OLD_REFERENCE.search(line)) is old


# --- the README's own sections ----------------------------------------------------------------------------

# README "Tests", (README, "Tests"), the README's "Web panel" section, README (*Stable JSON shapes*), ...
README_CITATION = re.compile(r"README(?:'s)?,? *(?:section *)?\(?[\"*]([^\"*]{2,60})[\"*]")


def readme_sections(text: str) -> list[str]:
    """What a README citation may name: a heading, or the lead-in of a paragraph or item set in bold
    (``**Following capacity.**``, ``- **A hung worker frees its task ...**``)."""
    bold = re.findall(r"^\s*(?:[-*] )?\*\*([^*]+)\*\*", text, flags=re.M)
    return headings(text) + bold


def readme_problems(line: str, sections: list[str]) -> list[str]:
    """The problems of every README citation on one line: the name must start a heading or a bold lead-in
    (ignoring case and the backquotes of a heading)."""
    known = [s.replace("`", "").lower() for s in sections]
    return [f"the README has no section {m.group(1)!r}" for m in README_CITATION.finditer(line)
            if not any(s.startswith(m.group(1).lower()) for s in known)]


def test_citations_of_the_readme_name_its_sections():
    sections = readme_sections((REPO / "README.md").read_text())
    problems, count = [], 0
    for path in scanned_files():
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            count += len(README_CITATION.findall(line))
            problems += [f"{path.relative_to(REPO)}:{n}: {p}" for p in readme_problems(line, sections)]
    assert problems == []
    assert count >= 10, f"only {count} README citations found: is the pattern right?"


@pytest.mark.parametrize("line, good", [
    ('see README "Tests".', True), ('(README, "Utilization")', True), ("README (*Stable JSON shapes*)", True),
    ('README "A hung worker"', True), ('the README\'s "Web panel" section', True),
    ('README "Testing"', False), ('(README, "Nothing like it")', False),
])
def test_checker_of_readme_citations(line, good):
    sections = ["Tests", "Utilization of heterogeneous accounts", "Stable JSON shapes", "Web panel",
                "A hung worker frees its task within seconds."]
    assert (readme_problems(line, sections) == []) is good
