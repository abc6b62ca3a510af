"""Run-time checks of the generated module (issue 7 part 2): no bad input gives a silent wrong answer.

Unit tests of what the planner decides (which int inputs are range-checked against which size, which
dims must be nonzero, when the returned output is copied), then end-to-end builds of small specs, run
with bad inputs; every message is pinned, and each check is shown to matter (the input it refuses
would give a wrong answer or a NumPy error without it).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

from gradgen.dims import Dim
from gradgen.expr import Call, Var
from gradgen.pipeline import build_text, plan_text
from gradgen.plan import Stmt, _buffer_base, _returned_output
from gradgen.runtime import _zero_factors

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


@functools.cache
def _built(name: str, text: str):
    return build_text(f"{name}.yaml", text)


def build(tmp_path: Path, text: str, name: str = "spec"):
    """Build the spec (once per text) into tmp_path, both files, and import the module from there."""
    built = _built(name, text)
    for fname, content in built.files:
        (tmp_path / fname).write_text(content)
    module_spec = importlib.util.spec_from_file_location(
        f"gradgen_rt_{built.name}_{tmp_path.name}", tmp_path / f"{built.name}.py"
    )
    mod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mod)
    return mod


def plan_of(text: str):
    plan, _ = plan_text("spec.yaml", text)
    return plan


SCE = """\
inputs:
  logits: [N, C]
  y: {shape: [N], dtype: int}
graph:
  loss: softmax_cross_entropy(logits, y)
"""

TAKE_AXIS1 = """\
inputs:
  E: [D, V]
  idx: {shape: [T], dtype: int}
graph:
  cols: take(E, idx, axis=1)
  loss: sum(cols)
"""

TWO_HEADS = """\
inputs:
  a: [N, C]
  b: [N, 10]
  y: {shape: [N], dtype: int}
graph:
  loss: softmax_cross_entropy(a, y) + softmax_cross_entropy(b, y, reduction="sum")
"""

ONE_HOT = """\
inputs:
  theta: [N, C]
  p: [N, C]
graph:
  loss: softmax_cross_entropy(theta, p, reduction="sum")
