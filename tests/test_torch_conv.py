"""pad, conv1d, conv2d, max_pool2d and avg_pool2d against torch autograd and a direct float64 sum.

Each case builds a spec whose output is the op's result, runs ``forward`` and ``backward`` with a random
cotangent, and compares the value and every gradient with torch (float64, the same numbers), and for the
convolutions also with a plain loop over every output position and kernel term.  Strides, paddings,
dilations and groups are mixed on purpose, with sizes that leave positions after the last window.  The
pools are checked with ties on purpose (integer-valued inputs): max-pool gives a tied window's whole
cotangent to its first maximum, as torch does.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from gradgen.pipeline import build_text

torch = pytest.importorskip("torch")
F = torch.nn.functional


def module_from(spec_text: str, name: str = "spec.yaml"):
    built = build_text(name, spec_text)
    files = dict(built.files)
    mod = types.ModuleType(built.name)
    exec(compile(files[f"{built.name}.py"], f"{built.name}.py", "exec"), mod.__dict__)
    return mod


def shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def run(mod, inputs: dict, dout):
    out, cache = mod.forward(**inputs)
    return out, mod.backward(dout, cache)


def torch_grads(fn, inputs: dict, wrt, dout):
    ts = {
        k: torch.tensor(v, requires_grad=k in wrt) if v.dtype.kind == "f" else torch.tensor(v)
        for k, v in inputs.items()
    }
    out = fn(**ts)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), {k: ts[k].grad.numpy() for k in wrt}


def conv_spec(op, x_shape, w_shape, attrs: str) -> str:
    return (
        f"inputs:\n  x: {shape_text(x_shape)}\n  w: {shape_text(w_shape)}\n"
        f"graph:\n  y: {op}(x, w{attrs})\nwrt: [x, w]\n"
    )


def direct_conv(x, w, stride, padding, dilation, groups):
    """The definition, one output position and one kernel term at a time, in float64."""
    n = x.ndim - 2
    stride, padding, dilation = ((v,) * n if isinstance(v, int) else v for v in (stride, padding, dilation))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    batch = x.shape[0]
    out_channels, per_group = w.shape[:2]
    k = w.shape[2:]
    out = [(xp.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(n)]
    y = np.zeros((batch, out_channels, *out))
    out_per_group = out_channels // groups
    for b in range(batch):
        for o in range(out_channels):
            grp = o // out_per_group
            for pos in np.ndindex(*out):
                total = 0.0
                for c in range(per_group):
                    for term in np.ndindex(*k):
                        at = tuple(pos[i] * stride[i] + term[i] * dilation[i] for i in range(n))
                        total += xp[(b, grp * per_group + c) + at] * w[(o, c) + term]
                y[(b, o) + pos] = total
    return y


CONV2D = [
    # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1, 1),
    ((2, 3, 8, 7), (5, 3, 3, 3), 2, 1, 1, 1),
    ((1, 2, 9, 8), (3, 2, 2, 3), (3, 2), (0, 1), 1, 1),
    ((2, 2, 9, 9), (3, 2, 3, 3), 1, 2, 2, 1),
    ((2, 2, 11, 10), (2, 2, 3, 2), 2, 3, (2, 3), 1),
    ((2, 4, 6, 7), (6, 2, 3, 3), 1, 1, 1, 2),
    ((2, 6, 9, 8), (6, 1, 3, 3), 2, 1, 2, 6),
]


def _attrs(stride, padding, dilation, groups) -> str:
    parts = []
    for name, value, default in (
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
        ("groups", groups, 1),
    ):
        if value != default:
            parts.append(f"{name}={value}")
    return "".join(", " + p for p in parts)


@pytest.mark.parametrize("case", CONV2D, ids=str)
def test_conv2d_matches_torch_and_the_direct_sum(case):
    x_shape, w_shape, stride, padding, dilation, groups = case
    mod = module_from(conv_spec("conv2d", x_shape, w_shape, _attrs(stride, padding, dilation, groups)))
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(x_shape), "w": rng.standard_normal(w_shape)}
    want = direct_conv(inputs["x"], inputs["w"], stride, padding, dilation, groups)
    dout = rng.standard_normal(want.shape)
    out, grads = run(mod, inputs, dout)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)

    def fn(x, w):
        return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)

    t_out, t_grads = torch_grads(fn, inputs, ("x", "w"), dout)
    np.testing.assert_allclose(out, t_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads.x, t_grads["x"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads.w, t_grads["w"], rtol=1e-10, atol=1e-12)


CONV1D = [
    ((2, 3, 9), (4, 3, 3), 1, 1, 1, 1),
    ((2, 3, 10), (4, 3, 4), 3, 2, 1, 1),
    ((1, 4, 12), (2, 2, 3), 2, 0, 3, 2),
]


@pytest.mark.parametrize("case", CONV1D, ids=str)
def test_conv1d_matches_torch_and_the_direct_sum(case):
    x_shape, w_shape, stride, padding, dilation, groups = case
    mod = module_from(conv_spec("conv1d", x_shape, w_shape, _attrs(stride, padding, dilation, groups)))
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal(x_shape), "w": rng.standard_normal(w_shape)}
    want = direct_conv(inputs["x"], inputs["w"], stride, padding, dilation, groups)
    dout = rng.standard_normal(want.shape)
    out, grads = run(mod, inputs, dout)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)

    def fn(x, w):
        return F.conv1d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)

    _, t_grads = torch_grads(fn, inputs, ("x", "w"), dout)
    np.testing.assert_allclose(grads.x, t_grads["x"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads.w, t_grads["w"], rtol=1e-10, atol=1e-12)


POOLS = [
    # (x shape, kernel, stride, padding)
    ((2, 3, 8, 6), 2, None, 0),
    ((2, 3, 7, 9), 3, 2, 1),
    ((1, 2, 9, 8), (3, 2), (1, 2), (1, 0)),
    ((3, 5, 5), 2, 1, 0),
]


def _pool_attrs(kernel, stride, padding) -> str:
    text = f", {kernel}"
    if stride is not None:
        text += f", stride={stride}"
    if padding:
        text += f", padding={padding}"
    return text


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("case", POOLS, ids=str)
def test_pools_match_torch_with_ties(op, case):
    x_shape, kernel, stride, padding = case
    spec = (
        f"inputs:\n  x: {shape_text(x_shape)}\ngraph:\n  y: {op}(x{_pool_attrs(kernel, stride, padding)})\n"
    )
    mod = module_from(spec)
    rng = np.random.default_rng(2)
    # few distinct values: most windows hold a tie for their maximum
    inputs = {"x": rng.integers(-2, 3, size=x_shape).astype(np.float64)}

    def fn(x):
        torch_op = getattr(F, op)
        return torch_op(x, kernel, stride=stride, padding=padding)

    t_out, _ = torch_grads(fn, inputs, ("x",), np.zeros(fn(torch.tensor(inputs["x"])).shape))
    dout = rng.standard_normal(t_out.shape)
    out, grads = run(mod, inputs, dout)
    _, t_grads = torch_grads(fn, inputs, ("x",), dout)
    np.testing.assert_allclose(out, t_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads.x, t_grads["x"], rtol=1e-12, atol=1e-12)


def test_max_pool_gives_a_tied_window_to_its_first_maximum_only():
    mod = module_from("inputs:\n  x: [1, 1, 2, 4]\ngraph:\n  y: max_pool2d(x, 2)\n")
    x = np.array([[[[1.0, 1.0, 0.0, 2.0], [1.0, 0.0, 2.0, 2.0]]]])
    out, grads = run(mod, {"x": x}, np.array([[[[3.0, 5.0]]]]))
    np.testing.assert_array_equal(out, [[[[1.0, 2.0]]]])
    np.testing.assert_array_equal(grads.x, [[[[3.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]]]])


@pytest.mark.parametrize("widths", ["1", "((0, 0), (2, 1), (0, 3))", "((1, 1), (0, 0), (0, 0))"])
def test_pad_matches_torch(widths):
    mod = module_from(f"inputs:\n  x: [2, 3, 4]\ngraph:\n  y: pad(x, {widths}, value=-1.5)\n")
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((2, 3, 4))}
    pairs = eval(widths)  # the test's own literal
    pairs = ((pairs, pairs),) * 3 if isinstance(pairs, int) else pairs
    flat = [v for pair in reversed(pairs) for v in pair]  # torch pads from the last axis backwards

    def fn(x):
        return F.pad(x, flat, value=-1.5)

    t_out, _ = torch_grads(fn, inputs, ("x",), np.zeros(fn(torch.tensor(inputs["x"])).shape))
    dout = rng.standard_normal(t_out.shape)
    out, grads = run(mod, inputs, dout)
    _, t_grads = torch_grads(fn, inputs, ("x",), dout)
    np.testing.assert_array_equal(out, t_out)
    np.testing.assert_array_equal(grads.x, t_grads["x"])


def test_small_cnn_matches_torch():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "specs" / "small_cnn.yaml").read_text()
    mod = module_from(text, "small_cnn.yaml")
    rng = np.random.default_rng(4)
    N, S, C1, C2, K = 3, 2, 4, 5, 6
    inputs = {
        "x": rng.standard_normal((N, 3, 4 * S, 4 * S)),
        "y": rng.integers(0, K, size=N),
        "W1": rng.standard_normal((C1, 3, 3, 3)) * 0.3,
        "b1": rng.standard_normal((C1, 1, 1)),
        "W2": rng.standard_normal((C2, C1, 3, 3)) * 0.3,
        "b2": rng.standard_normal((C2, 1, 1)),
        "W3": rng.standard_normal((C2, S, S, K)) * 0.3,
        "b3": rng.standard_normal(K),
    }
    loss, grads = mod.value_and_grad(**inputs)

    def fn(x, y, W1, b1, W2, b2, W3, b3):
        h1 = F.max_pool2d(F.relu(F.conv2d(x, W1, padding=1) + b1), 2)
        h2 = F.max_pool2d(F.relu(F.conv2d(h1, W2, padding=1) + b2), 2)
        logits = torch.einsum("nchw,chwk->nk", h2, W3) + b3
        return F.cross_entropy(logits, y)

    wrt = ("W1", "b1", "W2", "b2", "W3", "b3")
    t_loss, t_grads = torch_grads(fn, inputs, wrt, np.array(1.0))
    np.testing.assert_allclose(loss, t_loss, rtol=1e-12)
    for name in wrt:
        np.testing.assert_allclose(getattr(grads, name), t_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("op", ["conv2d(x, w, stride=2, padding=1)", "conv2d(x, w, dilation=2, groups=2)"])
def test_conv_float32_stays_float32(op):
    mod = module_from(
        f"inputs:\n  x: [2, 4, 8, 8]\n  w: [4, 2, 3, 3]\ngraph:\n  y: sum(relu({op}))\n".replace(
            "w: [4, 2", "w: [4, 4" if "groups" not in op else "w: [4, 2"
        )
    )
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 4 if "groups" not in op else 2, 3, 3)).astype(np.float32)
    value, grads = mod.value_and_grad(x, w)
    assert np.asarray(value).dtype == np.float32
    assert grads.x.dtype == np.float32 and grads.w.dtype == np.float32
