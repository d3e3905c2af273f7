"""The Markdown export: rendering, and the atomic write (the file is always the old or the new document)."""
import os
import threading

import pytest

from services.modules.documenter import export


def doc(n: int) -> str:
    secs = [{"id": f"s{i:04d}", "title": f"Section {i}", "text": f"Body {i}. " * (i * 50 + n % 7),
             "establishes": [f"c{i}"], "requires": [], "status": "provisional"} for i in range(1, n % 5 + 2)]
    return export.render(secs, n)


def test_render_names_the_version_and_the_sections(tmp_path):
    text = export.render([{"id": "s0001", "title": "Points", "text": "Seven.", "establishes": ["point"],
                           "requires": ["set"], "status": "stable"}], 4, at="2024-01-01")
    assert text.startswith("<!-- fano document version 4, exported 2024-01-01 -->\n")
    assert "## Points\n<!-- section s0001 · establishes: point · requires: set -->\n\nSeven.\n" in text
    assert "Nothing has been written yet" in export.render([], 0)
    path = export.write_atomic(tmp_path / "d.md", text)
    assert export.exported_version(path) == 4
    assert export.exported_version(tmp_path / "missing.md") is None
    (tmp_path / "other.md").write_text("# someone else's file\n")
    assert export.exported_version(tmp_path / "other.md") is None


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "document.md"
    export.write_atomic(path, doc(1))

    def crash(*_):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        export.write_atomic(path, doc(2))
    assert path.read_text() == doc(1)
    assert [p.name for p in tmp_path.iterdir()] == ["document.md"]


def test_a_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "document.md"
    export.write_atomic(path, doc(1))
    real_fsync = os.fsync

    def die(fd):
        raise KeyboardInterrupt   # anything, even a BaseException, in the middle of the write
    monkeypatch.setattr(os, "fsync", die)
    with pytest.raises(KeyboardInterrupt):
        export.write_atomic(path, doc(3))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_text() == doc(1) and len(list(tmp_path.iterdir())) == 1


def test_a_reader_only_ever_sees_complete_documents(tmp_path):
    path = tmp_path / "document.md"
    versions = {doc(n) for n in range(60)}
    export.write_atomic(path, doc(0))
    seen, bad, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            text = path.read_text()
            (seen.add if text in versions else bad.append)(text)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for n in range(1, 60):
            export.write_atomic(path, doc(n))
    finally:
        stop.set()
        t.join()
    assert bad == [] and len(seen) > 1
    assert path.read_text() == doc(59)
