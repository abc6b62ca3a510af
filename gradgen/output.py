"""Stage 7, write or check: the only stage that touches the disk.

Everything is built in memory first.  ``write`` is one transaction over all the files of a run: every
changed file is staged as a temp file in its own folder (written and fsynced), and only when all of them
are staged are they renamed over their targets (``os.replace``, atomic per file).  If a rename fails
midway, the files already replaced get their old contents back (each was kept as a hard link), so the
folder holds the old set or the new set, never a mix.  Unchanged files are left untouched.  ``check``
compares bytes and returns unified diffs; ``orphans`` finds generated files that no spec produces.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Outcome:
    path: Path
    status: str  # "written", "unchanged", "removed", "missing", "stale", "fresh"
    diff: str = ""


class OutputError(Exception):
    """A file in the out folder could not be read, written or removed; the message is one line."""


# The temp files a run stages and the backups it keeps are `.<file name>.<8 random chars>.tmp` next to
# their target (tempfile.mkstemp's names, and ours for backups).  A build that was killed leaves them
# behind; the next build removes them (only these: the name says they are ours).
TEMP_NAME = re.compile(r"\.[^/\\]+\.py\.[A-Za-z0-9_]{8}\.tmp\Z")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@dataclass
class _Change:
    path: Path
    data: bytes | None  # None: remove the file (an orphan pruned)
    temp: str | None = None  # the staged new contents
    backup: str | None = None  # a second name for the old file while the run commits
    done: bool = False


def write(files: list[tuple[Path, str]], remove: Iterable[Path] = ()) -> list[Outcome]:
    """Write every changed file and remove ``remove``, all or nothing; raise OutputError on failure.

    Temp files that an interrupted build left in these folders are removed first (reported as
    "cleaned").  The folders are locked meanwhile, so two builds into one folder take turns.
    """
    remove = [Path(p) for p in remove]
    folders = sorted({p.parent for p, _ in files} | {p.parent for p in remove})
    with _locked(folders):
        out = [Outcome(p, "cleaned") for folder in folders for p in clean_temps(folder)]
        changes = []
        for path, text in files:
            data = text.encode("utf-8")
            if _current(path) == data:
                out.append(Outcome(path, "unchanged"))
            else:
                changes.append(_Change(path, data))
                out.append(Outcome(path, "written"))
        for path in remove:
            changes.append(_Change(path, None))
            out.append(Outcome(path, "removed"))
        _transaction(changes)
    return out


def _transaction(changes: list[_Change]) -> None:
    try:
        for c in changes:
            _stage(c)
        for c in changes:
            _commit(c)
    except OutputError as exc:
        problems = _roll_back(changes)
        if problems:
            raise OutputError(f"{exc}; and could not restore {'; '.join(problems)}") from None
        raise OutputError(f"{exc} (no file was changed)") from None
    except BaseException:  # Ctrl-C, say: put the old files back too (a hard kill leaves temps)
        _roll_back(changes)
        raise
    for c in changes:
        _discard(c.backup)
    _sync_folders({c.path.parent for c in changes})


@contextmanager
def _locked(folders: list[Path]):
    """Create the folders and hold an exclusive lock on each (POSIX flock; elsewhere no lock)."""
    fds = []
    try:
        for folder in folders:
            _make_folder(folder)
            fds.append(_lock(folder))
        yield
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)  # closing releases the lock


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"could not create the folder {folder}: {_explain(folder, exc)}") from None


def _lock(folder: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    with suppress(OSError):  # a file system without locks: go on unlocked
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _explain(path: Path, exc: OSError) -> str:
    """The reason, saying which part of the path is a file when a folder was needed."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
    return _reason(exc)


def _current(path: Path) -> bytes | None:
    """The file's bytes, or None when there is no file there (a folder there fails later, on replace)."""
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise OutputError(f"could not read {path}: {_reason(exc)}") from None


def _stage(c: _Change) -> None:
    """Write the new contents to a temp file beside the target, and keep the old file (if any) under
    a second name until the run has committed."""
    try:
        old_mode = c.path.stat().st_mode & 0o7777 if c.path.is_file() else None
        if c.data is not None:
            mode = old_mode if old_mode is not None else 0o666 & ~_umask()  # as plain open() would
            c.temp = _temp_file(c.path, c.data, mode)
        if old_mode is not None:
            c.backup = _backup(c.path, old_mode)
    except OSError as exc:
        verb = "remove" if c.data is None else "write"
        raise OutputError(f"could not {verb} {c.path}: {_explain(c.path, exc)}") from None


def _temp_file(path: Path, data: bytes, mode: int) -> str:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the new bytes are on disk before the name points at them
        os.chmod(name, mode)
    except BaseException:
        _discard(name)
        raise
    return name


