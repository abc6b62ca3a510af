"""Masks per stage: the expression tree (& | ~), lowering of comparisons and & | ~, the shape rules of
comparisons and where, the plan (no cotangent into a mask), and the generated module's run-time checks."""

from __future__ import annotations

import numpy as np
import pytest

from gradgen.diagnostics import SpecError
from gradgen.expr import Bin, Invert, Lit, Var
from gradgen.fmt import black_format
from gradgen.load import load
from gradgen.lower import lower
from gradgen.pipeline import plan_text
from gradgen.render import render_module
from gradgen.shapes import infer

x, y, z = Var("x"), Var("y"), Var("z")


def test_mask_operators_render_with_the_brackets_python_needs():
    assert Bin("&", Bin(">", x, Lit("0")), Bin("<", y, Lit("1"))).render() == "(x > 0) & (y < 1)"
    assert Invert(Bin(">=", x, y)).render() == "~(x >= y)"
    assert Bin("|", Bin("&", x, y), z).render() == "x & y | z"
    assert Bin("&", x, Bin("|", y, z)).render() == "x & (y | z)"
    assert Bin("&", Invert(x), y).render() == "~x & y"
    assert Invert(x).rename({"x": "m"}).render() == "~m" and Invert(x).vars() == ["x"]


def _typed(inputs: str, graph: str):
    text = "inputs:\n" + inputs + "graph:\n" + graph
    doc = load("t.yaml", text)
    g, _ = lower(doc)
    return infer(g)


def test_comparisons_and_logic_lower_to_mask_ops():
    tg = _typed(
        "  x: [N, D]\n  z: [N, D]\n  m: {shape: [D], dtype: bool}\n",
        "  k: (x > 0) & m | ~(z <= 1.5)\n  s: sum(where(k, x, 0.0))\n",
    )
    ops = [n.op for n in tg.graph.nodes if n.op != "input"]
    assert ops[:5] == ["greater", "logical_and", "less_equal", "logical_not", "logical_or"]
    k = next(n for n in tg.graph.nodes if n.name == "k")
    assert tg.types[k.id].dtype == "bool" and [str(d) for d in tg.types[k.id].shape] == ["N", "D"]


@pytest.mark.parametrize(
    "symbol, op", [("<", "less"), ("<=", "less_equal"), ("==", "equal"), ("!=", "not_equal")]
)
def test_each_comparison_is_its_op_with_a_number_on_either_side(symbol, op):
    tg = _typed("  x: [N]\n", f"  s: sum(where(0.5 {symbol} x, x, -x))\n")
    node = next(n for n in tg.graph.nodes if n.op == op)
    assert node.args[0].value == 0.5 and tg.types[node.id].dtype == "bool"


def test_where_broadcasts_a_small_mask_over_batch_axes():
    tg = _typed(
        "  s: [B, H, T, T]\n  m: {shape: [T, T], dtype: bool}\n", "  w: where(m, s, -1e9)\n  l: sum(w)\n"
    )
    w = next(n for n in tg.graph.nodes if n.name == "w")
    assert [str(d) for d in tg.types[w.id].shape] == ["B", "H", "T", "T"] and tg.types[w.id].dtype == "float"


def test_a_mask_in_arithmetic_is_an_error_at_the_operator():
    with pytest.raises(SpecError) as e:
        _typed("  x: [N]\n", "  s: sum(x * (x > 0))\n")
    (d,) = e.value.diagnostics
    assert (d.place.line, d.place.col) == (4, 12) and "write where(x > 0, a, b)" in d.message


SPEC = """
inputs:
  x: [N]
  z: [N]
  m: {shape: [N], dtype: bool}
graph:
  picked: where(m, x, where(x > z, z, 0.0))
  loss: sum(picked * x)
"""


def _module():
    plan, _ = plan_text("masks.yaml", SPEC)
    source = black_format(render_module(plan))
    ns: dict = {}
    exec(compile(source, "masks.py", "exec"), ns)
    return source, ns


