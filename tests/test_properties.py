"""Property-based tests: random compositions of ops, with random broadcasting, built into a spec, run
through the whole pipeline, and the generated module checked against an independent reference.

For every drawn spec (see ``tests/strategies.py``):
- the module builds and its ``forward`` output matches a plain-NumPy evaluation of the graph;
- every gradient of ``backward(dout, cache)`` matches central finite differences of
  ``sum(forward(...)[0] * dout)`` in float64 (the inputs are resampled until no relu/abs/maximum/minimum
  kink and no log/sqrt/division pole is within reach of the finite-difference step);
- ``backward`` is repeatable on one cache (no in-place damage to the cache), and leaves the inputs,
  the returned output and ``dout`` untouched; ``forward`` leaves the inputs untouched;
- for scalar outputs ``value_and_grad`` returns the forward value and ``backward(1.0, cache)``'s
  gradients;
- a float32 run keeps float32 for the output and every gradient, with the inputs' shapes.

Runs are derandomized (reproducible in CI).  ``GRADGEN_HYPOTHESIS_EXAMPLES=500 pytest
tests/test_properties.py`` raises the number of examples of every test for a local soak.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, reject, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/strategies.py, any import mode
from strategies import ALL_OPS, ISSUE2_OPS, Case, Plan, cases, focused

EPS = 1e-6
RTOL = 1e-4
ATOL = 1e-6


def _examples(default: int) -> int:
    env = os.environ.get("GRADGEN_HYPOTHESIS_EXAMPLES")
    return int(env) if env else default


def _settings(n: int):
    return settings(
        max_examples=_examples(n),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def build_module(text: str) -> dict:
    """Spec text -> the generated module's namespace (nothing written to disk)."""
    try:  # the module file only: the same stages as build_text, without rendering the test file
        from gradgen.fmt import black_format
        from gradgen.pipeline import plan_text
        from gradgen.render import render_module

        p, _ = plan_text("prop.yaml", text)
        name, source = f"{p.name}.py", black_format(render_module(p))
    except ImportError:  # pragma: no cover - internal layout changed; fall back to the public face
        from gradgen.pipeline import build_text

        name, source = build_text("prop.yaml", text).files[0]
    note(source)
    ns: dict = {}
    exec(compile(source, name, "exec"), ns)
    return ns


def _draw_inputs(case: Case, seed: int):
    """Input values far enough from kinks and poles for central differences (or reject)."""
    for attempt in range(8):
        rng = np.random.default_rng([seed, attempt])
        inputs = case.make_inputs(rng)
        with np.errstate(all="ignore"):
            ctx = case.reference(inputs)
        if ctx.kink > 1e-3 and ctx.domain > 1e-2 and ctx.big < 1e3:
            return inputs, ctx, rng
    reject()


def _args(case: Case, inputs: dict, dtype=None):
    out = []
    for decl in case.inputs:
        v = inputs[decl.name]
        if dtype is not None and decl.is_float:
            v = np.asarray(v, dtype=dtype)
        out.append(v)
    return out


def _copy(values):
    return [np.array(v, copy=True) for v in values]


def _assert_same(before, after, what):
    for k, (b, a) in enumerate(zip(before, after)):
        np.testing.assert_array_equal(a, b, err_msg=f"{what} (argument {k})")


