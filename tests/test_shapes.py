"""Unit tests for gradgen.shapes (and the op table's shape rules): symbolic shape inference."""

from __future__ import annotations

import pytest

from gradgen.diagnostics import SpecError
from gradgen.load import load
from gradgen.lower import lower
from gradgen.shapes import infer


def spec(inputs: dict[str, str], expr: str) -> str:
    lines = ["inputs:"] + [f"  {k}: {v}" for k, v in inputs.items()] + ["graph:", f"  out: {expr}"]
    return "\n".join(lines) + "\n"


def shape_of(inputs: dict[str, str], expr: str) -> str:
    graph, _ = lower(load("s.yaml", spec(inputs, expr)))
    typed = infer(graph)
    return str(typed.types[graph.output])


def errors_of(inputs: dict[str, str], expr: str) -> list[str]:
    graph, _ = lower(load("s.yaml", spec(inputs, expr)))
    with pytest.raises(SpecError) as info:
        infer(graph)
    return [str(d) for d in info.value.diagnostics]


INT = "{shape: [N], dtype: int}"


@pytest.mark.parametrize(
    "inputs, expr, shape",
    [
        ({"x": "[N, D]", "y": "[D]"}, "x + y", "[N, D]"),
        ({"x": "[N, D]", "y": "[1, D]"}, "x - y", "[N, D]"),
        ({"x": "[N, 1]", "y": "[1, D]"}, "x * y", "[N, D]"),
        ({"x": "[N, 1]", "y": "[D]"}, "x / y", "[N, D]"),
        ({"x": "[1]", "y": "[N, D]"}, "x + y", "[N, D]"),
        ({"x": "[N, 1]", "y": "[1]"}, "x * y", "[N, 1]"),
        ({"x": "[]", "y": "[N, D]"}, "x * y", "[N, D]"),
        ({"x": "[B, 1, D]", "y": "[N, 1]"}, "x + y", "[B, N, D]"),
        ({"x": "[N, 3]", "y": "[3]"}, "x + y", "[N, 3]"),
        ({"x": "[N, D]"}, "x + 1", "[N, D]"),
        ({"x": "[N, D]"}, "2.5 * x - 1", "[N, D]"),
        ({"x": "[N, D]"}, "-x ** 2", "[N, D]"),
        ({"x": "[N, D]"}, "x.T", "[D, N]"),
        ({"x": "[B, N, D]"}, "x.T", "[D, N, B]"),
        ({"x": "[B, N, D]"}, "transpose(x, axes=[0, 2, 1])", "[B, D, N]"),
        ({"x": "[N, D]"}, "exp(log(sqrt(tanh(sigmoid(relu(square(abs(x))))))))", "[N, D]"),
    ],
)
def test_broadcasting_and_elementwise(inputs, expr, shape):
    assert shape_of(inputs, expr) == shape


@pytest.mark.parametrize(
    "inputs, expr, shape",
    [
        ({"X": "[N, M]", "Y": "[M, P]"}, "X @ Y", "[N, P]"),  # 2-D @ 2-D
        ({"W": "[N, M]", "x": "[M]"}, "W @ x", "[N]"),  # 2-D @ 1-D, notes section 3
        ({"x": "[M]", "W": "[M, N]"}, "x @ W", "[N]"),  # 1-D @ 2-D, notes section 4
        ({"a": "[M]", "b": "[M]"}, "a @ b", "[]"),  # 1-D @ 1-D
        ({"x": "[N, D]"}, "x.T @ x", "[D, D]"),
        ({"x": "[B, N, D]", "W": "[D, M]"}, "x @ W", "[B, N, M]"),  # batched @ 2-D
        ({"x": "[B, N, D]", "W": "[B, D, M]"}, "x @ W", "[B, N, M]"),
        ({"x": "[B, 1, N, D]", "W": "[K, D, M]"}, "x @ W", "[B, K, N, M]"),  # batch dims broadcast
        ({"x": "[N, D]", "W": "[B, D, M]"}, "x @ W", "[B, N, M]"),
        ({"x": "[B, N, D]", "v": "[D]"}, "x @ v", "[B, N]"),
        ({"v": "[N]", "x": "[B, N, D]"}, "v @ x", "[B, D]"),
    ],
)
def test_matmul_cases(inputs, expr, shape):
    assert shape_of(inputs, expr) == shape


@pytest.mark.parametrize(
    "expr, shape",
    [
        ("sum(x)", "[]"),
        ("sum(x, axis=0)", "[N, D]"),
        ("sum(x, axis=-1)", "[B, N]"),
        ("sum(x, axis=1, keepdims=True)", "[B, 1, D]"),
        ("sum(x, axis=(0, 2))", "[N]"),
        ("sum(x, axis=(-1, 0), keepdims=True)", "[1, N, 1]"),
        ("sum(x, keepdims=True)", "[1, 1, 1]"),
        ("mean(x)", "[]"),
        ("mean(x, axis=-2)", "[B, D]"),
        ("mean(x, axis=(1, 2), keepdims=True)", "[B, 1, 1]"),
        ("logsumexp(x)", "[B, N]"),
        ("logsumexp(x, axis=0, keepdims=True)", "[1, N, D]"),
        ("logsumexp(x, axis=None)", "[]"),
        ("softmax(x)", "[B, N, D]"),
        ("log_softmax(x, axis=0)", "[B, N, D]"),
    ],
)
def test_reductions_and_axis_ops(expr, shape):
    assert shape_of({"x": "[B, N, D]"}, expr) == shape


