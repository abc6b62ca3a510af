"""Stage 6, format: a long module is formatted in pieces (in parallel) with the same result as whole.

The pieces are cut at every place the cutter accepts (PIECE_LINES = 1) in these tests, so every cut
the real, coarser cutting could make is exercised on the real templates: every shipped spec and random
specs from the property tests' strategies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import gradgen.fmt
from gradgen.fmt import _CUT, _black, _split_body, black_format, black_format_all
from gradgen.pipeline import plan_text
from gradgen.render import render_module, render_test

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/strategies.py, any import mode
from strategies import ALL_OPS, Plan, cases

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))


@pytest.fixture
def every_cut(monkeypatch):
    """Format everything in pieces, cut at every safe place."""
    monkeypatch.setattr(gradgen.fmt, "PIECEWISE_LINES", 0)
    monkeypatch.setattr(gradgen.fmt, "PIECE_LINES", 1)


def rendered(path: str, text: str) -> list[str]:
    plan, _ = plan_text(path, text)
    return [render_module(plan), render_test(plan)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_pieces_give_the_whole(spec, every_cut):
    for source in rendered(f"specs/{spec.name}", spec.read_text(encoding="utf-8")):
        tops = [_split_body(top) for top in _CUT.split(source)]
        assert len(tops) > 3 and sum(len(p) for p in tops) > len(tops)  # there were cuts
        assert black_format(source) == _black(source)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases(Plan(ALL_OPS, max_rank=4, input_rank=3, min_steps=2, max_steps=6)))
def test_pieces_give_the_whole_for_random_specs(case):
    gradgen.fmt.PIECEWISE_LINES, gradgen.fmt.PIECE_LINES = 0, 1
    try:
        for source in rendered("prop.yaml", case.text):
            assert black_format(source) == _black(source)
    finally:
        gradgen.fmt.PIECEWISE_LINES, gradgen.fmt.PIECE_LINES = 4000, 400


def test_a_long_module_is_cut_and_formatted_the_same(monkeypatch):
    """A 300-step RNN (about 6,000 lines) takes the real path: cut into pieces of 400 lines."""
    lines = ["inputs:", "  x: [N, H]", "  U: [H, H]", "  b: [H]", "graph:", "  h0: tanh(x)"]
    lines += [f"  h{t}: tanh(h{t - 1} @ U + b)" for t in range(1, 300)]
    lines.append("  loss: mean(h299 * h299)")
    module, test = rendered("rnn.yaml", "\n".join(lines) + "\n")
    assert module.count("\n") > gradgen.fmt.PIECEWISE_LINES
    assert sum(len(_split_body(top)) for top in _CUT.split(module)) > 10
    pools = []
    real = gradgen.fmt._format_in_parallel
    monkeypatch.setattr(gradgen.fmt, "_format_in_parallel", lambda *a: pools.append(a) or real(*a))
    assert black_format_all([module, test]) == [_black(module), _black(test)]
    if sys.platform == "linux" and gradgen.fmt._cpus() > 1:
        assert len(pools) == 1 and len(pools[0][0]) > 10  # the pieces of both went to one pool


def test_a_cut_that_black_cannot_parse_falls_back_to_the_whole(every_cut, monkeypatch):
    """Were a cut ever misjudged, the piece would not parse: the module is then formatted whole."""
    source = "def f(x):\n    y = (x +\n    x)\n    z = y\n    return z\n"
    monkeypatch.setattr(gradgen.fmt, "_safe_cut", lambda before, line: True)
    assert black_format(source) == _black(source) == "def f(x):\n    y = x + x\n    z = y\n    return z\n"


@pytest.mark.parametrize(
    ("before", "line", "ok"),
    [
        ("    a = b  # [N, H]", "    c = d", True),
        ("    a = b", "    # c = d", False),  # a comment belongs to what follows it
        ("    # comment", "    c = d", False),
        ("        raise ValueError(x)", "    c = d", True),  # the end of a nested block
        ("        raise ValueError(x)", "        c = d", False),  # inside a nested block
        ("    if a:", "        b = 1", False),
        ("    x = f(", "    a)", False),
        ("    x = [1,", "    y = 2", False),
        ("    a = b", "    else:", False),
        ("    a = b", "    def g():", False),
        ('    """Doc."""', "    c = d", False),
        ("    a = b \\", "    + c", False),
    ],
)
def test_safe_cut(before, line, ok):
    assert gradgen.fmt._safe_cut(before, line) is ok


def test_a_body_with_a_nested_def_is_not_cut(every_cut):
    flat = "def f():\n" + "    a = 1\n" * 5 + "    b = 2\n" * 5
    assert len(_split_body(flat)) > 2
    top = "def f():\n" + "    a = 1\n" * 5 + "    def g():\n        return 1\n" + "    b = g()\n" * 5
    assert gradgen.fmt._split_body(top) == [top]


def test_the_collector_is_back_on_after_formatting():
    import gc

    assert gc.isenabled()
    black_format("x  =  1\n")
    assert gc.isenabled()
    gc.disable()
    try:
        black_format("x  =  1\n")
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_black_errors_are_black_errors(every_cut):
    import black

    source = "x = 1\n\n\ndef f(:\n    pass\n\n\ndef g():\n    a = 1\n    b = 2\n"
    with pytest.raises(black.InvalidInput) as whole:
        _black(source)
    with pytest.raises(black.InvalidInput) as pieces:
        black_format(source)
    assert str(pieces.value) == str(whole.value)  # the line number is the module's, not a piece's