def _backup(path: Path, mode: int) -> str:
    """A second name for the old file: a hard link (no copy, no space needed), or where the file
    system has none, a copy."""
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.link(path, name)
            return name
        except FileExistsError:
            continue
        except OSError:
            return _temp_file(path, path.read_bytes(), mode)
    raise FileExistsError(f"no free backup name for {path}")


def _commit(c: _Change) -> None:
    try:
        if c.data is None:
            os.unlink(c.path)  # its backup keeps it until the run has succeeded
        else:
            os.replace(c.temp, c.path)
            c.temp = None
    except OSError as exc:
        verb = "remove" if c.data is None else "write"
        raise OutputError(f"could not {verb} {c.path}: {_explain(c.path, exc)}") from None
    c.done = True


def _roll_back(changes: list[_Change]) -> list[str]:
    """Put back every file the run replaced or removed; drop its temps.  What could not be restored."""
    problems = []
    for c in reversed(changes):
        try:
            if c.done and c.backup is not None:
                os.replace(c.backup, c.path)
                c.backup = None
            elif c.done:  # a new file: there was nothing before it
                os.unlink(c.path)
        except OSError as exc:
            problems.append(f"{c.path}: {_reason(exc)}")
        _discard(c.temp)
        _discard(c.backup)
    return problems


def _discard(name: str | None) -> None:
    if name is not None:
        with suppress(OSError):  # else left for the next build's clean_temps
            os.unlink(name)


def _sync_folders(folders) -> None:
    """Make the renames durable (POSIX; where a folder cannot be opened this is skipped)."""
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        with suppress(OSError):
            os.fsync(fd)
        os.close(fd)


def clean_temps(folder: Path) -> list[Path]:
    """Remove the temp and backup files that an interrupted build left in ``folder``; return them."""
    try:
        names = [p for p in folder.iterdir() if TEMP_NAME.match(p.name) and p.is_file()]
    except OSError:
        return []  # unreadable: the write that follows reports it
    removed = []
    for p in sorted(names):
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _unified_diff(old: list[str], new: list[str], from_name: str, to_name: str) -> str:
    """A unified diff whose every line ends in a newline, with git's marker for a missing final one."""
    out = []
    for line in difflib.unified_diff(old, new, from_name, to_name):
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


def check(files: list[tuple[Path, str]]) -> list[Outcome]:
    out = []
    for path, text in files:
        current = _current(path)
        if current is None:
            diff = _unified_diff([], text.splitlines(keepends=True), "/dev/null", str(path))
            out.append(Outcome(path, "missing", diff))
            continue
        if current == text.encode("utf-8"):
            out.append(Outcome(path, "fresh"))
            continue
        old = current.decode("utf-8", errors="replace").splitlines(keepends=True)
        diff = _unified_diff(old, text.splitlines(keepends=True), f"{path} (on disk)", f"{path} (expected)")
        out.append(Outcome(path, "stale", diff))
    return out


# -- orphans -----------------------------------------------------------------------------------------

# Line 1 of every file gradgen writes (templates/*.j2).
HEADER = re.compile(r"# Generated by gradgen \S+ from (.*?)\. Do not edit")
SPEC_SUFFIXES = (".yaml", ".yml")


def generated_from(path: Path) -> str | None:
    """The spec path on line 1 of a file gradgen generated, or None for any other file."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    m = HEADER.match(first.decode("utf-8", errors="replace"))
    return m.group(1) if m else None


def orphans(out_dir: Path, produced: Iterable[Path], roots: Iterable[Path]) -> list[tuple[Path, str]]:
    """Generated files in ``out_dir`` that this run does not produce, from a spec it covers.

    A file counts only if line 1 says gradgen generated it, and only if the spec it names is one this
    run was asked about: a spec file given on the command line, or a *.yaml / *.yml file directly in a
    folder given.  So ``check specs/mlp.yaml`` never reports another spec's files, and a removed or
    renamed spec is noticed when its folder (or its old path) is given.  Returns (file, spec path).
    """
    try:
        candidates = sorted(p for p in out_dir.glob("*.py") if p.is_file())
    except OSError:
        return []
    keep = {_key(p) for p in produced}
    files, folders = set(), set()
    for r in roots:
        (folders if r.is_dir() else files).add(_key(r))
    found = []
    for p in candidates:
        if _key(p) in keep:
            continue
        source = generated_from(p)
        if source is None:
            continue
        spec = Path(source)
        in_folder = spec.suffix in SPEC_SUFFIXES and _key(spec.parent) in folders
        if _key(spec) in files or in_folder:
            found.append((p, source))
    return found


def _key(path: Path) -> str:
    """One spelling per place: absolute, with symlinks and `..` resolved."""
    return os.path.realpath(path)
