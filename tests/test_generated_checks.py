"""The generated tests on purpose-built specs: no false failure where finite differences are noisy, and a
clear failure where a check would prove nothing or a formulation is not finite at large magnitudes."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

from gradgen.pipeline import build_text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/mutants.py, any import mode
from mutants import run_session


def build_into(folder: Path, text: str) -> Path:
    """Write the module and test file of a spec into ``folder/<name>/``; return the test file."""
    built = build_text("t.yaml", textwrap.dedent(text))
    (folder / built.name).mkdir(parents=True)
    for name, content in built.files:
        (folder / built.name / name).write_text(content)
    return folder / built.name / built.files[1][0]


def load(test_file: Path):
    spec = importlib.util.spec_from_file_location(f"gradgen_check_{test_file.stem}", test_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CANCELS = """
    name: cancels
    inputs:
      x: [N, D]
      w: [D]
    graph:
      z: x @ w * 6.0 + 12.0
      loss: sum(1 - sigmoid(z))
"""


def test_a_forward_that_cancels_gives_no_false_failure(tmp_path):
    test_file = build_into(tmp_path, CANCELS)
    outcomes = run_session(tmp_path)
    assert not outcomes.failed, outcomes.failed
    # and the noise is real: for some element the central difference is far from the gradient relative
    # to its size, so only the measured noise bound keeps the check from failing
    t = load(test_file)
    worst = 0.0
    for seed in (0, 1, 2):
        inputs = t.make_inputs(seed)
        out, cache = t.m.forward(**inputs)
        dout = t._dout(seed, np.shape(out))
        analytic = t.m.backward(dout, cache).x
        numeric, noise = t._numeric_gradient(inputs, "x", dout, analytic)
        seen = numeric != 0
        worst = max(worst, float(np.max(np.abs(analytic - numeric)[seen] / np.abs(numeric[seen]))))
        assert np.all(np.abs(analytic - numeric) <= 1e-6 * np.abs(numeric) + 4 * noise)
    assert worst > 1e-3


def test_a_gradient_that_is_zero_on_every_draw_fails_as_vacuous(tmp_path):
    build_into(tmp_path, "name: flat\ninputs:\n  x: [N, C]\ngraph:\n  loss: sum(softmax(x, axis=-1))\n")
    failure = run_session(tmp_path).failed["flat"]
    assert "indistinguishable from 0" in failure  # the elementwise or the directional check


def test_a_formulation_that_overflows_at_large_magnitudes_fails(tmp_path):
    build_into(tmp_path, "name: lossy\ninputs:\n  x: [N]\ngraph:\n  loss: sum(log(1 - tanh(x)))\n")
    failure = run_session(tmp_path).failed["lossy"]
    assert "test_large_magnitudes_stay_finite" in failure


def test_labels_are_distinct_where_possible_and_indices_repeat(tmp_path):
    t = load(
        build_into(
            tmp_path,
            """
            name: picks
            inputs:
              tok: {shape: [B], dtype: int}
              y: {shape: [B], dtype: int}
              E: [V, C]
            graph:
              loss: softmax_cross_entropy(take(E, tok), y)
            """,
        )
    )
    assert t.SIZES["B"] < t.SIZES["V"] < t.SIZES["C"]  # distinct indices would fit: repeats are drawn
    for seed in range(20):
        inputs = t.make_inputs(seed)
        y, tok = inputs["y"], inputs["tok"].ravel()
        assert len(set(y.tolist())) == y.size  # so y[::-1] differs from y
        assert len(set(tok.tolist())) < tok.size  # a repeated index
        assert tok.min() >= 0 and tok.max() < t.SIZES["V"] and y.min() >= 0 and y.max() < t.SIZES["C"]