def check_case(case: Case, seed: int):
    note(repr(case))
    for op in case.ops:
        event(op)
    ns = build_module(case.text)
    forward, backward = ns["forward"], ns["backward"]
    names = [d.name for d in case.inputs]
    inputs, ctx, rng = _draw_inputs(case, seed)
    args = _args(case, inputs)
    before = _copy(args)

    # forward agrees with the reference evaluation
    out, cache = forward(*args)
    _assert_same(before, args, "forward modified its input")
    ref = ctx.values[case.output]
    assert np.shape(out) == np.shape(ref), (np.shape(out), np.shape(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-8, atol=1e-10 * max(1.0, ctx.big), err_msg="forward value")
    assert np.asarray(out).dtype == np.float64

    # backward: fields, shapes, dtypes, repeatability, no damage to inputs / out / dout
    dout = rng.standard_normal(np.shape(out))
    out_before, dout_before = np.array(out, copy=True), np.array(dout, copy=True)
    grads = backward(dout, cache)
    assert tuple(grads._fields) == case.wrt, (grads._fields, case.wrt)
    again = backward(dout, cache)
    for f in case.wrt:
        np.testing.assert_array_equal(
            getattr(again, f), getattr(grads, f), err_msg=f"second backward on one cache differs for {f}"
        )
    _assert_same(before, args, "backward modified an input")
    np.testing.assert_array_equal(out, out_before, err_msg="backward modified the forward output")
    np.testing.assert_array_equal(dout, dout_before, err_msg="backward modified dout")

    # central differences of sum(forward(...)[0] * dout)
    def objective(vals):
        o, _ = forward(*vals)
        return float(np.sum(np.asarray(o, dtype=np.float64) * dout))

    for f in case.wrt:
        k = names.index(f)
        x = np.asarray(args[k], dtype=np.float64)
        g = getattr(grads, f)
        assert np.shape(g) == x.shape, f"d{f}: shape {np.shape(g)}, input {x.shape}"
        assert np.asarray(g).dtype == np.float64, f"d{f}: dtype {np.asarray(g).dtype}"
        numeric = np.zeros(x.shape)
        for idx in np.ndindex(x.shape):
            vals = list(args)
            up, down = x.copy(), x.copy()
            up[idx] += EPS
            down[idx] -= EPS
            vals[k] = up
            fu = objective(vals)
            vals[k] = down
            numeric[idx] = (fu - objective(vals)) / (2 * EPS)
        scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
        np.testing.assert_allclose(g, numeric, rtol=RTOL, atol=ATOL * scale, err_msg=f"gradient w.r.t. {f}")

    # value_and_grad for scalar outputs: the forward value and backward(1.0)'s gradients
    if np.ndim(out) == 0:
        assert "value_and_grad" in ns, "scalar output but no value_and_grad"
        ones = backward(1.0, cache)
        value, fused = ns["value_and_grad"](*args)
        _assert_same(before, args, "value_and_grad modified an input")
        np.testing.assert_allclose(value, out, rtol=1e-12, atol=1e-14)
        assert tuple(fused._fields) == case.wrt
        for f in case.wrt:
            a, b = np.asarray(getattr(fused, f)), np.asarray(getattr(ones, f))
            assert a.shape == b.shape and a.dtype == b.dtype, (f, a.shape, b.shape, a.dtype, b.dtype)
            np.testing.assert_allclose(
                a,
                b,
                rtol=1e-10,
                atol=1e-12 * max(1.0, float(np.abs(b).max(initial=0))),
                err_msg=f"value_and_grad vs backward(1.0) for {f}",
            )

    # rank-0 inputs given as Python floats: a documented limitation, not a promise.  Only `dout` may be
    # a Python float; the generated module's docstring says inputs are NumPy arrays (a 0-d array or a
    # NumPy scalar for shape []).  Rank-0 inputs are never passed through np.asarray, so a value
    # computed from Python floats and literals alone stays a Python float, and where the generated
    # code calls a method on it (`t: sum(2 * s)` -> `t_mul.sum()`, `s.T`, `reshape(s, [1])`,
    # logsumexp's `s.max()`) or reads the output's `.dtype` (`t: s ** 1.5`) it raises AttributeError.
    # Python floats are checked only where no such method call occurs (Case.scalar_method, set by
    # the strategy), so that the rest keeps working as it does today.
    scalars = [k for k, d in enumerate(case.inputs) if d.is_float and not d.shape]
    if scalars and not case.scalar_method:
        py_args = [float(v) if k in scalars else v for k, v in enumerate(args)]
        out_py, cache_py = forward(*py_args)
        np.testing.assert_allclose(out_py, out, rtol=1e-12, atol=1e-14, err_msg="Python-number scalar input")
        grads_py = backward(dout, cache_py)
        for f in case.wrt:
            np.testing.assert_allclose(
                getattr(grads_py, f),
                getattr(grads, f),
                rtol=1e-12,
                atol=1e-14,
                err_msg=f"Python-number scalar input: d{f}",
            )

    # float32 stays float32
    args32 = _args(case, inputs, np.float32)
    out32, cache32 = forward(*args32)
    assert np.asarray(out32).dtype == np.float32, f"float32 forward gave {np.asarray(out32).dtype}"
    assert np.shape(out32) == np.shape(out)
    grads32 = backward(np.asarray(dout, dtype=np.float32), cache32)
    for f in case.wrt:
        g = getattr(grads32, f)
        x = args32[names.index(f)]
        assert np.asarray(g).dtype == np.float32, f"float32 d{f} has dtype {np.asarray(g).dtype}"
        assert np.shape(g) == np.shape(x), f"float32 d{f}: shape {np.shape(g)}, input {np.shape(x)}"
    if np.ndim(out) == 0:
        value32, fused32 = ns["value_and_grad"](*args32)
        assert np.asarray(value32).dtype == np.float32
        for f in case.wrt:
            assert np.asarray(getattr(fused32, f)).dtype == np.float32, f"value_and_grad float32 d{f}"


SEEDS = st.integers(0, 2**32 - 1)

# The issue-2 ops: elementwise with broadcasting and literals, 1-D/2-D matmul, reductions, softmaxes,
# softmax cross-entropy.  Ranks stay <= 2.
ISSUE2 = Plan(ISSUE2_OPS, max_rank=2, input_rank=2, min_steps=1, max_steps=5)
# Every op; intermediates up to rank 4 (batched matmul, take), inputs up to rank 3.
EVERYTHING = Plan(ALL_OPS, max_rank=4, input_rank=3, min_steps=2, max_steps=6)


@_settings(60)
@given(cases(ISSUE2), SEEDS)
def test_issue2_random_compositions(case, seed):
    check_case(case, seed)


@_settings(60)
@given(cases(EVERYTHING), SEEDS)
def test_all_ops_random_compositions(case, seed):
    check_case(case, seed)


# Each op in random graphs around it: every op is covered in every run, whatever the draws.
@pytest.mark.parametrize("op", ALL_OPS)
def test_each_op_in_random_compositions(op):
    base = ISSUE2 if op in ISSUE2_OPS else EVERYTHING
    plan = focused(Plan(base.ops, base.max_rank, base.input_rank, min_steps=1, max_steps=4), op)

    @_settings(12)
    @given(cases(plan), SEEDS)
    def run(case, seed):
        assert op in case.ops
        check_case(case, seed)

    run()


# --------------------------------------------------------------------------------------------------
# The derivative kinds (derivatives: [jvp, jacobian] and, for a scalar output, hvp and hessian) on the
# same random graphs: first order against central differences and against backward (the adjoint
# identity), the Jacobian against jvp columns and backward rows, second order against central
# differences of the gradient, the Hessian against Hessian-vector products, float32 kept.


def with_derivatives(case: Case) -> str:
    kinds = "[vjp, jvp, jacobian, hvp, hessian]" if case.scalar_output else "[vjp, jvp, jacobian]"
    return case.text + f"derivatives: {kinds}\n"


def _unit(args, names, wrt, name, k):
    e = [np.zeros(np.shape(args[names.index(w)])) for w in wrt]
    e[wrt.index(name)].reshape(-1)[k] = 1.0
    return e


def check_derivatives(case: Case, seed: int):
    note(repr(case))
    ns = build_module(with_derivatives(case))
    names = [d.name for d in case.inputs]
    wrt = list(case.wrt)
    inputs, _, rng = _draw_inputs(case, seed)
    args = [np.asarray(a) for a in _args(case, inputs)]  # rank-0 inputs as 0-d arrays
    kw = dict(zip(names, args))
    before = _copy(args)
    forward, backward = ns["forward"], ns["backward"]
    out, cache = forward(*args)
    v = [rng.standard_normal(np.shape(kw[w])) for w in wrt]

    def moved(direction, t):
        vals = dict(kw)
        for w, d in zip(wrt, direction):
            vals[w] = kw[w] + t * d
        return vals

    def value(vals):
        return np.asarray(forward(**vals)[0], dtype=np.float64)

    # jvp: the value, central differences along v, and the adjoint identity with backward
    value_j, out_dot = ns["jvp"](*args, tangents=v)
    np.testing.assert_allclose(value_j, out, rtol=1e-12, atol=1e-14)
    numeric = (value(moved(v, EPS)) - value(moved(v, -EPS))) / (2 * EPS)
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    np.testing.assert_allclose(out_dot, numeric, rtol=RTOL, atol=ATOL * scale, err_msg="jvp")
    u = rng.standard_normal(np.shape(out))
    grads = backward(u, cache)
    lhs = sum(float(np.sum(getattr(grads, w) * d)) for w, d in zip(wrt, v))
    rhs = float(np.sum(u * out_dot))
    mag = float(np.sum(np.abs(u * out_dot))) + sum(
        float(np.sum(np.abs(getattr(grads, w) * d))) for w, d in zip(wrt, v)
    )
    assert abs(lhs - rhs) <= 1e-9 * mag + 1e-13, ("adjoint identity", lhs, rhs)

    # jacobian: each column is a jvp of a unit tangent, each row a backward of a unit cotangent
    value_J, J = ns["jacobian"](*args)
    np.testing.assert_allclose(value_J, out, rtol=1e-12, atol=1e-14)
    for w in wrt:
        block = np.asarray(getattr(J, w))
        assert block.shape == np.shape(out) + np.shape(kw[w]), (w, block.shape)
        flat = block.reshape(np.size(out), -1)
        for k in range(np.size(kw[w])):
            col = ns["jvp"](*args, tangents=_unit(args, names, wrt, w, k))[1]
            np.testing.assert_allclose(
                flat[:, k], np.ravel(col), rtol=1e-9, atol=1e-11 * scale, err_msg=f"J.{w}"
            )
    for i in range(min(np.size(out), 3)):
        e = np.zeros(np.size(out))
        e[i] = 1.0
        row = backward(e.reshape(np.shape(out)), cache)
        for w in wrt:
            got = np.asarray(getattr(J, w)).reshape(np.size(out), -1)[i]
            np.testing.assert_allclose(
                got, np.ravel(getattr(row, w)), rtol=1e-9, atol=1e-11 * scale, err_msg=f"J.{w} row"
            )

    if case.scalar_output:
        # hvp: the value and gradients of value_and_grad, central differences of the gradient along v
        val, fused = ns["value_and_grad"](*args)
        value_h, g_h, hv = ns["hvp"](*args, v=v)
        np.testing.assert_allclose(value_h, val, rtol=1e-12, atol=1e-14)

        def grad(vals):  # hvp's own gradient (exact off the simplex for float-label cross-entropy)
            zeros = [np.zeros(np.shape(vals[w])) for w in wrt]
            return [np.asarray(getattr(ns["hvp"](**vals, v=zeros)[1], w), dtype=np.float64) for w in wrt]

        up, down = grad(moved(v, EPS)), grad(moved(v, -EPS))
        for w, a, b in zip(wrt, up, down):
            np.testing.assert_allclose(getattr(g_h, w), getattr(fused, w), rtol=1e-10, atol=1e-12 * scale)
            num = (a - b) / (2 * EPS)
            s = max(1.0, float(np.abs(num).max(initial=0.0)))
            np.testing.assert_allclose(getattr(hv, w), num, rtol=RTOL, atol=ATOL * s, err_msg=f"Hv.{w}")
        # hessian: symmetric blocks, and H v = hvp(v)
        value_H, _, H = ns["hessian"](*args)
        np.testing.assert_allclose(value_H, val, rtol=1e-12, atol=1e-14)
        for a in wrt:
            expected = sum(
                np.tensordot(getattr(getattr(H, a), b), d, axes=np.ndim(d)) for b, d in zip(wrt, v)
            )
            s = max(1.0, float(np.abs(expected).max(initial=0.0)))
            np.testing.assert_allclose(
                getattr(hv, a), expected, rtol=1e-9, atol=1e-11 * s, err_msg=f"H.{a} v"
            )
            for b in wrt:
                block = getattr(getattr(H, a), b)
                ra, rb = np.ndim(kw[a]), np.ndim(kw[b])
                mirror = np.transpose(getattr(getattr(H, b), a), tuple(range(rb, rb + ra)) + tuple(range(rb)))
                s = max(1.0, float(np.abs(block).max(initial=0.0)))
                np.testing.assert_allclose(
                    block, mirror, rtol=1e-9, atol=1e-11 * s, err_msg=f"H.{a}.{b} symmetric"
                )

    _assert_same(before, args, "a derivative function modified an input")

    # float32 stays float32 in every new function
    args32 = [np.asarray(a, dtype=np.float32) if d.is_float else a for a, d in zip(args, case.inputs)]
    v32 = [d.astype(np.float32) for d in v]
    results = [ns["jvp"](*args32, tangents=v32)[1], *ns["jacobian"](*args32)[1]]
    if case.scalar_output:
        _, g32, hv32 = ns["hvp"](*args32, v=v32)
        results += [*g32, *hv32, *(block for row in ns["hessian"](*args32)[2] for block in row)]
    for r in results:
        assert np.asarray(r).dtype == np.float32, f"float32 run gave {np.asarray(r).dtype}"


@_settings(40)
@given(cases(ISSUE2), SEEDS)
def test_derivatives_of_issue2_random_compositions(case, seed):
    check_derivatives(case, seed)


@_settings(40)
@given(cases(EVERYTHING), SEEDS)
def test_derivatives_of_all_ops_random_compositions(case, seed):
    check_derivatives(case, seed)


@pytest.mark.parametrize("op", ALL_OPS)
def test_derivatives_of_each_op_in_random_compositions(op):
    base = ISSUE2 if op in ISSUE2_OPS else EVERYTHING
    plan = focused(Plan(base.ops, base.max_rank, base.input_rank, min_steps=1, max_steps=3), op)

    @_settings(6)
    @given(cases(plan), SEEDS)
    def run(case, seed):
        assert op in case.ops
        check_derivatives(case, seed)

    run()
