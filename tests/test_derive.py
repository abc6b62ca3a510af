"""Unit tests for the derivative layer: the builder (typed, shared nodes; symbolic zeros; numbers), the
transformations (reverse sweep, forward mode, batching) and what they compose into, the emission of
derivative programs, and the checks that refuse a kind a spec cannot have.

Where a test looks at generated code it also runs it against finite differences, so a program that
reads well but computes the wrong thing still fails.
"""

from __future__ import annotations

import dataclasses
import re
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from gradgen import derive, ops
from gradgen.builder import Builder, BuildError, const, size
from gradgen.cli import app
from gradgen.diagnostics import SpecError
from gradgen.dims import Dim, at_least
from gradgen.emit import Emitter
from gradgen.functions import jacobian_mode
from gradgen.load import load
from gradgen.lower import lower
from gradgen.pipeline import build_text
from gradgen.shapes import infer

TANH_MLP = """\
name: tanh_mlp
inputs:
  x: [N, D]
  y: {shape: [N], dtype: int}
  W1: [D, H]
  b1: [H]
  W2: [H, C]
graph:
  h: tanh(x @ W1 + b1)
  loss: softmax_cross_entropy(h @ W2, y)
wrt: [W1, b1, W2]
DERIVS
"""
SIZES = {"N": 5, "D": 3, "H": 4, "C": 6}


def typed(text: str, path: str = "spec.yaml"):
    graph, _ = lower(load(path, text))
    return infer(graph)


def module_from(text: str, name: str = "spec.yaml"):
    built = build_text(name, text)
    files = dict(built.files)
    mod = types.ModuleType(built.name)
    exec(compile(files[f"{built.name}.py"], f"{built.name}.py", "exec"), mod.__dict__)
    return mod, files[f"{built.name}.py"]


def mlp_inputs(seed=0):
    rng = np.random.default_rng(seed)
    N, D, H, C = (SIZES[k] for k in "NDHC")
    return {
        "x": rng.standard_normal((N, D)),
        "y": rng.integers(0, C, size=N),
        "W1": rng.standard_normal((D, H)),
        "b1": rng.standard_normal(H),
        "W2": rng.standard_normal((H, C)),
    }


def emitted(prog, tg):
    dims = {d: d for d, _, _ in tg.graph.dim_origin}
    return Emitter(prog, dims, {n.name for n in tg.graph.nodes if n.name}).emit()


# --------------------------------------------------------------------------------------------------
# the builder


def test_builder_shares_equal_nodes_and_a_rule_applied_twice_adds_nothing():
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    b = Builder(tg)
    h = next(n.id for n in tg.graph.nodes if n.name == "h")
    first = b.op("softmax", h, axis=-1)
    count = len(b.nodes)
    assert b.op("softmax", h, axis=-1) == first
    assert len(b.nodes) == count
    # the spec's own nodes are shared too: tanh of the same operand is the node lower made
    z = tg.graph.nodes[h].args[0]
    assert b.op("tanh", z) == h


def test_builder_arithmetic_knows_zero_one_and_negation():
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    b = Builder(tg)
    h = next(n.id for n in tg.graph.nodes if n.name == "h")
    assert b.add(None, h) == h and b.add(h, None) == h and b.mul(h, None) is None
    assert b.mul(const(1), h) == h and b.div(h, const(1)) == h
    assert b.neg(b.neg(h)) == h
    assert b.nodes[b.mul(const(-1), h)].op == "neg"
    assert b.nodes[b.add(h, b.neg(h))].op == "sub"
    assert b.sub(None, h) == b.neg(h)


def test_a_number_becomes_an_array_of_the_dtype_before_it_meets_a_mask_or_a_view():
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    b = Builder(tg)
    h = next(n.id for n in tg.graph.nodes if n.name == "h")
    third = b.div(const(1), size(Dim.sym("N")))  # 1 / N: a Python number at run time
    assert b.types[third].dtype == "number"
    mask = b.op("greater", h, const(0))
    assert b.types[mask].dtype == "bool"
    scaled = b.mul(third, mask)  # (1 / N) * mask would be float64 whatever the inputs are
    assert b.nodes[b.nodes[scaled].args[0]].op == "full"
    assert b.nodes[b.broadcast(third, b.shape(h))].op == "full"
    # times 1 keeps a mask a mask only where a float array meets it
    assert b.mul(const(1), mask) != mask


def test_a_filled_operand_is_used_as_its_value_when_the_other_has_the_full_shape():
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    b = Builder(tg)
    h = next(n.id for n in tg.graph.nodes if n.name == "h")
    third = b.div(const(1), size(Dim.sym("N")))
    product = b.mul(b.broadcast(third, b.shape(h)), h)
    assert set(b.nodes[product].args) == {third, h}


