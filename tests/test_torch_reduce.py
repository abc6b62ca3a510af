"""The reductions of issue 9 against torch autograd: max and min (torch's amax/amin, ties on purpose).

Values are drawn from a few integers so that most slices hold tied extremes: the split of the
cotangent among ties is a convention, and torch's amax/amin is the one gradgen documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradgen.fmt import black_format
from gradgen.pipeline import plan_text
from gradgen.render import render_module

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]


def build(text: str) -> dict:
    """Spec text -> the generated module's namespace."""
    p, _ = plan_text("spec.yaml", text)
    ns: dict = {}
    exec(compile(black_format(render_module(p)), f"{p.name}.py", "exec"), ns)
    return ns


def tied(rng, shape, dtype=np.float64):
    """Values from {-1, 0, 1, 2}: most slices of a few entries have tied extremes."""
    return rng.integers(-1, 3, size=shape).astype(dtype)


REDUCTIONS = [
    ("max", "axis=1", lambda t: torch.amax(t, dim=1)),
    ("min", "axis=1", lambda t: torch.amin(t, dim=1)),
    ("max", "axis=(0, 2), keepdims=True", lambda t: torch.amax(t, dim=(0, 2), keepdim=True)),
    ("min", "axis=-1, keepdims=True", lambda t: torch.amin(t, dim=-1, keepdim=True)),
    ("max", "axis=None", lambda t: torch.amax(t)),
    ("min", "", lambda t: torch.amin(t)),
]


@pytest.mark.parametrize("op, args, reference", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ties_split_the_gradient_as_torch_amax_and_amin(op, args, reference, dtype):
    m = build(f"inputs:\n  x: [N, K, M]\ngraph:\n  y: {op}(x{', ' + args if args else ''})\n")
    rng = np.random.default_rng(0)
    x = tied(rng, (3, 4, 5), dtype)
    y, cache = m["forward"](x)
    dout = rng.standard_normal(np.shape(y)).astype(dtype)
    (dx,) = m["backward"](dout, cache)
    assert dx.dtype == dtype and np.asarray(y).dtype == dtype

    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx)
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=0)
    shares = tx.grad.numpy() != 0
    assert shares.sum() > dout.size, "no tie was drawn: the test would not see the convention"


def test_a_tie_of_k_entries_gives_each_a_kth_share():
    m = build("inputs:\n  x: [N, K]\ngraph:\n  y: max(x, axis=1)\n")
    x = np.array([[1.0, 3.0, 3.0, 3.0], [2.0, 2.0, -1.0, 0.0], [5.0, 1.0, 2.0, 4.0]])
    _, cache = m["forward"](x)
    (dx,) = m["backward"](np.array([3.0, 2.0, 7.0]), cache)
    expected = [[0, 1, 1, 1], [1, 1, 0, 0], [7, 0, 0, 0]]
    np.testing.assert_array_equal(dx, np.array(expected, dtype=float))


def test_value_and_grad_and_jvp_follow_the_same_convention():
    spec = (
        "inputs:\n  x: [N, K, M]\n  w: [N, M]\ngraph:\n  y: min(x, axis=1)\n  loss: sum(y * w)\n"
        "wrt: [x]\nderivatives: [vjp, jvp]\n"
    )
    m = build(spec)
    rng = np.random.default_rng(1)
    x, w, t = tied(rng, (3, 4, 5)), rng.standard_normal((3, 5)), rng.standard_normal((3, 4, 5))
    loss, (dx,) = m["value_and_grad"](x, w)
    value, slope = m["jvp"](x, w, [t])

    tx = torch.tensor(x, requires_grad=True)
    tloss = (torch.amin(tx, dim=1) * torch.tensor(w)).sum()
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12)
    _, tslope = torch.func.jvp(
        lambda a: (torch.amin(a, dim=1) * torch.tensor(w)).sum(), (torch.tensor(x),), (torch.tensor(t),)
    )
    np.testing.assert_allclose(value, loss, rtol=1e-12)
    np.testing.assert_allclose(slope, tslope.item(), rtol=1e-10)


def test_max_over_time_spec_matches_torch_autograd():
    m = build((REPO / "specs" / "max_over_time.yaml").read_text())
    rng = np.random.default_rng(2)
    B, T, D, H, C = 4, 6, 5, 7, 3
    x = rng.standard_normal((B, T, D))
    y = rng.integers(0, C, size=B)
    W, V, U = rng.standard_normal((D, H)), rng.standard_normal((H, C)), rng.standard_normal((H, C))
    loss, grads = m["value_and_grad"](x, y, W, V, U)

    tx, tW, tV, tU = (torch.tensor(a, requires_grad=True) for a in (x, W, V, U))
    h = torch.tanh(tx @ tW)
    logits = torch.amax(h, dim=1) @ tV + torch.amin(h, dim=1) @ tU
    tloss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    for name, ref in zip(("x", "W", "V", "U"), (tx, tW, tV, tU)):
        np.testing.assert_allclose(getattr(grads, name), ref.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_svm_multiclass_spec_matches_torch_multi_margin_loss():
    """The spec's data loss is C times torch's multi_margin_loss (which averages over the classes too)."""
    m = build((REPO / "specs" / "svm_multiclass.yaml").read_text())
    rng = np.random.default_rng(3)
    N, D, C = 8, 5, 4
    X, W, b = rng.standard_normal((N, D)), rng.standard_normal((D, C)), rng.standard_normal(C)
    y = rng.integers(0, C, size=(N, 1))
    loss, grads = m["value_and_grad"](X, y, W, b)

    tW, tb = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    scores = torch.tensor(X) @ tW + tb
    data = C * torch.nn.functional.multi_margin_loss(scores, torch.tensor(y[:, 0]), margin=1.0)
    tloss = data + 0.5 * 0.001 * (tW * tW).sum()
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(grads.W, tW.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads.b, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_take_along_axis_with_repeated_picks_adds_them_up_as_torch_gather(dtype):
    """Indices longer than one along the axis pick entries repeatedly: their cotangents add up."""
    m = build(
        "inputs:\n  a: [N, C]\n  i: {shape: [N, K], dtype: int}\ngraph:\n  y: take_along_axis(a, i, axis=-1)\n"
    )
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 4)).astype(dtype)
    i = np.array([[0, 0, 3, 0, 1], [2, 2, 2, 2, 2], [1, 3, 1, 0, 0]])
    y, cache = m["forward"](a, i)
    dout = rng.standard_normal(y.shape).astype(dtype)
    (da,) = m["backward"](dout, cache)
    assert da.dtype == dtype

    ta = torch.tensor(a, requires_grad=True)
    ty = torch.gather(ta, 1, torch.tensor(i))
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-6)


