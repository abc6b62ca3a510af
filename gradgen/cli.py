"""The command line: ``gradgen build`` and ``gradgen check`` (exit 0 ok, 1 stale, 2 bad spec or usage,
3 internal error, 4 the out folder could not be written).

Heavy imports (numpy, jinja2, black) happen inside the commands, so ``--help`` and ``--version`` start
fast.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from gradgen import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn YAML specs of tensor computations into NumPy forward/backward modules and their tests.",
)

EXIT_OK, EXIT_STALE, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_WRITE = 4  # a file in the out folder could not be written, read or removed (nothing was changed)


def _version(value: bool):
    if value:
        typer.echo(f"gradgen {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: bool | None = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    """gradgen: gradient code generator."""


def _collect(paths: list[Path]) -> tuple[list[Path], list[str]]:
    specs, problems = [], []
    seen: set[Path] = set()

    def add(spec: Path) -> None:
        # The same spec named twice (`specs/ specs/mlp.yaml`) is built once, not reported as a clash.
        key = spec.resolve()
        if key not in seen:
            seen.add(key)
            specs.append(spec)

    for p in paths:
        kind = _kind(p)
        if kind == "folder":
            try:
                found = sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml"))
            except OSError as exc:
                problems.append(_problem(p, f"cannot read the folder: {exc.strerror or exc}"))
                continue
            if not found:
                problems.append(_problem(p, "no spec files (*.yaml, *.yml) in this folder"))
            for spec in found:
                add(spec)
        elif kind == "file":
            add(p)
        else:
            problems.append(_problem(p, kind))
    return specs, problems


def _kind(p: Path) -> str:
    """What the path is: a "file", a "folder", or the reason it is neither."""
    try:
        if p.is_dir():
            return "folder"
        if p.is_file():
            return "file"
        return "not a regular file or a folder" if p.exists() else "no such file or folder"
    except OSError as exc:  # a parent folder that cannot be searched, say
        return f"cannot read this path: {exc.strerror or exc}"


def _problem(p: Path, message: str) -> str:
    from gradgen.diagnostics import Place, error

    return str(error(Place(str(p), 1, 1), message))


def _build_all(paths: list[Path], out: Path):
    """Build every spec in memory; print diagnostics and exit 2 if any spec is invalid."""
    from gradgen.diagnostics import SpecError
    from gradgen.pipeline import build_text
    from gradgen.sources import read_spec

    specs, problems = _collect(paths)
    for line in problems:
        typer.echo(line, err=True)
    built, failed = [], bool(problems)
    owners: dict[str, tuple[str, str]] = {}  # file name -> (spec path, module name) of its writer
    for spec in specs:
        try:
            result = build_text(str(spec), read_spec(spec))
        except SpecError as exc:
            for d in exc.diagnostics:
                typer.echo(str(d), err=True)
            failed = True
            continue
        except Exception as exc:  # a gradgen bug, not the spec's fault: say so, with its own exit code
            import traceback

            traceback.print_exc()
            typer.echo(
                f"{spec}:1:1: error: internal error in gradgen while building this spec "
                f"({type(exc).__name__}: {exc}); please report it with the spec",
                err=True,
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        for w in result.warnings:
            typer.echo(str(w), err=True)
        # Two specs must not write the same file: the same module name, or one spec's test file
        # being another's module (a spec named `test_foo` next to one named `foo`).
        clash = next((name for name, _ in result.files if name in owners), None)
        if clash is not None:
            other_spec, other_name = owners[clash]
            if other_name == result.name:
                message = f"module name {result.name!r} is also written by {other_spec}"
            else:
                message = (
                    f"module name {result.name!r} would write {clash}, which {other_spec} "
                    f"(module name {other_name!r}) also writes"
                )
            typer.echo(_problem(spec, f"{message}; set a different 'name:' in one of them"), err=True)
            failed = True
            continue
        for name, _ in result.files:
            owners[name] = (str(spec), result.name)
        built.append(result)
    if failed:
        raise typer.Exit(EXIT_INVALID)
    return [(out / name, content) for b in built for name, content in b.files]


@app.command()
def build(
    paths: list[Path] = typer.Argument(..., help="Spec files or folders of them."),
    out: Path = typer.Option(Path("generated"), "--out", help="Folder for the generated modules and tests."),
    prune: bool = typer.Option(
        False, "--prune", help="Also remove generated files in OUT that no spec given produces any more."
    ),
):
    """Write OUT/<name>.py and OUT/test_<name>.py for every spec (all or none; unchanged ones untouched)."""
    from gradgen.output import write

    files = _build_all(paths, out)
    orphaned = _orphans(paths, out, files)
    with _write_errors():
        outcomes = write(files, remove=[p for p, _ in orphaned] if prune else ())
    for o in outcomes:
        typer.echo(f"{o.status:9} {o.path}")
    if not prune:
        _report_orphans(orphaned, "orphaned  ")


def _orphans(paths: list[Path], out: Path, files) -> list[tuple[Path, str]]:
    """Generated files in OUT from a spec that these paths cover but that none of them produces."""
    from gradgen.output import orphans

    return orphans(out, [p for p, _ in files], paths)


def _report_orphans(orphaned: list[tuple[Path, str]], status: str) -> None:
    from gradgen.diagnostics import printable

    for path, source in orphaned:
        gone = "no longer exists" if not Path(source).exists() else "no longer produces it"
        typer.echo(f"{status}{path}")
        typer.echo(
            f"{path}: generated from {printable(source)}, which {gone}; "
            "`gradgen build --prune` removes it",
            err=True,
        )


@contextmanager
def _write_errors():
    """An OSError on the out folder: one `error:` line and exit 4 (the folder is as it was)."""
    from gradgen.output import OutputError

    try:
        yield
    except OutputError as exc:
        from gradgen.diagnostics import printable

        typer.echo(f"error: {printable(str(exc))}", err=True)
        raise typer.Exit(EXIT_WRITE) from None


@app.command()
def check(
    paths: list[Path] = typer.Argument(..., help="Spec files or folders of them."),
    out: Path = typer.Option(Path("generated"), "--out", help="Folder holding the generated files."),
):
    """Exit 0 if every generated file is present and identical to what build would write, 1 if not."""
    from gradgen.output import check as check_files

    files = _build_all(paths, out)
    with _write_errors():
        bad = [o for o in check_files(files) if o.status != "fresh"]
    for o in bad:
        typer.echo(f"{o.status}: {o.path}")
        typer.echo(o.diff, nl=False)
    orphaned = _orphans(paths, out, files)
    _report_orphans(orphaned, "orphaned: ")
    if bad:
        typer.echo(
            f"{len(bad)} of {len(files)} generated files are missing or stale; run `gradgen build`.", err=True
        )
    if orphaned:
        typer.echo(
            f"{len(orphaned)} generated files come from specs that no longer produce them; "
            "run `gradgen build --prune` to remove them.",
            err=True,
        )
    if bad or orphaned:
        raise typer.Exit(EXIT_STALE)
    typer.echo(f"all {len(files)} generated files are fresh")


def main():
    # Typer/click report usage errors with exit code 2 already; keep tracebacks out of the user's way.
    app(prog_name="gradgen")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
