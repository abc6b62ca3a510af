"""Static indexing, split and stack, stage by stage: lowering (items, tuple targets, places), the
proofs on dims (proven, refused, left to run time), shapes, the emitted lines, the run-time size
checks and the sizes the generated tests draw, and the derivative kinds through the graph rules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from gradgen.diagnostics import SpecError
from gradgen.dims import Dim
from gradgen.load import load
from gradgen.lower import lower
from gradgen.ops_index import FULL, NEW, dim_text, index_text, nonneg, parts
from gradgen.pipeline import build_text, plan_text, typed_text
from gradgen.render import _fitting

N, D, K = Dim.sym("N"), Dim.sym("D"), Dim.sym("K")


def c(k: int) -> Dim:
    return Dim.const(k)


def graph_of(text: str):
    return lower(load("spec.yaml", text))[0]


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        typed_text("spec.yaml", text)
    return [str(d) for d in info.value.diagnostics]


def shape_of(text: str, name: str):
    tg, _ = typed_text("spec.yaml", text)
    node = next(e.node for e in tg.graph.entries if e.name == name)
    return str(tg.types[node])


def module(text: str, tmp_path, name="m"):
    files = dict(build_text(f"{name}.yaml", text).files)
    path = tmp_path / f"{name}.py"
    path.write_text(files[f"{name}.py"], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"slicing_{name}", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return files[f"{name}.py"], m


XD = "inputs:\n  x: [N, D]\n  k: [K]\ngraph:\n"


# --------------------------------------------------------------------------------------------------
# lowering


def test_an_index_is_one_node_with_its_items():
    g = graph_of(XD + "  a: x[:, 0]\n  b: x[None, ..., -K:]\n  c: x[1:D - 1:2]\n")
    a, b, cc = (g.nodes[e.node] for e in g.entries)
    assert a.op == b.op == cc.op == "index"
    assert a.attr("index") == (FULL, ("int", c(0)))
    assert b.attr("index") == (NEW, ("...",), ("slice", c(-1) * K, None, None))
    assert cc.attr("index") == (("slice", c(1), D + c(-1), 2),)


def test_a_value_named_like_a_dim_is_not_a_bound():
    (msg,) = errors("inputs:\n  x: [N, D]\n  K: [K]\ngraph:\n  a: x[:, :K]\n")
    assert msg.startswith("spec.yaml:5:12: error: the stop 'K' is a tensor"), msg


def test_an_unknown_name_in_an_index_suggests_a_dim():
    (msg,) = errors(XD + "  a: x[:, :Kk]\n")
    assert "unknown dim 'Kk' in an index" in msg and "did you mean 'K'?" in msg, msg


def test_identical_indexes_are_computed_once():
    g = graph_of(XD + "  a: x[:, 0] + x[:, 0]\n")
    assert [n.op for n in g.nodes].count("index") == 1


def test_a_tuple_target_makes_one_entry_per_name_each_with_its_place():
    g = graph_of("inputs:\n  z: [N, 4*D]\n  d: [D]\ngraph:\n  i, f, g, o: split(z, 4, axis=-1)\n  y: i * o\n")
    names = [e.name for e in g.entries]
    assert names == ["i", "f", "g", "o", "y"]
    places = {e.name: (e.place.line, e.place.col) for e in g.entries}
    assert places["i"] == (5, 3) and places["f"] == (5, 6) and places["o"] == (5, 12)
    pieces = [g.nodes[e.node] for e in g.entries[:4]]
    assert [p.attr("piece") for p in pieces] == [0, 1, 2, 3]
    assert [p.entry for p in pieces] == ["i", "f", "g", "o"]
    assert g.entries[1].text == "split(z, 4, axis=-1)[1]"


def test_a_tuple_target_in_brackets_and_a_repeated_name():
    g = graph_of("inputs:\n  z: [N, 2*D]\n  d: [D]\ngraph:\n  (a, b): split(z, 2, axis=1)\n  y: a - b\n")
    assert [e.name for e in g.entries] == ["a", "b", "y"]
    with pytest.raises(SpecError) as info:
        graph_of("inputs:\n  z: [N, 2*D]\n  d: [D]\ngraph:\n  a, z: split(z, 2, axis=1)\n")
    (msg,) = [str(d) for d in info.value.diagnostics]
    assert msg.startswith("spec.yaml:5:6: error: graph entry 'z' is already defined as an input"), msg


def test_a_failed_split_leaves_its_names_known():
    msgs = errors("inputs:\n  z: [N, 2*D]\n  d: [D]\ngraph:\n  a, b: split(z, 3)\n  y: a * b\n")
    assert len(msgs) == 1 and "split gives 3 pieces, but the target names 2" in msgs[0]


# --------------------------------------------------------------------------------------------------
# proofs on dims


def test_nonneg_holds_for_every_size_including_zero():
    assert nonneg(D) and nonneg(c(0)) and nonneg(D * K + c(2))
    assert not nonneg(D + c(-1))  # D may be 0
    assert not nonneg(D + c(-1) * K)


def test_dims_print_as_written():
    assert dim_text(D + c(-1) * K) == "D - K"
    assert dim_text(c(-1) * K) == "-K"
    assert dim_text(c(0)) == "0"
    assert dim_text(c(2) * D + c(-1)) == "2*D - 1"
    assert index_text((FULL, ("int", c(-1)), NEW, ("slice", K, None, 2))) == "[:, -1, None, K::2]"
    assert parts(D + c(-1) * K) == (D, K)


@pytest.mark.parametrize(
    "expr, shape",
    [
        ("x[:, 0]", "[N]"),
        ("x[-1]", "[D]"),
        ("x[..., -K:]", "[N, K]"),
        ("x[:, :K]", "[N, K]"),
        ("x[1:-1]", "[N - 2, D]"),
        ("x[None, :, None]", "[1, N, 1, D]"),
        ("x[..., None]", "[N, D, 1]"),
        ("x[:, D - K:]", "[N, K]"),
        ("z[:, K:3*K]", "[N, 2*K]"),
        ("z[:, 1::2]", "[N, 2*K]"),
        ("w[:, 1::3]", "[N, 2*K]"),
        ("x[:, ::1]", "[N, D]"),
    ],
)
def test_index_shapes(expr, shape):
    text = "inputs:\n  x: [N, D]\n  z: [N, 4*K]\n  w: [N, 6*K]\n  k: [K]\ngraph:\n  a: " + expr + "\n"
    assert shape_of(text, "a").replace(" float", "") == shape


@pytest.mark.parametrize(
    "expr, message",
    [
        ("x[:, 2]", "needs 2 <= 1, which never holds"),
        ("x[:, -3]", "needs 0 <= -1, which never holds"),
        ("x[:, 1:1]", ""),  # empty: allowed (length 0)
        ("x[:, 2:1]", "needs 2 <= 1, which never holds"),
        ("x[0, 0, 0]", "too many indices: [0, 0, 0] indexes 3 axes, but x, line 2 has rank 2"),
        ("y[:, ::2]", "has N elements before the step"),
    ],
)
def test_index_shape_errors(expr, message):
    text = "inputs:\n  x: [N, 2]\n  y: [D, N]\ngraph:\n  a: " + expr + "\n"
    if not message:
        assert shape_of(text, "a").startswith("[N, 0]")
        return
    (msg,) = errors(text)
    assert msg.startswith("spec.yaml:5:6: error: "), msg
    assert message in msg, msg


def test_split_shapes_and_errors():
    text = "inputs:\n  z: [N, 4*D]\n  d: [D]\ngraph:\n  a, b: split(z, [D, 3*D], axis=-1)\n  y: b\n"
    assert shape_of(text, "a").startswith("[N, D]") and shape_of(text, "b").startswith("[N, 3*D]")
    (msg,) = errors(text.replace("[D, 3*D]", "[D, 2*D]"))
    assert "add up to 3*D, but axis 1 of z, line 2 has size 4*D" in msg and "not split points" in msg
    (msg,) = errors(text.replace("[D, 3*D]", "[5*D + 1, -D - 1]"))
    assert "a size of split must not be negative, and -D - 1 is" in msg
    (msg,) = errors(text.replace("[D, 3*D]", "3"))
    assert "split gives 3 pieces, but the target names 2" in msg


def test_stack_shape():
    text = "inputs:\n  x: [N, D]\ngraph:\n  s: stack((x, x, x), axis=-1)\n  t: stack([x, x])\n"
    assert shape_of(text, "s").startswith("[N, D, 3]") and shape_of(text, "t").startswith("[2, N, D]")


# --------------------------------------------------------------------------------------------------
# emission and run-time checks


def test_the_forward_line_is_the_index_as_written_and_a_view(tmp_path):
    text = "inputs:\n  x: [N, D]\n  k: [K]\ngraph:\n  a: x[..., -K:]\n  loss: sum(a * a)\nwrt: [x]\n"
    source, m = module(text, tmp_path)
    assert "a = x[..., -K:]" in source
    assert "dx = np.zeros((N, D), dtype=dtype)" in source and "dx[..., -K:] = da" in source
    x = np.arange(12.0).reshape(3, 4)
    out, cache = m.forward(x, np.zeros(2))
    assert out == np.sum(x[:, -2:] ** 2)
    np.testing.assert_array_equal(m.backward(1.0, cache).x, np.where(np.arange(4) >= 2, 2 * x, 0))


def test_sizes_an_index_needs_are_checked_when_the_module_runs(tmp_path):
    text = "inputs:\n  x: [N, D]\n  k: [K]\ngraph:\n  a: x[:, :K]\n  b: x[-K:]\n  loss: sum(a) + sum(b)\nwrt: [x]\n"
    source, m = module(text, tmp_path)
    assert "if K > D:" in source and "if 1 > K:" in source and "if K > N:" in source
    with pytest.raises(ValueError, match=r"a: the index \[:, :K\] is out of range: it needs K <= D"):
        m.forward(np.zeros((5, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"b: the index \[-K:\] is out of range: it needs 1 <= K"):
        m.forward(np.zeros((5, 4)), np.zeros(0))  # x[-0:] would be all of x
    assert m.forward(np.ones((5, 4)), np.zeros(3))[0] == 3 * 5 + 3 * 4


def test_proven_bounds_need_no_run_time_check(tmp_path):
    plan, _ = plan_text("s.yaml", "inputs:\n  z: [N, 4*D]\n  d: [D]\ngraph:\n  a: z[:, D:2*D]\n")
    assert plan.order_checks == ()
    plan, _ = plan_text("s.yaml", "inputs:\n  x: [N, D]\ngraph:\n  a: x[:, 1:]\n")
    assert [m for _, _, m in plan.order_checks] == ["a: the index [:, 1:] is out of range: it needs 1 <= D"]


def test_the_test_sizes_meet_what_the_indexes_need():
    sizes = _fitting({"N": 3, "D": 4, "K": 5}, ((K, D), (c(2), N)))
    assert sizes["K"] <= sizes["D"] and len(set(sizes.values())) == 3
    assert _fitting({"D": 3}, ((c(1), D),)) == {"D": 3}


def test_split_emits_slices_and_value_and_grad_matches_backward(tmp_path):
    text = (
        "inputs:\n  z: [N, 3*D]\n  d: [D]\ngraph:\n  a, b: split(z, [D, 2*D], axis=1)\n"
        "  loss: sum(a * b[:, :D]) + sum(square(b))\nwrt: [z]\n"
    )
    source, m = module(text, tmp_path)
    assert "a = z[:, :D]" in source and "b = z[:, D:]" in source
    z = np.random.default_rng(0).standard_normal((4, 6))
    loss, grads = m.value_and_grad(z, np.zeros(2))
    a, b = z[:, :2], z[:, 2:]
    want = np.concatenate((b[:, :2], 2 * b + np.pad(a, ((0, 0), (0, 2)))), axis=1)
    np.testing.assert_allclose(grads.z, want)
    np.testing.assert_allclose(loss, np.sum(a * b[:, :2]) + np.sum(b**2))


def test_derivative_kinds_go_through_the_graph_rules(tmp_path):
    text = (
        "inputs:\n  x: [N, D]\n  k: [K]\ngraph:\n  s: stack((x[:, 0], x[-1, :N] * 2), axis=1)\n"
        "  loss: sum(tanh(s) * x[:, None, :2])\nwrt: [x]\nderivatives: [vjp, jvp, hvp, hessian]\n"
    )
    _, m = module(text, tmp_path)
    rng = np.random.default_rng(1)
    x, v = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))

    def f(x):
        s = np.stack((x[:, 0], x[-1, :3] * 2), axis=1)
        return np.sum(np.tanh(s) * x[:, None, :2])

    eps = 1e-6
    slope = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    _, tangent = m.jvp(x, np.zeros(2), tangents=m.Wrt(x=v))
    np.testing.assert_allclose(tangent, slope, rtol=1e-6)
    grad = m.value_and_grad(x, np.zeros(2))[1].x
    grad_v = m.value_and_grad(x + eps * v, np.zeros(2))[1].x - m.value_and_grad(x - eps * v, np.zeros(2))[1].x
    np.testing.assert_allclose(
        m.hvp(x, np.zeros(2), v=m.Wrt(x=v))[2].x, grad_v / (2 * eps), rtol=1e-5, atol=1e-7
    )
    assert np.isclose(np.sum(grad * v), slope)


BLOCK = """
inputs:
  x: [B, T, E]
  W1: [E, 3*E]
  W2: [E, 3*E]
