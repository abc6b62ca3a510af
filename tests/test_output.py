"""Unit tests for gradgen.output: atomic writes that leave unchanged files alone, and check with diffs."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
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
    with pytest.raises(output.OutputError, match="disk full"):
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


# -- one transaction for all the files of a run ------------------------------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_on_call(monkeypatch, name: str, k: int):
    """Make output.os.<name> raise ENOSPC on its k-th call (1-based); the calls go through."""
    real = getattr(os, name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == k:
            enospc()
        return real(*args, **kwargs)

    monkeypatch.setattr(output.os, name, flaky)
    return calls


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def five(tmp_path):
    """Five files of which three exist (a, b, c) and two are new (d, e)."""
    for name in "abc":
        (tmp_path / f"{name}.py").write_text(f"old {name}\n")
    return tmp_path, [(tmp_path / f"{n}.py", f"new {n}\n") for n in "abcde"]


def test_a_replace_failing_midway_restores_every_old_file(five, monkeypatch):
    folder, files = five
    before = snapshot(folder)
    inodes = {p.name: p.stat().st_ino for p in folder.iterdir()}
    calls = fail_on_call(monkeypatch, "replace", 3)  # a and b are replaced, c fails
    with pytest.raises(output.OutputError) as info:
        write(files)
    assert (
        str(info.value) == f"could not write {folder / 'c.py'}: No space left on device (no file was changed)"
    )
    assert [Path(dst).name for _, dst in calls[:3]] == ["a.py", "b.py", "c.py"]
    assert snapshot(folder) == before  # the old contents, and no temp or backup left
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == inodes  # the very same files


def test_a_replace_failing_on_a_new_file_removes_the_new_files_written(five, monkeypatch):
    folder, files = five
    before = snapshot(folder)
    fail_on_call(monkeypatch, "replace", 5)  # a, b, c, d replaced or created, e fails
    with pytest.raises(output.OutputError, match=r"e\.py: No space left on device"):
        write(files)
    assert snapshot(folder) == before


@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_full_disk_while_staging_changes_nothing(five, monkeypatch, k):
    folder, files = five
    before = snapshot(folder)
    fail_on_call(monkeypatch, "fsync", k)
    with pytest.raises(output.OutputError, match="No space left on device"):
        write(files)
    assert snapshot(folder) == before


def test_a_failed_restore_is_reported(five, monkeypatch):
    folder, files = five
    real = os.replace
    failed = []

    def replace(src, dst):
        if Path(dst).name == "c.py":  # committing c fails ...
            failed.append(dst)
            enospc()
        if failed and Path(dst).name == "a.py":  # ... and so does putting a back
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)
    with pytest.raises(output.OutputError) as info:
        write(files)
    message = str(info.value)
    assert message.startswith(f"could not write {folder / 'c.py'}: No space left on device; ")
    assert message.endswith(f"and could not restore {folder / 'a.py'}: Input/output error")
    assert (folder / "b.py").read_text() == "old b\n"  # restored
    assert (folder / "a.py").read_text() == "new a\n"  # the one that could not be


def test_backups_are_copies_where_hard_links_are_refused(five, monkeypatch):
    folder, files = five
    before = snapshot(folder)

    def no_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(output.os, "link", no_links)
    fail_on_call(monkeypatch, "replace", 3)
    with pytest.raises(output.OutputError):
        write(files)
    assert snapshot(folder) == before
    monkeypatch.undo()
    monkeypatch.setattr(output.os, "link", no_links)
    write(files)
    assert snapshot(folder) == {f"{n}.py": f"new {n}\n".encode() for n in "abcde"}


def test_removals_are_part_of_the_transaction(tmp_path, monkeypatch):
    keep, gone = tmp_path / "keep.py", tmp_path / "gone.py"
    keep.write_text("old\n")
    gone.write_text("orphan\n")
    fail_on_call(monkeypatch, "replace", 1)
    with pytest.raises(output.OutputError):
        write([(keep, "new\n")], remove=[gone])
    assert snapshot(tmp_path) == {"gone.py": b"orphan\n", "keep.py": b"old\n"}
    monkeypatch.undo()

    def no_unlink(path, *args, **kwargs):
        if Path(path).name == "gone.py":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return os.remove(path)

    monkeypatch.setattr(output.os, "unlink", no_unlink)
    with pytest.raises(output.OutputError, match=r"could not remove .*gone\.py: Permission denied"):
        write([(keep, "new\n")], remove=[gone])
    assert snapshot(tmp_path) == {"gone.py": b"orphan\n", "keep.py": b"old\n"}
    monkeypatch.undo()
    outcomes = write([(keep, "new\n")], remove=[gone])
    assert [(o.path.name, o.status) for o in outcomes] == [("keep.py", "written"), ("gone.py", "removed")]
    assert snapshot(tmp_path) == {"keep.py": b"new\n"}


def test_temps_of_an_interrupted_build_are_cleaned_and_only_they(tmp_path):
    leftovers = [".a.py.k2j3h4g5.tmp", ".test_a.py.abcd_123.tmp"]
    kept = [".a.py.tmp", "notes.tmp", ".a.py.toolongname.tmp", ".a.txt.k2j3h4g5.tmp", "hand.py"]
    for name in leftovers + kept:
        (tmp_path / name).write_text("x\n")
    (tmp_path / ".b.py.zzzzzzzz.tmp").mkdir()  # a folder, whatever its name, is not ours
    outcomes = write([(tmp_path / "a.py", "new\n")])
    assert [(o.path.name, o.status) for o in outcomes] == [
        (".a.py.k2j3h4g5.tmp", "cleaned"),
        (".test_a.py.abcd_123.tmp", "cleaned"),
        ("a.py", "written"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["a.py", ".b.py.zzzzzzzz.tmp"])
    # also when nothing else changes
    (tmp_path / ".a.py.99999999.tmp").write_text("x\n")
    outcomes = write([(tmp_path / "a.py", "new\n")])
    assert [o.status for o in outcomes] == ["cleaned", "unchanged"]


def test_an_interrupted_build_puts_the_old_files_back(five, monkeypatch):
    folder, files = five
    before = snapshot(folder)
    real = os.replace

    def interrupted(src, dst):
        if Path(dst).name == "c.py":
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(files)
    assert snapshot(folder) == before


KILLED = """
import os, sys
from pathlib import Path
from gradgen import output
real = os.replace
def replace(src, dst):
    if Path(dst).name == "c.py":
        os._exit(9)  # killed between two renames: no handler, no finally runs
    return real(src, dst)
