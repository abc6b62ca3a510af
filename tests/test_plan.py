"""Unit tests for gradgen.plan: what the backward pass computes, caches and cites.

The mlp spec is copied here (not read from specs/) so that these tests pin the planner, not the spec.
Where a test inspects generated code it also runs it and compares with finite differences, so a
plan that reads well but computes the wrong thing still fails.
"""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

from gradgen.pipeline import build_text, plan_text

MLP = """\
name: mlp
inputs:
  x: [N, D]
  y: {shape: [N], dtype: int}
  W1: [D, H]
  b1: [H]
  W2: [H, C]
  b2: [C]
graph:
  z1: x @ W1 + b1
  h: relu(z1)
  logits: h @ W2 + b2
  loss: softmax_cross_entropy(logits, y)
output: loss
wrt: WRT
"""

BROADCAST_SUM = """\
inputs:
  X: [N, M]
  y: SHAPE
graph:
  B: X + y
  A: sum(tanh(B))
"""

FAN_OUT = """\
inputs:
  x: [N, D]
  W: [D, H]
  c: [H]
graph:
  h: tanh(x @ W)
  loss: sum(h * c) + sum(h) + mean(exp(h))
wrt: [W]
"""


def mlp(wrt: str = "[W1, b1, W2, b2]"):
    plan, _ = plan_text("mlp.yaml", MLP.replace("WRT", wrt))
    return plan


def code_lines(lines) -> list[str]:
    return [ln.code for ln in lines if ln.code]


def targets(lines) -> set[str]:
    """Names assigned (=, +=, ...) by code lines."""
    out = set()
    for code in code_lines(lines):
        m = re.match(r"\s*([A-Za-z_]\w*)(\[[^\]]*\])?\s*([-+*/]?=)(?!=)", code)
        if m:
            out.add(m.group(1))
    return out


def words(lines) -> set[str]:
    return {w for code in code_lines(lines) for w in re.findall(r"[A-Za-z_]\w*", code)}


def module_from(spec_text: str, name: str = "spec.yaml"):
    built = build_text(name, spec_text)
    files = dict(built.files)
    mod = types.ModuleType(built.name)
    exec(compile(files[f"{built.name}.py"], f"{built.name}.py", "exec"), mod.__dict__)
    return mod


def numeric_grad(f, args: dict, name: str, eps=1e-6):
    x = args[name]
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f(**args)
        x[i] = old - eps
        lo = f(**args)
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


# --------------------------------------------------------------------------------------------------
# the cache


def test_mlp_cache_holds_only_what_backward_reads():
    p = mlp()
    read = words(p.backward) | {w for _, e in p.grads for w in re.findall(r"[A-Za-z_]\w*", e)}
    values = [f for f in p.cache_fields if f != "dtype"]
    assert p.cache_fields[-1] == "dtype"
    for f in values:
        assert f in read, f"cache field {f!r} is never read by backward: {p.backward}"
    for needed in ("x", "y", "W2", "h"):
        assert needed in p.cache_fields
    for unneeded in ("W1", "b1", "b2", "z1", "logits", "loss", "D", "H", "C"):
        assert unneeded not in p.cache_fields, (unneeded, p.cache_fields)
    assert len(set(p.cache_fields)) == len(p.cache_fields)


def test_mlp_every_name_backward_reads_is_cached_or_computed_there():
    p = mlp()
    defined = (
        targets(p.backward)
        | set(p.cache_fields)
        | {"dout", "np", "dtype", "T", "sum", "axis", "keepdims", "arange", "multiply", "out"}
    )
    free = words(p.backward) - defined
    assert not free, f"backward reads {free} that it neither computes nor takes from the cache"