def test_a_node_that_does_not_type_check_is_a_build_error():
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    b = Builder(tg)
    x, w2 = (next(n.id for n in tg.graph.nodes if n.name == k) for k in ("x", "W2"))
    with pytest.raises(BuildError, match="matmul inner dims differ"):
        b.op("matmul", x, w2)


def test_sum_to_reduces_exactly_the_broadcast_axes():
    tg = typed("inputs:\n  X: [N, M]\n  r: [1, M]\ngraph:\n  B: X + r\n  A: sum(tanh(B))\n")
    b = Builder(tg)
    B = next(n.id for n in tg.graph.nodes if n.name == "B")
    N, M = Dim.sym("N"), Dim.sym("M")
    kept = b.sum_to(B, (Dim.const(1), M))
    assert b.shape(kept) == (Dim.const(1), M) and b.nodes[kept].attr("keepdims") is True
    assert b.shape(b.sum_to(B, (M,))) == (M,)
    assert b.sum_to(B, (N, M)) == B


# --------------------------------------------------------------------------------------------------
# dims


def test_at_least_proves_inequalities_for_every_size():
    N, D, H = Dim.sym("N"), Dim.sym("D"), Dim.sym("H")
    assert at_least(D + D * H + Dim.const(-1) * H, 0)  # rows: H <= D + D*H
    assert at_least(N * D + Dim.const(-1) * N, 0)
    assert not at_least(N + Dim.const(-1) * D, 0)  # not proven either way
    assert not at_least(D + Dim.const(-1) * N, 0)
    assert at_least(Dim.const(3), 1) and not at_least(Dim.const(0), 1)


@pytest.mark.parametrize(
    "inputs, expr, wrt, mode",
    [
        ("x: [D]\n  W: [H, D]", "sigmoid(W @ x)", "[x, W]", "rows"),  # H <= D + H*D
        ("x: [D]\n  W: [H, D]", "sigmoid(W @ x)", "[x]", "run time"),  # H vs D
        ("x: [N]\n  s: []", "concatenate((x * s, x * s))", "[s]", "columns"),  # 2 N > 1
        ("x: [N, D]", "sum(x)", "[x]", "rows"),  # one row: the gradient
    ],
)
def test_jacobian_mode_is_decided_when_the_dims_prove_it(inputs, expr, wrt, mode):
    tg = typed(f"inputs:\n  {inputs}\ngraph:\n  y: {expr}\nwrt: {wrt}\n")
    assert jacobian_mode(tg) == mode


# --------------------------------------------------------------------------------------------------
# programs and their emission


def test_hvp_is_forward_mode_over_the_reverse_sweep_in_one_pass():
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    prog = derive.hvp_program(tg)
    em = emitted(prog, tg)
    code = "\n".join(line.code for line in em.lines)
    # one forward pass (one tanh), the reverse sweep, and its tangents: no second forward, no differences
    assert code.count("np.tanh(") == 1
    assert "dh_dot" in code and "dW1_dot" in code
    rules = [line.comment for line in em.lines if line.comment]
    assert any(r.startswith("tanh JVP rule") for r in rules)
    assert any("differentiated in forward mode" in r for r in rules)


def test_a_third_order_derivative_needs_no_new_rule():
    """Forward mode over the Hessian-vector product program: d/dt H(x + t u) v, checked by differences."""
    tg = typed(TANH_MLP.replace("DERIVS", ""))
    hvp = derive.hvp_program(tg)
    b = Builder(hvp)
    wrt = list(tg.graph.wrt)
    seeds = {w: b.input(f"{b.nodes[w].name}_u", b.shape(w), w) for w in wrt}
    tan = derive.tangents(b, seeds)
    k = len(wrt)
    third = [b.zeros(b.shape(w)) if tan.get(o) is None else tan[o] for o, w in zip(hvp.outputs[1 + k :], wrt)]
    prog = b.finish(list(hvp.outputs) + third)
    em = emitted(prog, tg)
    params = ", ".join(i.name for i in tg.graph.inputs) + ", " + ", ".join(em.params)
    dims = (
        ", ".join(SIZES)
        + " = "
        + ", ".join(f"{k}" for k in ("x.shape[0]", "x.shape[1]", "W1.shape[1]", "W2.shape[1]"))
    )
    body = "\n".join("    " + line.code for line in em.lines if line.code)
    source = f"import numpy as np\n\ndef third({params}):\n    {dims}\n{body}\n    return {', '.join(em.returns)}\n"
    ns: dict = {}
    exec(source, ns)
    inputs = mlp_inputs(1)
    rng = np.random.default_rng(2)
    v = [rng.standard_normal(np.shape(inputs[tg.graph.nodes[w].name])) for w in wrt]
    u = [rng.standard_normal(np.shape(inputs[tg.graph.nodes[w].name])) for w in wrt]
    out = ns["third"](*inputs.values(), *v, *u)
    names = [tg.graph.nodes[w].name for w in wrt]

    def hv(shift):
        moved = dict(inputs)
        for name, d in zip(names, u):
            moved[name] = inputs[name] + shift * d
        return ns["third"](*moved.values(), *v, *[np.zeros_like(d) for d in u])[1 + k : 1 + 2 * k]

    eps = 1e-5
    for got, up, down in zip(out[1 + 2 * k :], hv(eps), hv(-eps)):
        numeric = (up - down) / (2 * eps)
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8 * max(1, np.abs(numeric).max()))