blocks:
  mix:
    params: {x: [B, T, D], W: [D, 3*D]}
    graph:
      qkv: x @ W
      q, k, v: split(qkv, 3, axis=-1)
      out: tanh(q) * k + v
graph:
  h1: mix(x, W1)
  h2: mix(h1, W2)
  loss: sum(h2 * h2)
"""


def test_a_tuple_target_in_a_block_is_inlined_per_call(tmp_path):
    source, m = module(BLOCK, tmp_path, "blk")
    assert "# h2: mix -> k = split(qkv, 3, axis=-1)[1] (block mix, line 11)" in source
    assert "dh2_qkv[:, :, E : 2 * E] += dh2_k" in source and "dh1_qkv[:, :, :E] += dh1_q" in source
    rng = np.random.default_rng(4)
    x, W1, W2 = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 12)), rng.standard_normal((4, 12))

    def f(x, W1, W2):
        h = x
        for W in (W1, W2):
            q, k, v = np.split(h @ W, 3, axis=-1)
            h = np.tanh(q) * k + v
        return np.sum(h * h)

    loss, grads = m.value_and_grad(x, W1, W2)
    assert np.isclose(loss, f(x, W1, W2))
    v = rng.standard_normal(W1.shape)
    eps = 1e-6
    slope = (f(x, W1 + eps * v, W2) - f(x, W1 - eps * v, W2)) / (2 * eps)
    assert np.isclose(np.sum(grads.W1 * v), slope, rtol=1e-6)


def test_split_errors_in_a_block_point_into_the_block():
    text = BLOCK.replace("split(qkv, 3, axis=-1)", "split(qkv, 2, axis=-1)")
    (msg,) = errors(text)
    assert msg.startswith("spec.yaml:11:27: error: split gives 2 pieces, but the target names 3"), msg
    text = BLOCK.replace("q, k, v:", "q, x, v:")
    (msg,) = errors(text)
    assert msg.startswith("spec.yaml:11:10: error: 'x' is already defined in block 'mix' (line 8)"), msg


def test_a_split_size_that_may_be_negative_is_checked_when_the_module_runs(tmp_path):
    text = "inputs:\n  x: [N, D]\ngraph:\n  a, b: split(x, [1, D - 1], axis=1)\n  y: sum(a) + sum(b * b)\n"
    source, m = module(text, tmp_path, "first_column")
    assert "a = x[:, :1]" in source and "b = x[:, 1:]" in source
    with pytest.raises(ValueError, match=r"a: the split piece \[:, 0:1\] is out of range: it needs 1 <= D"):
        m.forward(np.ones((3, 0)))
    assert m.forward(np.ones((3, 4)))[0] == 3 + 9


def test_a_slice_of_a_mask_is_a_mask(tmp_path):
    text = (
        "inputs:\n  x: [T, T]\n  m: {shape: [S, S], dtype: bool}\ngraph:\n"
        "  a: where(m[:T, :T], x, 0.0)\n  loss: sum(a * a)\n"
    )
    source, mod = module(text, tmp_path, "mask_slice")
    assert "m[:T, :T]" in source and "if T > S:" in source
    x = np.arange(4.0).reshape(2, 2)
    causal = np.tril(np.ones((3, 3), dtype=bool))
    loss, grads = mod.value_and_grad(x, causal)
    assert loss == 0 + 4 + 9 and np.array_equal(grads.x, np.where(causal[:2, :2], 2 * x, 0))
    (msg,) = errors("inputs:\n  x: [S]\n  m: {shape: [S], dtype: bool}\ngraph:\n  a: m[0:1] * x[0:1]\n")
    assert "a mask (" in msg and "cannot be used in arithmetic (*)" in msg, msg
