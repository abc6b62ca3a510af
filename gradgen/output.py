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


def write(files: list[tuple[Path, str]]) -> list[Outcome]:
    out = []
    for path, text in files:
        data = text.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            out.append(Outcome(path, "unchanged"))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        out.append(Outcome(path, "written"))
    return out


def check(files: list[tuple[Path, str]]) -> list[Outcome]:
    out = []
    for path, text in files:
        if not path.is_file():
            diff = "".join(difflib.unified_diff([], text.splitlines(keepends=True), "/dev/null", str(path)))
            out.append(Outcome(path, "missing", diff))
            continue
        current = path.read_bytes()
        if current == text.encode("utf-8"):
            out.append(Outcome(path, "fresh"))
            continue
        old = current.decode("utf-8", errors="replace").splitlines(keepends=True)
        diff = "".join(difflib.unified_diff(old, text.splitlines(keepends=True), f"{path} (on disk)", f"{path} (expected)"))
        out.append(Outcome(path, "stale", diff))
    return out