def test_jvp_reads_like_a_hand_written_forward_mode_pass():
    _, source = module_from(TANH_MLP.replace("DERIVS", "derivatives: [jvp]"))
    jvp = source[source.index("def jvp") :]
    for line in (
        'W1_dot, b1_dot, W2_dot = _per_input("tangents", tangents, W1=W1, b1=b1, W2=W2)',
        "h_dot = x @ W1_dot  # matmul JVP rule, notes section 5",
        "h_dot += b1_dot  # sum JVP rule",
        "h_dot *= 1 - h * h  # tanh JVP rule, reusing the forward output",
        "loss_matmul_dot[np.arange(N), y].sum()",  # the pick summed in the line that reads it
        "# softmax cross-entropy JVP rule, notes section 2",
    ):
        assert line in jvp, line


def test_jacobian_by_rows_batches_basis_cotangents_without_a_loop():
    text = "inputs:\n  x: [D]\n  W: [H, D]\n  b: [H]\ngraph:\n  y: sigmoid(W @ x + b)\nwrt: [x, W]\nderivatives: [jacobian]\n"
    mod, source = module_from(text, "layer.yaml")
    jac = source[source.index("def jacobian") : source.index("class _Objective")]
    assert "# rows: one reverse sweep for all H output entries at once" in jac
    # the basis cotangents stay structured (ops_basis): sigmoid's derivative scales the unit vectors, so
    # J.x is W's rows scaled and J.W has one x per row, on the diagonal; no identity, no product with it
    assert "np.eye" not in jac and "@" not in jac.split("y = ")[-1]
    assert "J_x = W * dy_mul[:, None]" in jac
    assert 'np.copyto(np.einsum("iij->ij", J_W), x * dy_mul[:, None])' in jac
    code = [line.split("#")[0] for line in jac.splitlines()]
    assert not any(re.search(r"\b(for|while)\b", line) for line in code)
    rng = np.random.default_rng(3)
    x, W, b = rng.standard_normal(4), rng.standard_normal((3, 4)), rng.standard_normal(3)
    y, J = mod.jacobian(x, W, b)
    s = y * (1 - y)
    np.testing.assert_allclose(J.x, s[:, None] * W, rtol=1e-12)
    expected_W = np.zeros((3, 3, 4))
    expected_W[np.arange(3), np.arange(3), :] = s[:, None] * x
    np.testing.assert_allclose(J.W, expected_W, rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# views: an op that returns a view is never written in place


@pytest.fixture
def flip_op(monkeypatch):
    """An op added by the README recipe whose NumPy (np.flip) returns a view of its operand; callable
    as soon as it is in the table."""
    table, rows = dict(ops.TABLE), dict(ops.ROWS)

    @ops.op(
        "flip",
        (ops.P("a"),),
        rule="flip rule: flip back",
        linear=True,
        derivation="y = a reversed along the last axis.",
    )
    class Flip:
        shape = staticmethod(lambda s: ops.TensorType(s.types[0].shape, "float"))
        forward = staticmethod(lambda f: ops.call("np.flip", f.a(0), axis=ops.num(-1)))
        vjp = staticmethod(lambda b: (ops.call("np.flip", b.g, axis=ops.num(-1)),))
        pullback = staticmethod(lambda r: (r.op("flip", r.g),))
        batch = staticmethod(lambda r: r.op("flip", r.batched[0]))

    yield
    ops.TABLE.clear()
    ops.TABLE.update(table)
    ops.ROWS.clear()
    ops.ROWS.update(rows)


@pytest.mark.parametrize("declared", [None, False])
def test_an_op_returning_a_view_never_lets_value_and_grad_write_the_callers_array(flip_op, declared):
    if declared is not None:
        ops.ROWS["flip"] = ops.TABLE["flip"] = dataclasses.replace(ops.TABLE["flip"], fresh=declared)
    text = "inputs:\n  x: [N]\ngraph:\n  z: flip(x) + 1.0\n  loss: sum(z * z)\nderivatives: [jvp, hvp]\n"
    mod, source = module_from(text, "flipped.yaml")
    x = np.arange(5.0)
    before = x.copy()
    loss, grads = mod.value_and_grad(x)
    np.testing.assert_array_equal(x, before, err_msg="value_and_grad wrote into its input")
    np.testing.assert_allclose(loss, np.sum((x[::-1] + 1) ** 2))
    np.testing.assert_allclose(grads.x, (2 * (x[::-1] + 1))[::-1])
    mod.jvp(x, [np.ones(5)])
    mod.hvp(x, [np.ones(5)])
    np.testing.assert_array_equal(x, before, err_msg="jvp or hvp wrote into its input")
    assert "z += 1.0" not in source.split("def forward")[1].split("def backward")[0]


# --------------------------------------------------------------------------------------------------
# a kind a spec cannot have


def test_a_missing_rule_is_an_error_at_the_kind_not_a_traceback(monkeypatch, tmp_path):
    # tanh with its reverse rule (which backward needs) but no forward-mode one
    partials = ops.ROWS["tanh"].partials
    pullback = lambda r: (r.mul(r.g, partials(r)[0]),)
    monkeypatch.setitem(
        ops.ROWS, "tanh", dataclasses.replace(ops.ROWS["tanh"], partials=None, pullback=pullback)
    )
    spec = tmp_path / "net.yaml"
    spec.write_text(TANH_MLP.replace("DERIVS", "derivatives: [vjp, jvp]"))
    with pytest.raises(SpecError) as info:
        build_text(str(spec), spec.read_text())
    (diag,) = info.value.diagnostics
    assert (diag.place.line, diag.place.col) == (12, 20)
    assert (
        "jvp is not available for this spec yet: op 'tanh' (h, line 9) has no forward-mode (JVP) rule"
        in str(diag)
    )
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert re.search(r"net\.yaml:12:20: error: jvp is not available", result.stderr)
    assert not (tmp_path / "out").exists()


def test_wrong_tangents_name_the_input_and_both_shapes():
    mod, _ = module_from(TANH_MLP.replace("DERIVS", "derivatives: [jvp, hvp]"))
    inputs = mlp_inputs()
    v = [np.zeros((3, 4)), np.zeros(4), np.zeros((4, 6))]
    mod.jvp(**inputs, tangents=v)
    mod.jvp(**inputs, tangents={"W1": v[0], "b1": v[1], "W2": v[2]})
    with pytest.raises(
        ValueError, match=r"tangents\.W2: expected shape \(4, 6\), the shape of W2, got \(6, 4\)"
    ):
        mod.jvp(**inputs, tangents=[v[0], v[1], v[2].T])
    with pytest.raises(ValueError, match=r"v\.b1: expected shape \(4,\), the shape of b1, got \(1, 4\)"):
        mod.hvp(**inputs, v=[v[0], v[1][None], v[2]])
    with pytest.raises(
        ValueError, match=r"tangents: expected one array per wrt input \(W1, b1, W2\), got 2 items"
    ):
        mod.jvp(**inputs, tangents=v[:2])
    with pytest.raises(ValueError, match=r"tangents: expected the keys"):
        mod.jvp(**inputs, tangents={"W1": v[0]})


def test_float32_tangents_keep_float32_and_float64_tangents_are_cast():
    mod, _ = module_from(TANH_MLP.replace("DERIVS", "derivatives: [jvp, hvp, hessian]"))
    inputs = {k: (a.astype(np.float32) if a.dtype.kind == "f" else a) for k, a in mlp_inputs().items()}
    v = [np.ones((3, 4)), np.ones(4), np.ones((4, 6))]  # float64
    out, out_dot = mod.jvp(**inputs, tangents=v)
    assert np.asarray(out).dtype == np.float32 and np.asarray(out_dot).dtype == np.float32
    _, grads, hv = mod.hvp(**inputs, v=v)
    assert all(a.dtype == np.float32 for a in (*grads, *hv))
    _, _, H = mod.hessian(**inputs)
    assert all(block.dtype == np.float32 for row in H for block in row)


def test_only_one_operand_of_a_sum_of_two_filled_arrays_is_unfilled():
    tg = typed("inputs:\n  x: [N, M]\ngraph:\n  y: sum(x)\n")
    b = Builder(tg)
    x = next(n.id for n in tg.graph.nodes if n.name == "x")
    one = b.sum(x, None, keepdims=True)  # [1, 1]
    total = b.add(b.broadcast(one, b.shape(x)), b.broadcast(b.neg(one), b.shape(x)))
    assert b.shape(total) == b.shape(x)


def test_every_op_has_its_one_reverse_rule():
    # backward and value_and_grad are the graph-level reverse sweep: an op without a pullback (or
    # partials) could not be differentiated at all
    missing = [n for n, row in ops.TABLE.items() if row.pullback is None and row.partials is None]
    assert missing == []
