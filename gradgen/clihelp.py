"""Help text that reads like a person wrote it: ``Usage: gradgen build [OPTIONS] PATH...``.

Typer's own help puts a type after every parameter (``--out <path>``, ``--version <bool>``) and braces
around required arguments (``{paths}...``).  gradgen's commands use the plain layout of click (which Typer carries) instead, with
each argument shown by its metavar and each option by its own metavar, and nothing for a flag.
"""

from __future__ import annotations

from typer.core import TyperCommand, TyperGroup

SPEC_FORMAT_HINT = (
    "The spec format (YAML: inputs, graph, output, wrt) is described in the README's 'The spec format' "
    "section; `gradgen schema` prints it as a JSON Schema for editors, `gradgen ops` lists the ops, "
    "and `gradgen init NAME` writes a commented starter spec."
)


class Command(TyperCommand):
    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = ["[OPTIONS]"]
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = p.metavar or p.name.upper()
                pieces.append(name if p.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                args.append((p.metavar or p.name.upper(), p.help or ""))
            else:
                record = p.get_help_record(ctx)
                if record is not None:
                    opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


class Group(TyperGroup):
    """The top level: plain click layout, commands in the order they were added."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)
