"""The command line: ``gradgen build`` and ``gradgen check`` (exit 0 ok, 1 stale, 2 bad spec or usage).

Heavy imports (numpy, jinja2, black) happen inside the commands, so ``--help`` and ``--version`` start
fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gradgen import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn YAML specs of tensor computations into NumPy forward/backward modules and their tests.",
)

EXIT_OK, EXIT_STALE, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3


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
        if p.is_dir():
            found = sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml")))
            if not found:
                problems.append(f"{p}:1:1: error: no spec files (*.yaml, *.yml) in this folder")
            for spec in found:
                add(spec)
        elif p.is_file():
            add(p)
        else:
            problems.append(f"{p}:1:1: error: no such file or folder")
    return specs, problems


def _build_all(paths: list[Path], out: Path):
    """Build every spec in memory; print diagnostics and exit 2 if any spec is invalid."""
    from gradgen.diagnostics import SpecError
    from gradgen.pipeline import build_text

    specs, problems = _collect(paths)
    for line in problems:
        typer.echo(line, err=True)
    built, failed = [], bool(problems)
    owners: dict[str, tuple[str, str]] = {}  # file name -> (spec path, module name) of its writer
    for spec in specs:
        try:
            text = spec.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            typer.echo(f"{spec}:1:1: error: cannot read the spec: {exc}", err=True)
            failed = True
            continue
        try:
            result = build_text(str(spec), text)
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
            typer.echo(f"{spec}:1:1: error: {message}; set a different 'name:' in one of them", err=True)
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
):
    """Write OUT/<name>.py and OUT/test_<name>.py for every spec (atomically; unchanged files untouched)."""
    from gradgen.output import write

    files = _build_all(paths, out)
    for o in write(files):
        typer.echo(f"{o.status:9} {o.path}")


@app.command()
def check(
    paths: list[Path] = typer.Argument(..., help="Spec files or folders of them."),
    out: Path = typer.Option(Path("generated"), "--out", help="Folder holding the generated files."),
):
    """Exit 0 if every generated file is present and identical to what build would write, 1 if not."""
    from gradgen.output import check as check_files

    files = _build_all(paths, out)
    bad = [o for o in check_files(files) if o.status != "fresh"]
    for o in bad:
        typer.echo(f"{o.status}: {o.path}")
        typer.echo(o.diff, nl=False)
    if bad:
        typer.echo(
            f"{len(bad)} of {len(files)} generated files are missing or stale; run `gradgen build`.", err=True
        )
        raise typer.Exit(EXIT_STALE)
    typer.echo(f"all {len(files)} generated files are fresh")


def main():
    # Typer/click report usage errors with exit code 2 already; keep tracebacks out of the user's way.
    app(prog_name="gradgen")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