@pytest.mark.parametrize(
    "wrt, cached, not_cached",
    [
        ("[W2]", {"h", "y"}, {"x", "W2", "W1"}),
        ("[b2]", {"y"}, {"x", "h", "W2", "W1"}),
        ("[W1]", {"x", "h", "W2", "y"}, {"W1", "b1", "b2"}),
    ],
)
def test_cache_shrinks_with_wrt(wrt, cached, not_cached):
    fields = set(mlp(wrt).cache_fields)
    assert cached <= fields
    assert not (not_cached & fields), fields


# --------------------------------------------------------------------------------------------------
# the backward lines and their rule comments


def test_mlp_backward_lines_cite_the_notes():
    lines = {(ln.code, ln.comment) for ln in mlp().backward}
    assert ("dW1 = x.T @ dz1", "matmul rule, notes section 5") in lines
    assert ("dW2 = h.T @ dlogits", "matmul rule, notes section 5") in lines
    assert ("dh = dlogits @ W2.T", "matmul rule, notes section 5") in lines
    assert ("db2 = dlogits.sum(axis=0)", "broadcast sum rule, notes section 6") in lines
    assert ("db1 = dz1.sum(axis=0)", "broadcast sum rule, notes section 6") in lines
    sce = [c for c, k in lines if k and "notes section 2" in k]
    assert any(re.fullmatch(r"dlogits\[(\w+|np\.arange\(N\)), y\] -= \w+", c) for c in sce), sce  # no one-hot
    assert not any("eye" in c or "onehot" in c for c in code_lines(mlp().backward))


def test_mlp_backward_sections_are_headed_by_their_spec_lines():
    comments = [ln.comment for ln in mlp().backward if not ln.code]
    assert comments == [
        "loss = softmax_cross_entropy(logits, y)",
        "logits = h @ W2 + b2",
        "h = relu(z1)",
        "z1 = x @ W1 + b1",
    ]


def test_every_backward_line_names_its_rule():
    for p in (mlp(), plan_text("f.yaml", FAN_OUT)[0]):
        for ln in p.backward + p.fused[-len(p.backward) :]:
            if ln.code and not ln.code.startswith("dout"):
                assert ln.comment, f"backward line without a rule comment: {ln.code!r}"


def test_forward_lines_carry_shapes():
    p = mlp()
    shaped = {ln.code: ln.comment for ln in p.forward if ln.code}
    assert shaped["z1 = x @ W1"] == "[N, H]"
    assert shaped["logits = h @ W2"] == "[N, C]"
    assert any(c.startswith("loss = ") and shaped[c] == "[]" for c in shaped)


@pytest.mark.parametrize(
    "shape, line",
    [
        ("[M]", "dy = dB.sum(axis=0)"),
        ("[1, M]", "dy = dB.sum(axis=0, keepdims=True)"),
        ("[N, 1]", "dy = dB.sum(axis=-1, keepdims=True)"),
        ("[]", "dy = dB.sum()"),
    ],
)
def test_broadcast_sum_reduces_over_the_broadcast_axes(shape, line):
    p, _ = plan_text("b.yaml", BROADCAST_SUM.replace("SHAPE", shape))
    lines = {(ln.code, ln.comment) for ln in p.backward}
    hits = [c for c, k in lines if c.startswith("dy = ")]
    if shape == "[N, 1]":
        assert hits and re.fullmatch(r"dy = dB\.sum\(axis=(-1|1), keepdims=True\)", hits[0]), hits
    else:
        assert (line, "broadcast sum rule, notes section 6") in lines, hits
    assert ("dX = dB", "sum rule") in lines or any(c.startswith("dX = dB") for c, _ in lines)


