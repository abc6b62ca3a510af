"""Unit tests for gradgen.output: atomic writes that leave unchanged files alone, and check with diffs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gradgen import output
from gradgen.output import check, write

OLD_TIME = 1_000_000_000  # 2001: far from "now", so any rewrite shows


def age(path: Path) -> None:
    os.utime(path, ns=(OLD_TIME * 10**9, OLD_TIME * 10**9))


def test_write_creates_files_and_folders(tmp_path):
    a, b = tmp_path / "gen" / "sub" / "a.py", tmp_path / "gen" / "test_a.py"
    outcomes = write([(a, "x = 1\n"), (b, "y = 'é'\n")])
    assert [(o.path, o.status) for o in outcomes] == [(a, "written"), (b, "written")]
    assert a.read_bytes() == b"x = 1\n"
    assert b.read_bytes() == "y = 'é'\n".encode()  # always UTF-8, whatever the locale


def test_write_leaves_unchanged_files_untouched(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    write([(a, "same\n"), (b, "old\n")])
    age(a)
    age(b)
    inode = a.stat().st_ino
    outcomes = write([(a, "same\n"), (b, "new\n")])
    assert [o.status for o in outcomes] == ["unchanged", "written"]
    assert a.stat().st_mtime_ns == OLD_TIME * 10**9  # not rewritten
    assert a.stat().st_ino == inode
    assert b.stat().st_mtime_ns != OLD_TIME * 10**9
    assert b.read_text() == "new\n"


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("old\n")
    inode = a.stat().st_ino
    write([(a, "new\n")])
    assert a.read_text() == "new\n"
    assert a.stat().st_ino != inode  # a new file renamed over the old one, not an in-place rewrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.py"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    a = tmp_path / "a.py"
    a.write_text("old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(output.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write([(a, "new\n")])
    assert a.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.py"]


def test_new_files_get_ordinary_permissions(tmp_path):
    a = tmp_path / "a.py"
    old = os.umask(0o022)
    try:
        write([(a, "x\n")])
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644  # not the 0600 of a bare temp file


def test_rewritten_files_keep_their_permissions(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("old\n")
    a.chmod(0o640)
    write([(a, "new\n")])
    assert stat.S_IMODE(a.stat().st_mode) == 0o640


def test_check_statuses(tmp_path):
    fresh, stale, missing = tmp_path / "fresh.py", tmp_path / "stale.py", tmp_path / "missing.py"
    fresh.write_text("a\nb\n")
    stale.write_text("a\nB\n")
    age(fresh)
    age(stale)
    outcomes = check([(fresh, "a\nb\n"), (stale, "a\nb\n"), (missing, "a\nb\n")])
    assert [(o.path, o.status) for o in outcomes] == [
        (fresh, "fresh"),
        (stale, "stale"),
        (missing, "missing"),
    ]
    assert outcomes[0].diff == ""
    # check writes nothing
    assert not missing.exists()
    assert stale.read_text() == "a\nB\n"
    assert stale.stat().st_mtime_ns == fresh.stat().st_mtime_ns == OLD_TIME * 10**9


def test_stale_diff_is_a_unified_diff_from_disk_to_expected(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("one\ntwo\nthree\n")
    (o,) = check([(p, "one\n2\nthree\n")])
    assert o.diff.splitlines() == [
        f"--- {p} (on disk)",
        f"+++ {p} (expected)",
        "@@ -1,3 +1,3 @@",
        " one",
        "-two",
        "+2",
        " three",
    ]


def test_missing_diff_adds_every_line(tmp_path):
    p = tmp_path / "m.py"
    (o,) = check([(p, "one\ntwo\n")])
    lines = o.diff.splitlines()
    assert lines[0] == "--- /dev/null" and lines[1] == f"+++ {p}"
    assert lines[3:] == ["+one", "+two"]


def test_diff_marks_a_missing_final_newline(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("one\ntwo")  # hand-edited: final newline lost
    (o,) = check([(p, "one\ntwo\n")])
    assert o.status == "stale"
    assert o.diff.endswith("\n")
    assert "-two\n\\ No newline at end of file\n+two\n" in o.diff


def test_byte_level_differences_are_stale(tmp_path):
    p = tmp_path / "m.py"
    p.write_bytes(b"one\r\ntwo\r\n")  # CRLF line endings are not what build writes
    (o,) = check([(p, "one\ntwo\n")])
    assert o.status == "stale"
    assert o.diff
    q = tmp_path / "n.py"
    q.write_bytes(b"\xff\xfe bad utf-8\n")
    (o,) = check([(q, "ok\n")])
    assert o.status == "stale" and "+ok" in o.diff
