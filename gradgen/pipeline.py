"""The pure pipeline: spec text in, generated files (name, text) out; nothing here touches the disk."""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.diagnostics import Diagnostic, SpecError
from gradgen.fmt import black_format_all, paused_gc
from gradgen.load import load
from gradgen.lower import lower
from gradgen.plan import Plan, plan
from gradgen.render import render_module, render_test
from gradgen.shapes import infer


@dataclass(frozen=True)
class Built:
    spec_path: str
    name: str
    files: tuple[tuple[str, str], ...]  # (file name, content)
    warnings: tuple[Diagnostic, ...]


def plan_text(path: str, text: str) -> tuple[Plan, list[Diagnostic]]:
    """load -> lower -> shapes -> plan; raises SpecError with every error found."""
    doc = load(path, text)
    graph, warnings = lower(doc)
    typed = infer(graph)
    return plan(typed), warnings


def build_text(path: str, text: str) -> Built:
    with paused_gc():  # the stages make many objects and few cycles: collections only cost time
        p, warnings = plan_text(path, text)
    module, test = black_format_all([render_module(p), render_test(p)])
    return Built(path, p.name, ((f"{p.name}.py", module), (f"test_{p.name}.py", test)), tuple(warnings))


__all__ = ["Built", "SpecError", "build_text", "plan_text"]