SPREADS = [
    ("var", "axis=0", lambda t: torch.var(t, dim=0, correction=0)),
    (
        "var",
        "axis=(0, 2), ddof=1, keepdims=True",
        lambda t: torch.var(t, dim=(0, 2), correction=1, keepdim=True),
    ),
    ("std", "axis=-1, ddof=1", lambda t: torch.std(t, dim=-1, correction=1)),
    ("std", "", lambda t: torch.std(t, correction=0)),
    ("std", "axis=1, keepdims=True, ddof=2", lambda t: torch.std(t, dim=1, correction=2, keepdim=True)),
]


@pytest.mark.parametrize("op, args, reference", SPREADS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_var_and_std_match_torch(op, args, reference, dtype):
    m = build(f"inputs:\n  x: [N, K, M]\ngraph:\n  y: {op}(x{', ' + args if args else ''})\n")
    rng = np.random.default_rng(5)
    x = (3.0 + rng.standard_normal((3, 4, 5))).astype(dtype)
    y, cache = m["forward"](x)
    dout = rng.standard_normal(np.shape(y)).astype(dtype)
    (dx,) = m["backward"](dout, cache)
    assert dx.dtype == dtype and np.asarray(y).dtype == dtype

    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = reference(tx)
    ty.backward(torch.tensor(dout.astype(np.float64)))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol, atol=tol)


def test_std_of_equal_entries_has_a_zero_gradient_and_no_warning():
    """A slice of equal entries: std is 0 and not differentiable; gradgen takes 0 (torch gives nan)."""
    import warnings

    m = build("inputs:\n  x: [N, K]\ngraph:\n  y: std(x, axis=1)\n")
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cache = m["forward"](x)
        (dx,) = m["backward"](np.ones(2), cache)
    assert y[0] == 0.0
    np.testing.assert_array_equal(dx[0], 0.0)
    tx = torch.tensor(x[1:], requires_grad=True)
    torch.std(tx, dim=1, correction=0).sum().backward()
    np.testing.assert_allclose(dx[1:], tx.grad.numpy(), rtol=1e-12)


def test_a_slice_of_at_most_ddof_entries_is_a_value_error():
    m = build("inputs:\n  x: [N, K]\ngraph:\n  y: var(x, axis=0, ddof=1)\n")
    with pytest.raises(ValueError, match="N is 1, but y is a var with ddof=1 over it"):
        m["forward"](np.ones((1, 3)))
    with pytest.raises(ValueError, match="N is 0"):
        m["forward"](np.ones((0, 3)))
    m["forward"](np.ones((2, 3)))


def test_batchnorm_regression_spec_matches_torch_autograd():
    m = build((REPO / "specs" / "batchnorm_regression.yaml").read_text())
    rng = np.random.default_rng(6)
    N, D, K = 6, 4, 3
    x = 2.0 + rng.standard_normal((N, D))
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    W, t = rng.standard_normal((D, K)), rng.standard_normal((N, K))
    loss, grads = m["value_and_grad"](x, gamma, beta, W, t)

    tx, tg, tb, tW = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta, W))
    h = torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5)
    pred = h @ tW
    tloss = ((pred - torch.tensor(t)) ** 2).mean() + 0.1 * torch.std(pred, dim=0, correction=1).sum()
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    for name, ref in zip(("x", "gamma", "beta", "W"), (tx, tg, tb, tW)):
        np.testing.assert_allclose(getattr(grads, name), ref.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_picks_as_torch_and_its_pick_gets_the_gradient(op):
    """Ties on purpose: the first extreme is picked (numpy and torch agree); the picked entries of x
    get the gradient, the tensor that chose them none."""
    spec = (
        "inputs:\n  x: [N, C]\n  t: [N, C]\ngraph:\n"
        f"  pick: take_along_axis(x, {op}(t, axis=1, keepdims=True), axis=1)\n"
        f"  hard: softmax_cross_entropy(x, {op}(t, axis=-1))\n"
        "  loss: sum(square(pick)) + hard\nwrt: [x]\n"
    )
    m = build(spec)
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((5, 4)), tied(rng, (5, 4))
    loss, (dx,) = m["value_and_grad"](x, t)

    tx = torch.tensor(x, requires_grad=True)
    idx = getattr(torch, op)(torch.tensor(t), dim=1, keepdim=True)
    tloss = (torch.gather(tx, 1, idx) ** 2).sum() + torch.nn.functional.cross_entropy(tx, idx[:, 0])
    tloss.backward()
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
