"""Stage 6, format: a long module is formatted in pieces, in parallel, with the same result."""

from __future__ import annotations

from pathlib import Path

import pytest

import gradgen.fmt
from gradgen.fmt import _CUT, _black, black_format
from gradgen.pipeline import plan_text
from gradgen.render import render_module, render_test

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_formatting_the_pieces_apart_gives_the_whole(spec, monkeypatch):
    plan, _ = plan_text(f"specs/{spec.name}", spec.read_text(encoding="utf-8"))
    for source in (render_module(plan), render_test(plan)):
        pieces = _CUT.split(source)
        assert len(pieces) > 3  # the cut points exist in both templates
        whole = _black(source)
        assert "\n\n".join(_black(p) for p in pieces) == whole
        monkeypatch.setattr(gradgen.fmt, "PARALLEL_LINES", 0)  # the parallel path, forced
        assert black_format(source) == whole
        monkeypatch.undo()


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


def test_black_errors_still_raise_from_a_worker(monkeypatch):
    import black

    monkeypatch.setattr(gradgen.fmt, "PARALLEL_LINES", 0)
    with pytest.raises(black.InvalidInput):
        black_format("x = 1\n\n\ndef f(:\n    pass\n\n\ndef g():\n    pass\n")