def test_no_cotangent_flows_into_a_mask_or_a_comparison():
    source, ns = _module()
    backward = source[source.index("def backward") : source.index("def value_and_grad")]
    assert "dm" not in backward.replace("dmul", "")  # no cotangent of the mask input
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal(6), rng.standard_normal(6)
    m = np.array([True, False, False, True, False, False])
    _, grads = ns["value_and_grad"](x, z, m)
    # x's gradient: where m holds, d(x * x) = 2x; elsewhere x * [x > z] z-branch: picked is z or 0
    inner = np.where(x > z, z, 0.0)
    np.testing.assert_allclose(grads.x, np.where(m, 2 * x, inner))
    # z's gradient: only through the selected side, never through the comparison x > z
    np.testing.assert_allclose(grads.z, np.where(~m & (x > z), x, 0.0))


def test_generated_module_accepts_exactly_bool_masks():
    _, ns = _module()
    x, z = np.ones(3), np.zeros(3)
    ok = ns["forward"](x, z, [True, False, True])[0]
    assert ok == ns["forward"](x, z, np.array([True, False, True]))[0]
    for bad in (np.array([1, 0, 1]), np.array([1.0, 0.0, 1.0])):
        with pytest.raises(ValueError, match=rf"^m: expected a bool mask, got an array of dtype {bad.dtype}"):
            ns["forward"](x, z, bad)
    with pytest.raises(ValueError, match=r"^x: expected real numbers, got an array of dtype bool"):
        ns["forward"](np.ones(3, bool), z, np.ones(3, bool))
    with pytest.raises(ValueError, match=r"m: dim N is 2 here but 3 from x"):
        ns["forward"](x, z, np.ones(2, bool))


def test_float32_stays_float32_through_where_and_a_mask_input():
    _, ns = _module()
    x = np.arange(4, dtype=np.float32)
    value, grads = ns["value_and_grad"](x, x[::-1].copy(), np.array([True, False, True, False]))
    assert value.dtype == np.float32 and grads.x.dtype == np.float32 and grads.z.dtype == np.float32


MEAN = """
inputs:
  x: [N, D]
  m: {shape: [N, D], dtype: bool}
graph:
  count: sum(where(m, 1.0, 0.0), axis=-1)
  loss: sum(sum(where(m, x * x, 0.0), axis=-1) / count)
"""


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_mask_as_numbers_averages_over_its_true_entries(dtype):
    plan, _ = plan_text("mean.yaml", MEAN)
    source = black_format(render_module(plan))
    assert "np.where(m, 1.0, 0.0).astype(x.dtype)" in source
    ns: dict = {}
    exec(compile(source, "mean.py", "exec"), ns)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype(dtype)
    m = rng.random((4, 5)) < 0.6
    m[:, 0] = True
    value, grads = ns["value_and_grad"](x, m)
    count = m.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(value, np.sum(np.where(m, x * x, 0) / count), rtol=1e-6)
    np.testing.assert_allclose(grads.x, np.where(m, 2 * x / count, 0), rtol=1e-6)
    assert value.dtype == dtype and grads.x.dtype == dtype


def test_int_tensors_compare_with_ints_and_numbers_and_the_masks_select_weights(tmp_path):
    """argmax(logp) != y and y == 0 are masks; the module matches a NumPy reference and its
    generated tests pass (they draw y as labels and compare it)."""
    import subprocess
    import sys
    from pathlib import Path

    from gradgen.pipeline import build_text

    spec = Path(__file__).resolve().parents[1] / "specs" / "hard_examples.yaml"
    files = dict(build_text(str(spec), spec.read_text()).files)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hard_examples.py"]
    assert subprocess.run(run, cwd=tmp_path, capture_output=True).returncode == 0
    ns: dict = {}
    exec(compile(files["hard_examples.py"], "hard_examples.py", "exec"), ns)
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((7, 4)), rng.standard_normal((4, 3))
    y = rng.integers(0, 3, size=(7, 1))
    z = X @ W
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    weight = np.where(y == 0, 0.5, 1.0) * np.where(logp.argmax(axis=1)[:, None] != y, 2.0, 1.0)
    want = np.mean(weight * -np.take_along_axis(logp, y, axis=1))
    loss, _ = ns["forward"](X, y, W)
    assert abs(loss - want) <= 1e-12 * abs(want)
    assert set(np.unique(weight)) >= {1.0, 2.0}  # both masks matter on this draw
