"""The pure pipeline: spec text in, generated files (name, text) out; nothing here touches the disk."""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.diagnostics import Diagnostic, SpecError, warning
from gradgen.fmt import black_format_all, paused_gc
from gradgen.ir import TypedGraph
from gradgen.load import load
from gradgen.lower import lower
from gradgen.plan import Plan, plan
from gradgen.render import render_module, render_test
from gradgen.rewrite import rewrite
from gradgen.shapes import infer
from gradgen.testplan import constant_inputs
from gradgen.verify import UnsafeOutput, verify


@dataclass(frozen=True)
class Built:
    spec_path: str
    name: str
    files: tuple[tuple[str, str], ...]  # (file name, content)
    warnings: tuple[Diagnostic, ...]


def typed_text(path: str, text: str) -> tuple[TypedGraph, list[Diagnostic]]:
    """load -> lower -> shapes -> rewrite: the graph every later stage (plan, explain) starts from."""
    graph, warnings = lower(load(path, text))
    typed = rewrite(infer(graph))
    return typed, warnings + _constant_warnings(typed)


def _constant_warnings(typed: TypedGraph) -> list[Diagnostic]:
    """A wrt input that reaches the output only through masks or int results has a gradient of 0
    everywhere: legal (the module returns the zeros), but rarely what the spec meant."""
    places = {i.name: i.place for i in typed.graph.inputs}
    return [
        warning(
            places[name],
            f"the gradient w.r.t. {name!r} is 0 everywhere: it reaches the output only through "
            "comparisons or int results (argmax, argmin), which carry no gradient",
        )
        for name in constant_inputs(typed)
    ]


def plan_text(path: str, text: str) -> tuple[Plan, list[Diagnostic]]:
    """typed_text -> plan; raises SpecError with every error found."""
    typed, warnings = typed_text(path, text)
    return plan(typed), warnings


def build_text(path: str, text: str) -> Built:
    """The generated files of one spec; raises UnsafeOutput (a gradgen bug) if one fails verification."""
    with paused_gc():  # the stages make many objects and few cycles: collections only cost time
        p, warnings = plan_text(path, text)
    module, test = black_format_all([render_module(p), render_test(p)])
    files = ((f"{p.name}.py", module), (f"test_{p.name}.py", test))
    verify(p, files)
    return Built(path, p.name, files, tuple(warnings))


__all__ = ["Built", "SpecError", "UnsafeOutput", "build_text", "plan_text", "typed_text"]