@pytest.mark.parametrize(
    "inputs",
    [
        {"z": "[N, C]", "y": "{shape: [N], dtype: int}"},  # class indices
        {"z": "[N, C]", "y": "[N, C]"},  # one-hot rows or probabilities
        {"z": "[C]", "y": "{shape: [], dtype: int}"},  # one logit vector, one index (notes section 2)
        {"z": "[C]", "y": "[C]"},
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_cross_entropy_label_forms_give_a_scalar(inputs, reduction):
    assert shape_of(inputs, f'softmax_cross_entropy(z, y, reduction="{reduction}")') == "[]"


@pytest.mark.parametrize(
    "inputs, expr, fragments",
    [
        ({"x": "[N, D]", "y": "[N]"}, "x + y", ["do not broadcast", "D (x, line 2)", "N (y, line 3)"]),
        ({"x": "[N, D]", "y": "[M, D]"}, "x * y", ["do not broadcast", "N (x, line 2)", "M (y, line 3)"]),
        # a literal dim is never assumed equal to a symbolic one
        ({"x": "[N, 3]", "y": "[D]"}, "x + y", ["do not broadcast", "3 (x, line 2)", "D (y, line 3)"]),
        (
            {"x": "[N, D]", "W": "[H, C]"},
            "x @ W",
            ["matmul inner dims differ: D (x, line 2) vs H (W, line 3)", "[N, D] @ [H, C]"],
        ),
        ({"W": "[N, M]", "x": "[N]"}, "W @ x", ["matmul inner dims differ: M (W, line 2) vs N (x, line 3)"]),
        ({"x": "[M]", "W": "[N, M]"}, "x @ W", ["matmul inner dims differ: M (x, line 2) vs N (W, line 3)"]),
        ({"x": "[]", "v": "[N]"}, "x @ v", ["matmul", "x, line 2", "scalar"]),
        (
            {"x": "[B, N, D]", "W": "[C, D, M]"},
            "x @ W",
            ["do not broadcast", "B (x, line 2)", "C (W, line 3)"],
        ),
        ({"x": "[N, D]"}, "sum(x, axis=2)", ["axis 2 is out of range", "x, line 2", "rank 2"]),
        ({"x": "[N, D]"}, "mean(x, axis=-3)", ["axis -3 is out of range", "x, line 2"]),
        ({"x": "[N, D]"}, "sum(x, axis=(0, -2))", ["repeats an axis"]),
        ({"x": "[N, D]"}, "softmax(x, axis=2)", ["axis 2 is out of range"]),
        ({"x": "[N, D]", "y": INT}, "x * y", ["int tensor y, line 3", "arithmetic"]),
        ({"x": "[N, D]", "y": INT}, "exp(y) + x", ["int tensor y, line 3", "exp"]),
        (
            {"z": "[N, C]", "y": "{shape: [N, C], dtype: int}"},
            "softmax_cross_entropy(z, y)",
            ["int labels", "[N]", "y, line 3 has shape [N, C]"],
        ),
        (
            {"z": "[N, C]", "y": "{shape: [C], dtype: int}"},
            "softmax_cross_entropy(z, y)",
            ["int labels", "[N]", "y, line 3 has shape [C]"],
        ),
        (
            {"z": "[N, C]", "y": "[N]"},
            "softmax_cross_entropy(z, y)",
            ["float labels", "[N, C]", "y, line 3 has shape [N]"],
        ),
        (
            {"z": "[B, N, C]", "y": "{shape: [B, N], dtype: int}"},
            "softmax_cross_entropy(z, y)",
            ["[C] or [N, C]", "z, line 2", "[B, N, C]"],
        ),
    ],
)
def test_shape_errors_name_the_dims_and_where_they_come_from(inputs, expr, fragments):
    msgs = errors_of(inputs, expr)
    assert len(msgs) == 1, msgs
    place, sep, text = msgs[0].partition(": error: ")
    assert sep, msgs[0]
    path, line, col = place.split(":")
    assert path == "s.yaml"
    assert int(line) == len(inputs) + 3  # the graph entry's line
    assert int(col) >= 3
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_every_failing_entry_is_reported_without_cascading():
    text = (
        "inputs:\n  x: [N, D]\n  y: [M]\ngraph:\n  a: x + y\n  b: a * 2\n  c: sum(x, axis=5)\n"
        "  d: sum(b) + sum(c)\n"
    )
    graph, _ = lower(load("s.yaml", text))
    with pytest.raises(SpecError) as info:
        infer(graph)
    msgs = [str(d) for d in info.value.diagnostics]
    assert len(msgs) == 2, msgs  # a and c; b and d depend on them and are not reported again
    assert msgs[0].startswith("s.yaml:5:") and "do not broadcast" in msgs[0]
    assert msgs[1].startswith("s.yaml:7:") and "axis 5 is out of range" in msgs[1]


def test_every_node_gets_a_type_and_int_inputs_keep_their_dtype():
    text = "inputs:\n  x: [N, C]\n  y: {shape: [N], dtype: int}\ngraph:\n  h: tanh(x)\n  loss: softmax_cross_entropy(h, y)\n"
    graph, _ = lower(load("s.yaml", text))
    typed = infer(graph)
    assert len(typed.types) == len(graph.nodes)
    assert [str(t) for t in typed.types] == ["[N, C]", "[N] int", "[N, C]", "[]"]