"""

LOGISTIC = (ROOT / "specs" / "binary_logistic.yaml").read_text()


# --------------------------------------------------------------------------------------------------
# what the planner decides


def test_int_labels_are_checked_against_the_class_dim():
    (c,) = plan_of(SCE).index_checks
    assert (c.input, c.rank, c.size, c.dim) == ("y", 1, "C", "C")
    assert c.role == "class labels for loss (softmax_cross_entropy)"


def test_take_indices_are_checked_against_the_axis_they_index():
    (c,) = plan_of(TAKE_AXIS1).index_checks
    assert (c.input, c.size, c.dim) == ("idx", "V", "V")
    assert "take, axis 1" in c.role


def test_one_int_input_indexing_two_axes_gets_both_bounds_and_literal_dims_stay_literal():
    checks = plan_of(TWO_HEADS).index_checks
    assert [(c.input, c.size, c.dim) for c in checks] == [("y", "C", "C"), ("y", "10", "10")]


def test_only_live_nodes_are_checked():
    dead = SCE.replace(
        "  loss: softmax_cross_entropy(logits, y)\n",
        "  other: softmax_cross_entropy(logits, y)\n  loss: sum(logits)\n",
    )
    plan = plan_of(dead + "output: loss\n")
    assert plan.index_checks == () and plan.nonempty_checks == ()


def test_float_labels_are_not_range_checked():
    assert plan_of(ONE_HOT).index_checks == ()


def test_nonempty_dims_come_from_means_and_max_shifts_only():
    assert [d for d, _ in plan_of(SCE).nonempty_checks] == ["C", "N"]
    assert [d for d, _ in plan_of(ONE_HOT).nonempty_checks] == ["C"]  # a sum over no rows is 0
    assert plan_of(TAKE_AXIS1).nonempty_checks == ()  # take and sum are fine on empty arrays
    mean_flat = "inputs:\n  x: [B, T, D]\ngraph:\n  r: reshape(x, [-1, D])\n  loss: mean(r, axis=0)\n"
    checks = plan_of(mean_flat).nonempty_checks
    assert [d for d, _ in checks] == ["B", "T"]  # B*T is 0 when B or T is
    assert checks[0][1] == "B is 0, but loss is a mean over it (undefined for no values)"


def test_a_variance_with_ddof_needs_more_entries_than_ddof():
    spec = "inputs:\n  x: [B, T, D]\ngraph:\n  v: var(x, axis=(0, 1), ddof=2)\n"
    p = plan_of(spec)
    assert [d for d, _ in p.nonempty_checks] == ["B", "T"]  # B*T is 0 when B or T is
    ((dim, least, head, tail),) = p.minimum_checks
    assert (dim, least, head) == ("B * T", 3, "B*T is ")
    assert tail == ", but v is a var with ddof=2 over it (it needs at least 3 entries)"
    # with ddof=0 only an empty slice is refused; the generated tests size a lone symbol large enough
    assert plan_of("inputs:\n  x: [B, T]\ngraph:\n  v: std(x, axis=1)\n").minimum_checks == ()
    windows = plan_of("inputs:\n  x: [B, T]\ngraph:\n  v: std(x, axis=1, ddof=4)\n").window_dims
    assert windows == ((Dim.const(5), Dim.sym("T")),)  # (least size, dim): the tests' sizes obey it


def test_zero_factors_of_products_and_sums():
    B, T, N = Dim.sym("B"), Dim.sym("T"), Dim.sym("N")
    assert _zero_factors(B * T) == [B, T]
    assert _zero_factors(N + B) == [N + B]  # zero only when both are
    assert _zero_factors(Dim.const(3)) == []


def test_buffer_base_follows_aliases_views_and_out_arguments():
    stmts = [
        Stmt("a", Call("np.exp", (Var("x"),))),
        Stmt("b", Var("a")),
        Stmt("c", Call("np.maximum", (Var("b"), Var("x")), (("out", Var("b")),))),
        Stmt("d", Call("np.transpose", (Var("c"),))),
    ]
    defs = {s.target: s.expr for s in stmts}
    assert _buffer_base("d", defs) == "a"
    assert _buffer_base("x", defs) == "x"


@pytest.mark.parametrize(
    "graph, copied",
    [
        ("z: exp(x)", True),  # exp's rule reads its output back from the cache
        ("z: x * 1", True),  # folded to x itself
        ("z: x.T", True),
        ("z: transpose(x)", True),
        ("z: reshape(x, [M, N])", True),
        ('z: einsum("ij->ji", x)', True),
        ("z: tanh(x).T", True),  # a view of tanh's output, which the cache keeps
        ("z: x * 2.0", False),
        ("z: tanh(x) * 2.0", False),  # tanh's output is cached, the product is a new array
        ("z: square(x)", False),
    ],
)
def test_forward_copies_its_output_only_when_it_shares_a_buffer(graph, copied):
    plan = plan_of(f"inputs:\n  x: [N, M]\ngraph:\n  {graph}\n")
    assert plan.forward_out == ("z.copy()" if copied else "z"), plan.forward_out


def test_output_that_is_an_input_is_copied_in_forward_and_value_and_grad():
    plan = plan_of("inputs:\n  b: []\n  x: [N]\ngraph:\n  s: sum(x * b)\noutput: b\nwrt: [b]\n")
    assert plan.forward_out == "b.copy()"
    assert plan.fused_out == "b.copy()"


def test_returned_output_rule_on_statement_lists():
    stmts = [Stmt("z", Call("np.exp", (Var("x"),))), Stmt("w", Var("z"))]
    assert _returned_output("z", stmts, {"x"}, []).render() == "z"
    assert _returned_output("z", stmts, {"x"}, ["w"]).render() == "z.copy()"  # cache holds an alias
    assert _returned_output("x", stmts, {"x"}, []).render() == "x.copy()"


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_shipped_specs_return_their_output_without_a_copy(spec):
    plan, _ = plan_text(str(spec.relative_to(ROOT)), spec.read_text())
    assert ".copy()" not in plan.forward_out
    assert ".copy()" not in plan.fused_out


# --------------------------------------------------------------------------------------------------
# end to end: int inputs that index


def sce_inputs(n=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)), np.arange(n) % c


def test_negative_label_raises_instead_of_wrapping_around(tmp_path):
    m = build(tmp_path, SCE)
    logits, y = sce_inputs()
    y[2] = -1  # NumPy alone would pick class C-1 here
    wrapped = y.copy()
    wrapped[2] = 2
    assert np.isfinite(m.forward(logits, wrapped)[0])
    message = (
        "y[2] = -1 is out of range: y holds class labels for loss (softmax_cross_entropy), so 0 <= y < C = 3"
    )
    for fn in (m.forward, m.value_and_grad):
        with pytest.raises(ValueError) as e:
            fn(logits, y)
        assert str(e.value) == message


def test_label_too_large_raises_with_the_first_bad_position(tmp_path):
    m = build(tmp_path, SCE)
    logits, y = sce_inputs(n=6)
    y[[1, 4]] = [7, 3]
    with pytest.raises(ValueError, match=r"^y\[1\] = 7 is out of range: .* so 0 <= y < C = 3$"):
        m.forward(logits, y)


def test_labels_of_any_integer_dtype_pass_and_are_checked(tmp_path):
    m = build(tmp_path, SCE)
    logits, y = sce_inputs()
    want = m.forward(logits, y)[0]
    for dtype in (np.int8, np.int32, np.uint8, np.uint64):
        assert m.forward(logits, y.astype(dtype))[0] == want
    bad = y.astype(np.int8)
    bad[0] = -128
    with pytest.raises(ValueError, match=r"y\[0\] = -128 is out of range"):
        m.forward(logits, bad)


def test_take_index_checked_along_its_axis_in_two_dims(tmp_path):
    m = build(tmp_path, TAKE_AXIS1)
    E = np.ones((2, 5))
    assert m.forward(E, np.array([0, 4, 4]))[0] == 6.0
    with pytest.raises(ValueError) as e:
        m.forward(E, np.array([0, 5, 1]))
    assert (
        str(e.value)
        == "idx[1] = 5 is out of range: idx holds indices for cols (take, axis 1), so 0 <= idx < V = 5"
    )
    m2 = build(tmp_path, (ROOT / "specs" / "embedding_classifier.yaml").read_text(), "emb")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 7, size=(3, 4))
    tokens[2, 1] = -3
    args = (tokens, np.zeros(3, int), rng.standard_normal((7, 2)), rng.standard_normal((2, 5)), np.zeros(5))
    with pytest.raises(ValueError, match=r"^tokens\[2, 1\] = -3 is out of range: .* 0 <= tokens < V = 7$"):
        m2.value_and_grad(*args)


def test_an_input_indexing_two_axes_is_checked_against_both(tmp_path):
    m = build(tmp_path, TWO_HEADS)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 12)), rng.standard_normal((3, 10))
    m.forward(a, b, np.array([0, 9, 3]))
    with pytest.raises(ValueError, match=r"^y\[1\] = 10 is out of range: .* 0 <= y < 10$"):
        m.forward(a, b, np.array([0, 10, 3]))  # fine for a's 12 classes, not for b's 10


def test_scalar_label_checked(tmp_path):
    m = build(tmp_path, (ROOT / "specs" / "sce_vector.yaml").read_text(), "vec")
    theta = np.array([0.5, -1.0, 2.0])
    assert np.isclose(m.forward(theta, 2)[0], m.forward(theta, np.int32(2))[0])
    for k in (-1, 3, np.array(-3), np.int64(-2)):
        with pytest.raises(ValueError, match=rf"^k = {int(k)} is out of range: .* 0 <= k < C = 3$"):
            m.forward(theta, k)
    for k in (1.0, True, np.array(1.0)):
        with pytest.raises(ValueError, match=r"^k: expected integers, got an array of dtype (float64|bool)$"):
            m.forward(theta, k)


def test_empty_label_list_counts_as_integers(tmp_path):
    m = build(tmp_path, ONE_HOT.replace("p: [N, C]", "p: [N, C]\n  k: {shape: [M], dtype: int}"), "onehot")
    rng = np.random.default_rng(2)
    theta = rng.standard_normal((2, 3))
    p = np.eye(3)[[0, 2]]
    assert np.isclose(m.forward(theta, p, [])[0], m.forward(theta, p, np.zeros(0, int))[0])
    with pytest.raises(ValueError, match=r"^k: expected integers, got an array of dtype float64$"):
        m.forward(theta, p, np.zeros(0))  # an empty float *array* is not a list


# --------------------------------------------------------------------------------------------------
# end to end: dtypes, lists, numbers


def logistic_inputs(dtype, n=5, d=3, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype)
    t = (rng.random(n) > 0.5).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    b = dtype(0.25) if dtype is not float else 0.25
    return x, t, w, b


def test_fast_path_passes_arrays_through_without_a_copy(tmp_path):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, w, b = logistic_inputs(np.float32)
    checked = m._check_inputs(x, t, w, b)
    assert checked[0] is x and checked[1] is t and checked[2] is w and checked[3] is b
    _, cache = m.forward(x, t, w, b)
    assert any(v is x for v in cache)  # the cache holds the caller's x itself, no copy


def test_python_number_and_lists_take_the_float32_of_the_other_inputs(tmp_path):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, w, b = logistic_inputs(np.float32)
    want, grads = m.value_and_grad(x, t, w, b)
    got, got_grads = m.value_and_grad(x.tolist(), t, w, 0.25)
    assert np.asarray(got).dtype == np.float32 and got == want
    for g, h in zip(got_grads, grads):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, h)


def test_all_lists_give_float64(tmp_path):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, w, b = logistic_inputs(np.float64)
    got = m.forward(x.tolist(), t.tolist(), w.tolist(), float(b))[0]
    assert np.asarray(got).dtype == np.float64 and got == m.forward(x, t, w, b)[0]


def test_integer_arrays_for_float_inputs_take_the_call_dtype(tmp_path):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, w, b = logistic_inputs(np.float32)
    pixels = (np.arange(15) % 3).astype(np.uint8).reshape(5, 3)
    got, grads = m.value_and_grad(pixels, t, w, b)
    want, _ = m.value_and_grad(pixels.astype(np.float32), t, w, b)
    assert np.asarray(got).dtype == np.float32 and got == want
    assert grads.w.dtype == np.float32
    # an integer array for a differentiated input gets float gradients (not int64 ones, as before)
    _, cache = m.forward(x.astype(np.float64), t.astype(np.float64), np.array([1, 0, -1]), 0.0)
    assert m.backward(1.0, cache).w.dtype == np.float64


def test_mixed_float_dtypes_raise_naming_both_inputs(tmp_path):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, w, b = logistic_inputs(np.float32)
    with pytest.raises(ValueError) as e:
        m.forward(x, t.astype(np.float64), w, b)
    assert str(e.value) == (
        "t: dtype float64 differs from x's float32; float inputs must share one dtype (convert with .astype)"
    )
    with pytest.raises(ValueError, match=r"^b: dtype float64 differs from x's float32"):
        m.value_and_grad(x, t, w, np.float64(0.5))  # a NumPy scalar has a dtype of its own


@pytest.mark.parametrize(
    "bad, dtype", [(np.array([True, False, True]), "bool"), (np.array([1j, 0, 0]), "complex128")]
)
def test_bool_and_complex_float_inputs_raise(tmp_path, bad, dtype):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, _, b = logistic_inputs(np.float64)
    with pytest.raises(ValueError) as e:
        m.forward(x, t, bad, b)
    assert str(e.value) == f"w: expected real numbers, got an array of dtype {dtype}"


def test_ragged_list_and_text_raise_naming_the_input(tmp_path):
    m = build(tmp_path, LOGISTIC, "logistic")
    x, t, w, b = logistic_inputs(np.float64)
    with pytest.raises(ValueError, match=r"^x: not an array of numbers \("):
        m.forward([[1.0, 2.0, 3.0], [1.0]], t, w, b)
    with pytest.raises(ValueError, match=r"^b: expected real numbers, got an array of dtype <U3$"):
        m.forward(x, t, w, "0.5")


def test_float_labels_raise_for_int_inputs_and_lists_of_ints_work(tmp_path):
    m = build(tmp_path, SCE)
    logits, y = sce_inputs()
    assert m.forward(logits.tolist(), y.tolist())[0] == m.forward(logits, y)[0]
    for bad, dtype in ((y.astype(float), "float64"), (y > 0, "bool"), ([0.0, 1.0, 2.0, 0.0], "float64")):
        with pytest.raises(ValueError) as e:
            m.value_and_grad(logits, bad)
        assert str(e.value) == f"y: expected integers, got an array of dtype {dtype}"


# --------------------------------------------------------------------------------------------------
# end to end: dout


MATVEC = (ROOT / "specs" / "matvec.yaml").read_text()


def test_dout_must_have_the_output_shape(tmp_path):
    m = build(tmp_path, MATVEC, "matvec")
    W, x = np.ones((3, 2)), np.ones(2)
    _, cache = m.forward(W, x)
    for bad in (np.ones((3, 2)), np.ones((1, 3)), 1.0, np.ones(4)):
        with pytest.raises(ValueError) as e:
            m.backward(bad, cache)
        assert str(e.value) == f"dout: expected the shape (3,) of z [N], got shape {np.shape(bad)}"
    grads = m.backward([1.0, 2.0, 3.0], cache)  # a list of the right length is fine
    np.testing.assert_array_equal(grads.x, W.T @ [1.0, 2.0, 3.0])


def test_scalar_dout_takes_numbers_and_0d_arrays_only(tmp_path):
    m = build(tmp_path, SCE)
    logits, y = sce_inputs()
    _, cache = m.forward(logits.astype(np.float32), y)
    want = m.backward(np.float32(2.0), cache).logits
    for dout in (2.0, 2, np.float64(2.0), np.array(2.0), np.array(2, dtype=np.int16)):
        got = m.backward(dout, cache).logits
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    for bad in (np.ones(1), np.ones((1, 1)), [2.0]):
        with pytest.raises(ValueError, match=r"^dout: expected the shape \(\) of loss \[\], got shape"):
            m.backward(bad, cache)
    for bad, dtype in ((True, "bool"), (2j, "complex128")):
        with pytest.raises(ValueError) as e:
            m.backward(bad, cache)
        assert str(e.value) == f"dout: expected real numbers, got an array of dtype {dtype}"


# --------------------------------------------------------------------------------------------------
# end to end: the returned output


def test_writing_into_forwards_output_does_not_change_backward(tmp_path):
    m = build(tmp_path, "inputs:\n  x: [N]\ngraph:\n  z: exp(x)\n", "expz")
    x = np.array([0.0, 1.0, -1.0])
    z, cache = m.forward(x)
    dout = np.ones(3)
    before = m.backward(dout, cache).x.copy()
    z[:] = 100.0
    np.testing.assert_array_equal(m.backward(dout, cache).x, before)
    np.testing.assert_array_equal(before, np.exp(x))


@pytest.mark.parametrize("graph", ["z: x * 1", "z: x.T", "z: reshape(x, [M, N])", "z: transpose(x)"])
def test_forward_never_returns_the_callers_array(tmp_path, graph):
    m = build(tmp_path, f"inputs:\n  x: [N, M]\ngraph:\n  {graph}\n", "view")
    x = np.arange(6.0).reshape(2, 3)
    z, _ = m.forward(x)
    assert not np.shares_memory(z, x)
    z[...] = -1.0
    np.testing.assert_array_equal(x, np.arange(6.0).reshape(2, 3))


def test_value_and_grad_never_returns_the_callers_array(tmp_path):
    m = build(tmp_path, "inputs:\n  b: []\n  x: [N]\ngraph:\n  s: sum(x * b)\noutput: b\nwrt: [b]\n", "ident")
    b = np.array(2.0)
    value, grads = m.value_and_grad(b, np.ones(3))
    assert value == 2.0 and not np.shares_memory(value, b)
    assert grads.b == 1.0 and not np.shares_memory(grads.b, value)


# --------------------------------------------------------------------------------------------------
# end to end: zero-size dims


def _both(m, *args):
    """forward's and value_and_grad's outcome: ('error', message) or ('value', out, grads)."""
    out = []
    for run in (lambda: m.forward(*args)[0], lambda: m.value_and_grad(*args)[0]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                out.append(("value", run()))
        except ValueError as e:
            out.append(("error", str(e)))
    return out


def test_mean_over_no_rows_is_a_value_error_in_forward_and_value_and_grad(tmp_path):
    m = build(tmp_path, SCE)
    message = "N is 0, but loss is a mean of softmax_cross_entropy over it (no rows)"
    assert _both(m, np.zeros((0, 3)), np.zeros(0, int)) == [("error", message)] * 2
    message = "C is 0, but loss needs at least one class (softmax_cross_entropy)"
    assert _both(m, np.zeros((2, 0)), np.zeros(2, int)) == [("error", message)] * 2


def test_sum_over_no_rows_is_zero_with_empty_gradients(tmp_path):
    m = build(tmp_path, ONE_HOT)
    outcomes = _both(m, np.zeros((0, 3)), np.zeros((0, 3)))
    assert [k for k, _ in outcomes] == ["value", "value"] and all(v == 0 for _, v in outcomes)
    _, grads = m.value_and_grad(np.zeros((0, 3)), np.zeros((0, 3)))
    assert grads.theta.shape == (0, 3)


def test_plain_mean_of_nothing_raises_and_a_product_over_k_0_is_zeros(tmp_path):
    m = build(tmp_path, "inputs:\n  x: [N, K]\n  W: [K, M]\ngraph:\n  loss: mean(x @ W)\n", "mm")
    assert (
        _both(m, np.zeros((0, 2)), np.zeros((2, 3)))
        == [("error", "N is 0, but loss is a mean over it (undefined for no values)")] * 2
    )
    outcomes = _both(m, np.ones((2, 0)), np.ones((0, 3)))
    assert outcomes == [("value", 0.0), ("value", 0.0)]
    _, grads = m.value_and_grad(np.ones((2, 0)), np.ones((0, 3)))
    assert grads.x.shape == (2, 0) and grads.W.shape == (0, 3)


def test_batched_product_with_an_empty_inner_dim_gives_the_empty_result(tmp_path):
    """x.reshape(B * T, K) is spelled out: NumPy cannot infer a -1 when K is 0."""
    m = build(tmp_path, (ROOT / "specs" / "attention.yaml").read_text(), "attn")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4))
    args = (x, np.zeros((4, 0)), np.zeros((4, 0)), np.zeros((4, 0)), np.zeros((0, 4)))
    outcomes = _both(m, *args)
    assert [k for k, _ in outcomes] == ["value", "value"]
    assert np.isclose(outcomes[0][1], np.mean(x**2))  # the block adds nothing: out = 0
    _, grads = m.value_and_grad(*args)
    assert [g.shape for g in grads] == [(4, 0), (4, 0), (4, 0), (0, 4)]


def test_an_input_named_like_the_check_flag_is_not_overwritten(tmp_path):
    m = build(tmp_path, "inputs:\n  usual: [N]\n  usual_2: [N]\ngraph:\n  s: sum(usual * usual_2)\n", "flag")
    assert "usual_3 = " in (tmp_path / "flag.py").read_text()
    assert m.forward(np.array([1.0, 2.0]), np.array([3.0, 4.0]))[0] == 11.0
    assert m.forward([1, 2], np.array([3.0, 4.0]))[0] == 11.0
