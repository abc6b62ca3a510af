"""pad, the convolutions and the pools without torch: run-time size checks, the generated tests' sizes,
the emitted code's shape (vectorized, unrolled per kernel offset), and the derivative kinds.

(The values and gradients against torch and a direct sum are in tests/test_torch_conv.py.)
"""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

from gradgen.pipeline import build_text

TEXT_CONV = """inputs:
  tokens: {shape: [N, T], dtype: int}
  E: [V, D]
  w3: [F, D, 3]
  w5: [F, D, 5]
graph:
  x: transpose(take(E, tokens), (0, 2, 1))
  s: sum(tanh(conv1d(x, w3))) + sum(tanh(conv1d(x, w5, padding=1)))
"""


def built(text: str, name: str = "spec.yaml"):
    b = build_text(name, text)
    files = dict(b.files)
    mod = types.ModuleType(b.name)
    exec(compile(files[f"{b.name}.py"], f"{b.name}.py", "exec"), mod.__dict__)
    return mod, files[f"{b.name}.py"], files[f"test_{b.name}.py"]


def test_a_size_smaller_than_the_window_is_a_value_error_naming_the_dim():
    mod, _, _ = built(TEXT_CONV)
    E, w3, w5 = np.ones((5, 3)), np.ones((2, 3, 3)), np.ones((2, 3, 5))
    # the wider window pads by 1, so it needs 5 - 2 = 3 entries: the same as the window of 3
    mod.forward(np.zeros((2, 3), int), E, w3, w5)
    with pytest.raises(ValueError, match=r"^T is 2, but s slides a window of 3 along it \(conv1d\)$"):
        mod.forward(np.zeros((2, 2), int), E, w3, w5)
    with pytest.raises(ValueError, match=r"^T is 0, but"):
        mod.forward(np.zeros((2, 0), int), E, w3, w5)


def test_the_generated_tests_size_a_windowed_dim_large_enough_and_distinct():
    text = TEXT_CONV.replace("padding=1", "padding=0")
    _, module, tests = built(text)
    assert "if T < 5:" in module
    sizes = eval(re.search(r"^SIZES = (\{.*\})$", tests, re.M).group(1))  # the test file's own table
    assert sizes["T"] >= 5 and len(set(sizes.values())) == len(sizes), sizes


def test_a_size_the_spec_proves_large_enough_is_not_checked():
    text = (
        "inputs:\n  x: [N, C, 4*S, 4*S]\n  w: [O, C, 3, 3]\n  v: [S]\ngraph:\n"
        "  y: sum(conv2d(x, w, padding=1)) + sum(v)\n"
    )
    _, module, _ = built(text)
    # 4*S >= 3 - 2 * 1 for every S >= 1: only the zero-size check
    assert " < " not in module.split("def forward")[0].split("def _check_inputs")[1] and "S is 0" in module


def test_conv_and_pool_code_is_vectorized_and_unrolled_per_kernel_offset():
    text = (
        "inputs:\n  x: [N, C, 8, 8]\n  w: [O, C, 3, 3]\ngraph:\n"
        "  y: sum(avg_pool2d(max_pool2d(conv2d(x, w, stride=2, padding=1), 2, stride=1), 3, padding=1))\n"
    )
    _, module, _ = built(text)
    functions = module[module.index("def forward") :]  # (the input checks loop over the inputs)
    assert not re.search(r"^\s*(for|while) ", functions, re.M), "a Python loop over data"
    assert "sliding_window_view" in module and "np.tensordot" in module
    body = module[module.index("def backward") : module.index("def value_and_grad")]
    # the input gradient: one line per 3x3 kernel offset; the 2x2 max-pool: one per offset
    assert len(re.findall(r"_grid\[:, [^]]*\] \+?= ", body)) == 9, body
    assert len(re.findall(r"\] \+?= \w+ \* \w+_hit", body)) == 4, body


def test_attributes_are_checked_where_written():
    bad = "inputs:\n  x: [N, C, 8, 8]\n  w: [O, C, 3, 3]\ngraph:\n  y: sum(conv2d(x, w, stride=0))\n"
    with pytest.raises(Exception, match="stride of conv2d must be at least 1, got 0"):
        build_text("spec.yaml", bad)


@pytest.mark.parametrize(
    "graph",
    [
        "conv2d(pad(x, ((0, 0), (0, 0), (1, 0), (0, 2)), value=0.5), w, stride=2, padding=1)",
        "avg_pool2d(max_pool2d(conv2d(x, w, dilation=2, padding=2), 3, stride=2, padding=1), 2, stride=1)",
    ],
)
def test_every_derivative_kind_matches_differences(graph, tmp_path):
    """jvp against differences of forward, and the hessian against differences of the gradient."""
    text = (
        "inputs:\n  x: [2, 2, 7, 6]\n  w: [3, 2, 3, 3]\ngraph:\n"
        f"  y: {graph}\n  s: sum(tanh(y) * tanh(y))\nderivatives: [jvp, hvp, jacobian, hessian]\n"
    )
    mod, _, _ = built(text)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((3, 2, 3, 3))
    tx, tw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    h = 1e-6
    _, out_dot = mod.jvp(x, w, tangents=[tx, tw])
    numeric = (mod.forward(x + h * tx, w + h * tw)[0] - mod.forward(x - h * tx, w - h * tw)[0]) / (2 * h)
    np.testing.assert_allclose(out_dot, numeric, rtol=1e-6, atol=1e-8)
    _, _, H = mod.hessian(x, w)
    _, g_up = mod.value_and_grad(x + h * tx, w + h * tw)
    _, g_down = mod.value_and_grad(x - h * tx, w - h * tw)
    for a, up, down in (("x", g_up.x, g_down.x), ("w", g_up.w, g_down.w)):
        hv = sum(np.tensordot(getattr(getattr(H, a), b), t, axes=t.ndim) for b, t in (("x", tx), ("w", tw)))
        np.testing.assert_allclose(hv, (up - down) / (2 * h), rtol=1e-5, atol=1e-7, err_msg=a)