output.os.replace = replace
folder = Path(sys.argv[1])
output.write([(folder / f"{n}.py", f"new {n}\\n") for n in "abcde"])
"""


def test_a_killed_build_leaves_whole_files_and_the_next_build_cleans_up(five):
    folder, files = five
    done = subprocess.run([sys.executable, "-c", KILLED, str(folder)], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    left = snapshot(folder)
    assert left["a.py"] == b"new a\n" and left["b.py"] == b"new b\n" and left["c.py"] == b"old c\n"
    temps = sorted(n for n in left if output.TEMP_NAME.match(n))
    assert len(temps) == 3 + 3  # staged c, d, e; backups of a, b, c
    outcomes = write(files)
    assert sorted(o.path.name for o in outcomes if o.status == "cleaned") == temps
    assert snapshot(folder) == {f"{n}.py": f"new {n}\n".encode() for n in "abcde"}


def test_an_unreadable_target_is_an_output_error(tmp_path, monkeypatch):
    a = tmp_path / "a.py"
    a.write_text("old\n")
    real = Path.read_bytes

    def denied(self):
        if self.name == "a.py":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(output.OutputError, match=re.escape(f"could not read {a}: Permission denied")):
        write([(a, "new\n")])
    with pytest.raises(output.OutputError, match=re.escape(f"could not read {a}: Permission denied")):
        check([(a, "new\n")])


def test_a_file_where_the_out_folder_should_be(tmp_path):
    out = tmp_path / "generated"
    out.write_text("not a folder\n")
    with pytest.raises(output.OutputError) as info:
        write([(out / "a.py", "x\n")])
    assert str(info.value) == f"could not create the folder {out}: {out} is a file, not a folder"
    assert out.read_text() == "not a folder\n"


def test_a_folder_where_a_file_should_be(tmp_path):
    (tmp_path / "a.py").mkdir()
    (tmp_path / "b.py").write_text("old\n")
    with pytest.raises(output.OutputError, match=r"a\.py: Is a directory"):
        write([(tmp_path / "b.py", "new\n"), (tmp_path / "a.py", "x\n")])
    assert (tmp_path / "b.py").read_text() == "old\n"


# -- orphans -----------------------------------------------------------------------------------------

HEADER = "# Generated by gradgen 0.1.0 from {}. Do not edit: change the spec and run `gradgen build`.\n"


def test_generated_from_reads_line_one_only(tmp_path):
    p = tmp_path / "m.py"
    p.write_text(HEADER.format("specs/m.yaml") + "x = 1\n")
    assert output.generated_from(p) == "specs/m.yaml"
    p.write_text("x = 1\n" + HEADER.format("specs/m.yaml"))
    assert output.generated_from(p) is None
    p.write_bytes(b"\xff\xfe")
    assert output.generated_from(p) is None
    assert output.generated_from(tmp_path / "nothing.py") is None


def test_orphans_are_generated_files_from_specs_in_scope(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    specs, out = Path("specs"), Path("out")
    specs.mkdir()
    out.mkdir()
    (specs / "a.yaml").write_text("a")
    (specs / "other").mkdir()
    for name, source in {
        "a.py": "specs/a.yaml",  # produced by this run
        "old.py": "specs/old.yaml",  # a spec since removed
        "renamed.py": "specs/a.yaml",  # a's previous module name
        "elsewhere.py": "more/x.yaml",  # a spec this run was not asked about
        "deeper.py": "specs/other/y.yaml",  # a subfolder is not scanned, so not in scope
        "text.py": "specs/z.txt",  # a folder scan collects only *.yaml and *.yml
    }.items():
        (out / name).write_text(HEADER.format(source))
    (out / "hand.py").write_text("# my own helper\n")
    (out / "sub").mkdir()
    (out / "sub" / "old.py").write_text(HEADER.format("specs/old.yaml"))
    produced = [out / "a.py"]
    found = output.orphans(out, produced, [specs])
    assert found == [(out / "old.py", "specs/old.yaml"), (out / "renamed.py", "specs/a.yaml")]
    # only some specs named: only files from those specs
    assert output.orphans(out, produced, [specs / "a.yaml"]) == [(out / "renamed.py", "specs/a.yaml")]
    assert output.orphans(out, produced, [Path("more/x.yaml")]) == [(out / "elsewhere.py", "more/x.yaml")]
    # the same places spelled differently
    assert output.orphans(out.resolve(), [out.resolve() / "a.py"], [Path("./specs/")]) == [
        (out.resolve() / "old.py", "specs/old.yaml"),
        (out.resolve() / "renamed.py", "specs/a.yaml"),
    ]
    assert output.orphans(tmp_path / "missing", [], [specs]) == []
