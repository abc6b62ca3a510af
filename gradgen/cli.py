"""The command line: ``gradgen build`` and ``gradgen check`` (exit 0 ok, 1 stale or orphaned, 2 bad spec
or usage, 3 internal error, 4 the out folder could not be written), and the helpers for people:
``explain``, ``ops``, ``schema``, ``init``.

Heavy imports (numpy, jinja2, black) happen inside the commands, so ``--help`` and ``--version`` start
fast.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from gradgen import __version__
from gradgen.clihelp import SPEC_FORMAT_HINT, Command, Group
from gradgen.report import Reporter, build_summary, resolve_format

app = typer.Typer(
    cls=Group,
    add_completion=False,  # no shell-completion options: gradgen's arguments are paths, which shells complete
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Turn YAML specs of tensor computations into NumPy forward/backward modules and their tests.",
    epilog=SPEC_FORMAT_HINT,
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


def _build_all(paths: list[Path], out: Path, rep: Reporter):
    """Build every spec in memory; report diagnostics and exit 2 if any spec is invalid."""
    from gradgen.diagnostics import SpecError
    from gradgen.pipeline import build_text
    from gradgen.sources import read_spec

    specs, problems = _collect(paths)
    for line in problems:
        rep.diagnostic(line)
    built, failed = [], bool(problems)
    owners: dict[str, tuple[str, str]] = {}  # file name -> (spec path, module name) of its writer
    for spec in specs:
        try:
            result = build_text(str(spec), read_spec(spec))
        except SpecError as exc:
            for d in exc.diagnostics:
                rep.diagnostic(str(d))
            failed = True
            continue
        except Exception as exc:  # a gradgen bug, not the spec's fault: say so, with its own exit code
            import traceback

            traceback.print_exc()
            rep.diagnostic(
                _problem(
                    spec,
                    "internal error in gradgen while building this spec "
                    f"({type(exc).__name__}: {exc}); please report it with the spec",
                )
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        for w in result.warnings:
            rep.diagnostic(str(w))
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
            rep.diagnostic(_problem(spec, f"{message}; set a different 'name:' in one of them"))
            failed = True
            continue
        for name, _ in result.files:
            owners[name] = (str(spec), result.name)
        built.append(result)
    if failed:
        raise typer.Exit(EXIT_INVALID)
    rep.specs = len(built)
    return [(out / name, content) for b in built for name, content in b.files]


PATHS_HELP = "Spec files (*.yaml, *.yml) or folders of them."
FORMAT_HELP = (
    "text (default), github (::error annotations; the default when GITHUB_ACTIONS=true) "
    "or json (one document on stdout)."
)


def _reporting(command: str, fmt: str | None):
    """Run a command body with a Reporter; a JSON report is printed on every way out."""
    rep = Reporter(command, resolve_format(fmt))

    class _Finish:
        def __enter__(self):
            return rep

        def __exit__(self, kind, exc, tb):
            if kind is None:
                rep.finish(EXIT_OK)
            elif isinstance(exc, typer.Exit):
                rep.finish(exc.exit_code)
            return False

    return _Finish()


@app.command(cls=Command, epilog=SPEC_FORMAT_HINT)
def build(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", help=PATHS_HELP),
    out: Path = typer.Option(
        Path("generated"), "--out", metavar="DIR", help="Folder for the generated modules and tests."
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Also remove generated files in DIR that no spec given produces any more."
    ),
    fmt: str | None = typer.Option(None, "--format", metavar="FORMAT", help=FORMAT_HELP),
):
    """Write DIR/<name>.py and DIR/test_<name>.py for every spec (all or none; unchanged ones untouched)."""
    from gradgen.output import write

    with _reporting("build", fmt) as rep:
        files = _build_all(paths, out, rep)
        orphaned = _orphans(paths, out, files)
        with _write_errors(rep):
            outcomes = write(files, remove=[p for p, _ in orphaned] if prune else ())
        for o in outcomes:
            rep.outcome(o.path, o.status)
        if not prune:
            _report_orphans(rep, orphaned)
        rep.note(build_summary(rep.specs, [o.status for o in outcomes]))


def _orphans(paths: list[Path], out: Path, files) -> list[tuple[Path, str]]:
    """Generated files in OUT from a spec that these paths cover but that none of them produces."""
    from gradgen.output import orphans

    return orphans(out, [p for p, _ in files], paths)


def _report_orphans(rep: Reporter, orphaned: list[tuple[Path, str]]) -> None:
    from gradgen.diagnostics import printable

    for path, source in orphaned:
        gone = "no longer exists" if not Path(source).exists() else "no longer produces it"
        why = f"generated from {printable(source)}, which {gone}; `gradgen build --prune` removes it"
        rep.outcome(path, "orphaned", why=why)


@contextmanager
def _write_errors(rep: Reporter):
    """An OSError on the out folder: one `error:` line and exit 4 (the folder is as it was)."""
    from gradgen.output import OutputError

    try:
        yield
    except OutputError as exc:
        from gradgen.diagnostics import printable

        rep.failure(f"error: {printable(str(exc))}")
        raise typer.Exit(EXIT_WRITE) from None


@app.command(cls=Command, epilog=SPEC_FORMAT_HINT)
def check(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", help=PATHS_HELP),
    out: Path = typer.Option(
        Path("generated"), "--out", metavar="DIR", help="Folder holding the generated files."
    ),
    fmt: str | None = typer.Option(None, "--format", metavar="FORMAT", help=FORMAT_HELP),
):
    """Exit 0 if every generated file is present and identical to what build would write, 1 if not."""
    from gradgen.output import check as check_files

    with _reporting("check", fmt) as rep:
        files = _build_all(paths, out, rep)
        with _write_errors(rep):
            outcomes = check_files(files)
        for o in outcomes:
            rep.outcome(o.path, o.status, o.diff)
        bad = [o for o in outcomes if o.status != "fresh"]
        orphaned = _orphans(paths, out, files)
        _report_orphans(rep, orphaned)
        if bad:
            rep.note(
                f"{len(bad)} of {len(files)} generated files are missing or stale; run `gradgen build`.",
                err=True,
            )
        if orphaned:
            rep.note(
                f"{len(orphaned)} generated files come from specs that no longer produce them; "
                "run `gradgen build --prune` to remove them.",
                err=True,
            )
        if bad or orphaned:
            raise typer.Exit(EXIT_STALE)
        rep.note(f"all {len(files)} generated files are fresh")


@app.command(cls=Command, epilog=SPEC_FORMAT_HINT)
def explain(
    spec: Path = typer.Argument(..., metavar="SPEC", help="One spec file."),
    fmt: str = typer.Option(
        "md", "--format", metavar="md|html", help="Markdown, or one standalone HTML page."
    ),
    out: Path | None = typer.Option(None, "--out", metavar="FILE", help="Write to FILE instead of stdout."),
    dims: str | None = typer.Option(
        None, "--dims", metavar="N=256,D=784", help="Sizes at which to evaluate the cost report."
    ),
    dtype: str = typer.Option(
        "float32", "--dtype", metavar="float32|float64", help="Element type for bytes."
    ),
):
    """Explain a spec's gradients: each backward step with its rule, shapes and generated lines; a graph;
    FLOPs and memory in the spec's own dims."""
    from gradgen.diagnostics import SpecError
    from gradgen.explain import ITEMSIZE
    from gradgen.explain import explain as explain_spec

    if fmt not in ("md", "html"):
        raise typer.BadParameter(f"{fmt!r} is not one of: md, html", param_hint="'--format'")
    if dtype not in ITEMSIZE:
        raise typer.BadParameter(f"{dtype!r} is not one of: float32, float64", param_hint="'--dtype'")
    try:
        text = spec.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"{spec}:1:1: error: cannot read the spec: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        result = explain_spec(str(spec), text, fmt, dims, dtype)
    except SpecError as exc:
        for d in exc.diagnostics:
            typer.echo(str(d), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except ValueError as exc:
        typer.echo(f"error: --dims: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if out is None:
        typer.echo(result, nl=False)
    else:
        _write_text(out, result)
        typer.echo(f"wrote {out}")


@app.command(cls=Command, epilog=SPEC_FORMAT_HINT)
def ops(
    name: str | None = typer.Argument(None, metavar="NAME", help="An op (or operator, like @) to describe.")
):
    """List the ops a spec may use, or describe one: parameters, shape rule, gradient, derivation."""
    from gradgen.opdocs import describe, listing, lookup
    from gradgen.ops import TABLE

    if name is None:
        typer.echo(listing(), nl=False)
        return
    key = lookup(name)
    if key is None:
        import difflib

        close = difflib.get_close_matches(name, sorted(TABLE), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        typer.echo(f"error: unknown op {name!r}{hint} `gradgen ops` lists them all", err=True)
        raise typer.Exit(EXIT_INVALID)
    typer.echo(describe(key), nl=False)


@app.command(cls=Command, epilog=SPEC_FORMAT_HINT)
def schema(
    out: Path | None = typer.Option(
        None, "--out", metavar="FILE", help="Write it to FILE instead of stdout."
    ),
):
    """Print the JSON Schema (draft 2020-12) of the spec format, for editors."""
    from gradgen.schema import schema_text

    text = schema_text()
    if out is None:
        typer.echo(text, nl=False)
        return
    _write_text(out, text)


@app.command(cls=Command, epilog=SPEC_FORMAT_HINT)
def init(
    name: str = typer.Argument(..., metavar="NAME", help="The module name (a Python identifier)."),
    folder: Path = typer.Option(Path("specs"), "--dir", metavar="DIR", help="Where to write NAME.yaml."),
    force: bool = typer.Option(False, "--force", help="Replace an existing NAME.yaml."),
):
    """Write DIR/NAME.yaml, a commented starter spec that builds as it is."""
    from gradgen.diagnostics import Place
    from gradgen.load import Text
    from gradgen.lower import check_name
    from gradgen.starter import starter

    reason = check_name(Text(name, Place("NAME", 1, 1)), "name", module=True)
    if reason is not None:
        typer.echo(f"error: {reason}", err=True)
        raise typer.Exit(EXIT_INVALID)
    path = folder / f"{name}.yaml"
    if path.exists() and not force:
        typer.echo(f"error: {path} exists; pass --force to replace it", err=True)
        raise typer.Exit(EXIT_INVALID)
    _write_text(path, starter(name, path.as_posix()))
    typer.echo(f"wrote {path}; next: gradgen build {path}")


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot write {path}: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None


def main():
    # Typer/click report usage errors with exit code 2 already; keep tracebacks out of the user's way.
    app(prog_name="gradgen")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
