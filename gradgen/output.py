"""Stage 7, write or check: the only stage that touches the disk.

Everything is built in memory first.  ``write`` replaces each changed file atomically (a temp file in
the same folder, then ``os.replace``) and leaves unchanged files untouched; ``check`` compares bytes and
returns unified diffs.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Outcome:
    path: Path
    status: str  # "written", "unchanged", "missing", "stale", "fresh"
    diff: str = ""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write(files: list[tuple[Path, str]]) -> list[Outcome]:
    out = []
    new_mode = 0o666 & ~_umask()  # what a plain open() would create (mkstemp alone gives 0600)
    for path, text in files:
        data = text.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            out.append(Outcome(path, "unchanged"))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = (path.stat().st_mode & 0o7777) if path.is_file() else new_mode
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())  # the new bytes are on disk before the name points at them
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        out.append(Outcome(path, "written"))
    return out


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
        if not path.is_file():
            diff = _unified_diff([], text.splitlines(keepends=True), "/dev/null", str(path))
            out.append(Outcome(path, "missing", diff))
            continue
        current = path.read_bytes()
        if current == text.encode("utf-8"):
            out.append(Outcome(path, "fresh"))
            continue
        old = current.decode("utf-8", errors="replace").splitlines(keepends=True)
        diff = _unified_diff(old, text.splitlines(keepends=True), f"{path} (on disk)", f"{path} (expected)")
        out.append(Outcome(path, "stale", diff))
    return out
