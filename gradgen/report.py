"""How ``build`` and ``check`` report: plain text (the default), GitHub workflow commands, or JSON.

The commands hand every diagnostic line (``PATH:LINE:COL: level: MESSAGE``), every file outcome and
their closing summary to one ``Reporter``; the format decides what reaches the terminal:

- ``text``: diagnostics on stderr as they come, outcomes and the summary on stdout (the format
  gradgen always had);
- ``github``: the same, but each diagnostic is also a ``::error file=...,line=...,col=...::`` workflow
  command, and each missing or stale file a ``::error file=...::`` one, so GitHub Actions shows them as
  annotations on the pull request (chosen automatically when ``GITHUB_ACTIONS=true``);
- ``json``: nothing until the end, then one JSON document on stdout with every diagnostic, every file
  outcome, the summary and the exit code, for other tools.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import typer

FORMATS = ("text", "github", "json")
_DIAGNOSTIC = re.compile(
    r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): (?P<level>error|warning): (?P<message>.*)$"
)


def resolve_format(requested: str | None) -> str:
    """The output format: the one asked for, else github inside GitHub Actions, else text."""
    if requested is not None:
        if requested not in FORMATS:
            raise typer.BadParameter(
                f"{requested!r} is not one of: {', '.join(FORMATS)}", param_hint="'--format'"
            )
        return requested
    return "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text"


def _escape_data(text: str) -> str:
    """A workflow command's message: %, CR and LF are percent-encoded (GitHub's own rule)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """A workflow command's property value: also ':' and ',' are encoded."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(level: str, message: str, file: str | None = None, line=None, col=None) -> str:
    props = []
    if file is not None:
        props.append(f"file={_escape_property(file)}")
    if line is not None:
        props.append(f"line={line}")
    if col is not None:
        props.append(f"col={col}")
    head = f"::{level}" + (" " + ",".join(props) if props else "")
    return f"{head}::{_escape_data(message)}"


@dataclass
class Reporter:
    command: str  # "build" or "check"
    format: str = "text"
    diagnostics: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    summary: str = ""
    specs: int = 0  # how many specs were built

    # -- what the commands say ----------------------------------------------------------------------
    def diagnostic(self, line: str) -> None:
        """One ``PATH:LINE:COL: level: MESSAGE`` line (an error or a warning about a spec)."""
        m = _DIAGNOSTIC.match(line)
        if m:
            d = {
                "file": m["file"],
                "line": int(m["line"]),
                "col": int(m["col"]),
                "level": m["level"],
                "message": m["message"],
            }
        else:  # not in the usual form (should not happen): keep it whole
            d = {"file": None, "line": None, "col": None, "level": "error", "message": line}
        self.diagnostics.append(d)
        if self.format == "json":
            return
        if self.format == "github":
            typer.echo(workflow_command(d["level"], d["message"], d["file"], d["line"], d["col"]))
        typer.echo(line, err=True)

    def outcome(self, path, status: str, diff: str = "", why: str = "") -> None:
        """A file of the out folder: written / unchanged / removed / cleaned (build), missing / stale /
        fresh (check), orphaned (both: generated from a spec that no longer produces it, ``why``)."""
        entry = {"path": str(path), "status": status}
        if diff:
            entry["diff"] = diff
        if why:
            entry["why"] = why
        self.files.append(entry)
        if self.format == "json" or status == "fresh":
            return
        if status in ("written", "unchanged", "removed", "cleaned"):
            typer.echo(f"{status:9} {path}")
            return
        if status == "orphaned" and self.command == "build":  # reported, not a failure, in a build
            if self.format == "github":
                typer.echo(workflow_command("warning", f"orphaned generated file: {why}", str(path)))
            typer.echo(f"{status:9} {path}")
            typer.echo(f"{path}: {why}", err=True)
            return
        if self.format == "github":
            hint = why or "run `gradgen build` and commit the result"
            typer.echo(workflow_command("error", f"generated file is {status}; {hint}", str(path)))
        typer.echo(f"{status}: {path}")
        if why:
            typer.echo(f"{path}: {why}", err=True)
        typer.echo(diff, nl=False)

    def failure(self, line: str) -> None:
        """An ``error: MESSAGE`` line about the out folder, not about a spec (exit 4)."""
        message = line.removeprefix("error: ")
        self.diagnostics.append(
            {"file": None, "line": None, "col": None, "level": "error", "message": message}
        )
        if self.format == "json":
            return
        if self.format == "github":
            typer.echo(workflow_command("error", message))
        typer.echo(line, err=True)

    def note(self, text: str, err: bool = False) -> None:
        """The closing summary line."""
        self.summary = text
        if self.format != "json":
            typer.echo(text, err=err)

    def finish(self, exit_code: int) -> None:
        """In JSON, the one document; in the other formats everything is printed already."""
        if self.format != "json":
            return
        doc = {
            "command": self.command,
            "exit_code": exit_code,
            "diagnostics": self.diagnostics,
            "files": self.files,
            "summary": self.summary,
        }
        typer.echo(json.dumps(doc, indent=2))


def build_summary(specs: int, outcomes: list[str]) -> str:
    """``17 specs: 2 written, 32 unchanged``."""
    kinds = ("written", "unchanged", "removed", "cleaned")
    counts = [(s, outcomes.count(s)) for s in kinds if outcomes.count(s)]
    noun = "spec" if specs == 1 else "specs"
    return f"{specs} {noun}: " + (", ".join(f"{n} {s}" for s, n in counts) or "nothing to write")
