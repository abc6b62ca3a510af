"""The command line when the disk says no (exit 4), when a spec cannot be read (exit 2), and orphaned
generated files (`check` exits 1, `build --prune` removes them), all through typer's CliRunner."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradgen import output
from gradgen.cli import EXIT_INVALID, EXIT_OK, EXIT_STALE, EXIT_WRITE, app

SQUARE = "inputs:\n  x: [N]\ngraph:\n  y: sum(x * x)\n"
CUBE = "inputs:\n  x: [N]\ngraph:\n  y: sum(x * x * x)\n"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    (line,) = result.stderr.splitlines()
    return line


@pytest.fixture
def project(tmp_path, monkeypatch):
    """specs/square.yaml and specs/cube.yaml, built into generated/; cwd is the project."""
    monkeypatch.chdir(tmp_path)
    Path("specs").mkdir()
    Path("specs/square.yaml").write_text(SQUARE)
    Path("specs/cube.yaml").write_text(CUBE)
    assert run("build", "specs").exit_code == 0
    return tmp_path


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- exit 4: the out folder could not be written ----------------------------------------------------


def test_exit_codes_are_distinct():
    assert len({EXIT_OK, EXIT_STALE, EXIT_INVALID, 3, EXIT_WRITE}) == 5 and EXIT_WRITE == 4


def test_out_is_an_existing_file(project):
    Path("taken").write_text("mine\n")
    line = one_error_line(run("build", "specs", "--out", "taken"), EXIT_WRITE)
    assert line == "error: could not create the folder taken: taken is a file, not a folder"
    assert Path("taken").read_text() == "mine\n"


def test_a_full_disk_midway_leaves_the_old_files(project, monkeypatch):
    Path("specs/square.yaml").write_text(SQUARE.replace("x * x", "x * x * 2.0"))
    Path("specs/cube.yaml").write_text(CUBE.replace("x * x * x", "x * x * x * 2.0"))
    before = contents(Path("generated"))
    real, calls = os.replace, []

    def full(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # cube.py was replaced, square.py fails (their tests are unchanged)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", full)
    line = one_error_line(run("build", "specs"), EXIT_WRITE)
    assert line == (
        "error: could not write generated/square.py: No space left on device (no file was changed)"
    )
    assert contents(Path("generated")) == before
    assert run("check", "specs").exit_code == EXIT_STALE  # still the old files, and whole


def test_a_full_disk_while_staging(project, monkeypatch):
    Path("specs/cube.yaml").write_text(CUBE.replace("x * x * x", "x * x * x * 2.0"))
    before = contents(Path("generated"))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(output.os, "fsync", full)
    line = one_error_line(run("build", "specs"), EXIT_WRITE)
    assert line.startswith("error: could not write generated/cube.py: No space left on device")
    assert contents(Path("generated")) == before


def test_a_read_only_folder(project, monkeypatch):
    Path("specs/cube.yaml").write_text(CUBE.replace("x * x * x", "x * x * x * 2.0"))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(output.tempfile, "mkstemp", denied)
    line = one_error_line(run("build", "specs"), EXIT_WRITE)
    assert line == "error: could not write generated/cube.py: Permission denied (no file was changed)"


@pytest.mark.skipif(ROOT or os.name != "posix", reason="root writes to read-only folders")
def test_a_really_read_only_folder(project):
    Path("specs/cube.yaml").write_text(CUBE.replace("x * x * x", "x * x * x * 2.0"))
    Path("generated").chmod(0o555)
    try:
        line = one_error_line(run("build", "specs"), EXIT_WRITE)
    finally:
        Path("generated").chmod(0o755)
    assert line.startswith("error: could not write generated/cube.py: Permission denied")


@pytest.mark.parametrize(
    ("length", "problem"),
    [(240, "could not write generated/{}.py"), (250, "could not read generated/test_{}.py")],
)
def test_a_module_name_too_long_for_the_file_system(tmp_path, monkeypatch, length, problem):
    """240: the files fit in 255 bytes but their temp files do not; 250: test_<name>.py does not."""
    monkeypatch.chdir(tmp_path)
    name = "m" * length
    Path("long.yaml").write_text(f"name: {name}\n" + SQUARE)
    line = one_error_line(run("build", "long.yaml"), EXIT_WRITE)
    assert line.startswith(f"error: {problem.format(name)}: File name too long")
    assert list(Path("generated").iterdir()) == []
    line = one_error_line(run("check", "long.yaml"), 1 if length == 240 else EXIT_WRITE)
    if length == 250:
        assert line == f"error: {problem.format(name)}: File name too long"


def test_an_unreadable_generated_file_in_check(project, monkeypatch):
    real = Path.read_bytes

    def denied(self):
        if self.name == "cube.py":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    line = one_error_line(run("check", "specs"), EXIT_WRITE)
    assert line == "error: could not read generated/cube.py: Permission denied"


def test_build_cleans_the_temps_of_a_killed_build(project):
    leftover = Path("generated/.cube.py.a1b2c3d4.tmp")
    leftover.write_text("half a file")
    result = run("build", "specs")
    assert result.exit_code == 0
    assert "cleaned   generated/.cube.py.a1b2c3d4.tmp" in result.stdout.splitlines()
    assert not leftover.exists()


# -- exit 2: a spec that cannot be read -------------------------------------------------------------


def test_a_spec_that_is_not_utf8(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("description: café\ninputs:\n  x: [N]\ngraph:\n  y: sum(x)\n".encode("latin-1"))
    line = one_error_line(run("build", spec, "--out", tmp_path / "out"), EXIT_INVALID)
    assert line == f"{spec}:1:17: error: the spec is not valid UTF-8 (byte 0xe9 here); save it as UTF-8"
    assert not (tmp_path / "out").exists()


def test_a_spec_in_utf16(tmp_path):
    spec = tmp_path / "wide.yaml"
    spec.write_bytes(SQUARE.encode("utf-16"))
    line = one_error_line(run("check", spec, "--out", tmp_path / "out"), EXIT_INVALID)
    assert line == f"{spec}:1:1: error: the spec is UTF-16; save it as UTF-8"


def test_a_spec_without_permission(tmp_path, monkeypatch):
    spec = tmp_path / "secret.yaml"
    spec.write_text(SQUARE)
    real = Path.read_bytes

    def denied(self):
        if self.name == "secret.yaml":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    line = one_error_line(run("build", spec, "--out", tmp_path / "out"), EXIT_INVALID)
    assert line == f"{spec}:1:1: error: cannot read the spec: Permission denied"


@pytest.mark.skipif(ROOT or os.name != "posix", reason="root reads anything")
def test_a_spec_really_without_permission(tmp_path):
    spec = tmp_path / "secret.yaml"
    spec.write_text(SQUARE)
    spec.chmod(0)
    line = one_error_line(run("build", spec, "--out", tmp_path / "out"), EXIT_INVALID)
    assert line == f"{spec}:1:1: error: cannot read the spec: Permission denied"


def test_a_folder_named_like_a_spec(tmp_path):
    specs = tmp_path / "specs"
    (specs / "odd.yaml").mkdir(parents=True)
    line = one_error_line(run("build", specs, "--out", tmp_path / "out"), EXIT_INVALID)
    assert line == f"{specs / 'odd.yaml'}:1:1: error: this is a folder, not a spec file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_path_that_is_neither_file_nor_folder(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    line = one_error_line(run("build", fifo, "--out", tmp_path / "out"), EXIT_INVALID)
    assert line == f"{fifo}:1:1: error: not a regular file or a folder"


# -- orphans ----------------------------------------------------------------------------------------


def test_check_reports_the_files_of_a_removed_spec(project):
    Path("specs/cube.yaml").unlink()
    result = run("check", "specs")
    assert result.exit_code == EXIT_STALE
    assert result.stdout.splitlines() == ["orphaned: generated/cube.py", "orphaned: generated/test_cube.py"]
    assert (
        "generated/cube.py: generated from specs/cube.yaml, which no longer exists; "
        "`gradgen build --prune` removes it"
    ) in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "2 generated files come from specs that no longer produce them; "
        "run `gradgen build --prune` to remove them."
    )


def test_check_reports_the_old_files_of_a_renamed_module(project):
    Path("specs/cube.yaml").write_text("name: cubic\n" + CUBE)
    result = run("check", "specs/cube.yaml")  # one spec named: its own old files count
    assert result.exit_code == EXIT_STALE
    out = result.stdout.splitlines()
    assert "orphaned: generated/cube.py" in out and "orphaned: generated/test_cube.py" in out
    assert "missing: generated/cubic.py" in out
    assert "which no longer produces it" in result.stderr


def test_check_of_some_specs_does_not_flag_the_others(project):
    result = run("check", "specs/square.yaml")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == "all 2 generated files are fresh\n"


def test_hand_written_files_are_never_orphans(project):
    Path("generated/helpers.py").write_text("# my helpers\n")
    Path("generated/conftest.py").write_text("import pytest\n")
    assert run("check", "specs").exit_code == EXIT_OK
    result = run("build", "specs", "--prune")
    assert result.exit_code == 0
    assert Path("generated/helpers.py").exists() and Path("generated/conftest.py").exists()


def test_build_reports_orphans_and_prune_removes_them(project):
    Path("specs/cube.yaml").unlink()
    Path("generated/sub").mkdir()
    Path("generated/sub/cube.py").write_bytes(Path("generated/cube.py").read_bytes())
    result = run("build", "specs")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-3:] == [
        "orphaned  generated/cube.py",
        "orphaned  generated/test_cube.py",
        "1 spec: 2 unchanged",
    ]
    assert Path("generated/cube.py").exists()
    result = run("build", "specs", "--prune")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "unchanged generated/square.py",
        "unchanged generated/test_square.py",
        "removed   generated/cube.py",
        "removed   generated/test_cube.py",
        "1 spec: 2 unchanged, 2 removed",
    ]
    assert sorted(p.name for p in Path("generated").iterdir()) == ["square.py", "sub", "test_square.py"]
    assert Path("generated/sub/cube.py").exists()  # only the out folder itself
    assert run("check", "specs").exit_code == EXIT_OK


def test_prune_does_nothing_when_the_build_fails(project):
    Path("specs/cube.yaml").unlink()
    Path("specs/square.yaml").write_text(SQUARE.replace("x * x", "x * z"))
    before = contents(Path("generated"))
    result = run("build", "specs", "--prune")
    assert result.exit_code == EXIT_INVALID
    assert contents(Path("generated")) == before


def test_prune_of_some_specs_keeps_the_others(project):
    Path("specs/square.yaml").write_text("name: sq\n" + SQUARE)
    result = run("build", "specs/square.yaml", "--prune")
    assert result.exit_code == 0
    assert sorted(p.name for p in Path("generated").iterdir()) == [
        "cube.py",
        "sq.py",
        "test_cube.py",
        "test_sq.py",
    ]


def test_prune_is_all_or_nothing_with_the_writes(project, monkeypatch):
    Path("specs/cube.yaml").unlink()
    Path("specs/square.yaml").write_text(SQUARE.replace("x * x", "x * x * 2.0"))
    before = contents(Path("generated"))
    real = os.unlink

    def stuck(path, *args, **kwargs):
        if Path(path).name == "test_cube.py":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(output.os, "unlink", stuck)
    line = one_error_line(run("build", "specs", "--prune"), EXIT_WRITE)
    assert line == "error: could not remove generated/test_cube.py: Permission denied (no file was changed)"
    assert contents(Path("generated")) == before