@pytest.mark.parametrize("shape", ["[M]", "[1, M]", "[N, 1]", "[]"])
def test_broadcast_sum_gradients_are_right(shape):
    mod = module_from(BROADCAST_SUM.replace("SHAPE", shape))
    rng = np.random.default_rng(0)
    sizes = {"N": 3, "M": 4}
    dims = [] if shape == "[]" else [d.strip() for d in shape.strip("[]").split(",")]
    args = {
        "X": rng.normal(size=(3, 4)),
        "y": rng.normal(size=tuple(sizes.get(d, 1) if not d.isdigit() else int(d) for d in dims)),
    }
    _, grads = mod.value_and_grad(**args)
    f = lambda **kw: float(mod.forward(**kw)[0])
    for name in ("X", "y"):
        got = getattr(grads, name)
        assert got.shape == args[name].shape
        np.testing.assert_allclose(got, numeric_grad(f, args, name), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# only the adjoints on a path to a wrt input


def test_wrt_w2_computes_no_first_layer_adjoints():
    p = mlp("[W2]")
    assigned = targets(p.backward)
    assert "dW2" in assigned
    for name in ("dW1", "db1", "dz1", "dh", "db2", "dx"):
        assert name not in assigned, (name, code_lines(p.backward))
    assert not any(re.match(r"d(W1|z1|b1|h)\b", c) for c in code_lines(p.fused))
    assert [n for n, _ in p.grads] == ["W2"]


def test_wrt_b1_needs_the_path_through_h_but_not_dw2():
    p = mlp("[b1]")
    assigned = targets(p.backward)
    assert {"dh", "dz1", "db1"} <= assigned
    assert not ({"dW1", "dW2", "db2"} & assigned)


def test_gradients_follow_wrt_order():
    p = mlp("[b2, W1]")
    assert [n for n, _ in p.grads] == ["b2", "W1"]
    assert p.wrt == ("b2", "W1")


# --------------------------------------------------------------------------------------------------
# fan-out: the multi-path chain rule


def test_fan_out_accumulates_over_every_use():
    p, _ = plan_text("f.yaml", FAN_OUT)
    dh = [ln for ln in p.backward if re.match(r"dh\b", ln.code)]
    accumulated = [ln for ln in dh if ln.comment and "accumulated over uses (notes section 3)" in ln.comment]
    # h is used by h * c, sum(h) and exp(h): the first use assigns, the other two accumulate
    assert len(accumulated) == 2, [(ln.code, ln.comment) for ln in dh]
    assert dh[0].code.startswith("dh = ")
    assert not any(re.match(r"d(x|c)\b", ln.code) for ln in p.backward)  # x and c are not in wrt


def test_fan_out_gradient_is_right():
    mod = module_from(FAN_OUT)
    rng = np.random.default_rng(1)
    args = {"x": rng.normal(size=(3, 4)), "W": rng.normal(size=(4, 5)) * 0.5, "c": rng.normal(size=5)}
    loss, grads = mod.value_and_grad(**args)
    out, cache = mod.forward(**args)
    assert float(out) == pytest.approx(float(loss))
    f = lambda **kw: float(mod.forward(**kw)[0])
    expected = numeric_grad(f, args, "W")
    np.testing.assert_allclose(grads.W, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mod.backward(2.0, cache).W, 2 * expected, rtol=1e-5, atol=1e-7)
    assert list(grads._fields) == ["W"]


def test_mlp_generated_gradients_are_right_for_a_wrt_subset():
    mod = module_from(MLP.replace("WRT", "[W2, b1]"))
    rng = np.random.default_rng(2)
    N, D, H, C = 4, 3, 5, 6
    args = {
        "x": rng.normal(size=(N, D)),
        "y": rng.integers(0, C, size=N),
        "W1": rng.normal(size=(D, H)),
        "b1": rng.normal(size=H),
        "W2": rng.normal(size=(H, C)),
        "b2": rng.normal(size=C),
    }
    _, grads = mod.value_and_grad(**args)
    assert list(grads._fields) == ["W2", "b1"]
    f = lambda **kw: float(mod.forward(**kw)[0])
    for name in ("W2", "b1"):
        np.testing.assert_allclose(getattr(grads, name), numeric_grad(f, args, name), rtol=1e-5, atol=1e-7)
