"""Unit tests for gradgen.lower: expressions to graph nodes, CSE, name resolution, literals, attrs."""

from __future__ import annotations

import pytest

from gradgen.diagnostics import SpecError
from gradgen.ir import Const
from gradgen.load import load
from gradgen.lower import lower


def lowered(text: str, path: str = "spec.yaml"):
    graph, warnings = lower(load(path, text))
    return graph, [str(w) for w in warnings]


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        lower(load("spec.yaml", text))
    return [str(d) for d in info.value.diagnostics]


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def node_of(graph, name):
    return next(graph.nodes[e.node] for e in graph.entries if e.name == name)


# --------------------------------------------------------------------------------------------------
# common subexpression elimination


def test_cse_merges_identical_subexpressions_within_an_entry():
    g, _ = lowered("inputs:\n  x: [N, D]\n  W: [D, H]\ngraph:\n  a: exp(x @ W) + exp(x @ W)\n")
    assert ops(g).count("matmul") == 1
    assert ops(g).count("exp") == 1
    a = node_of(g, "a")
    assert a.op == "add" and a.args[0] == a.args[1]  # both operands are the one exp node


def test_cse_merges_across_entries_and_the_first_name_wins():
    g, _ = lowered("inputs:\n  x: [N]\ngraph:\n  a: x * 2\n  b: x * 2\n  c: a + b\n")
    assert ops(g).count("mul") == 1
    na, nb = node_of(g, "a"), node_of(g, "b")
    assert na.id == nb.id and na.name == "a"
    c = node_of(g, "c")
    assert c.args == (na.id, na.id)


def test_cse_names_a_subexpression_that_a_later_entry_repeats():
    g, _ = lowered(
        "inputs:\n  x: [N, D]\n  W: [D, H]\ngraph:\n  a: sum(exp(x @ W))\n  b: x @ W\n  c: a + sum(b)\n"
    )
    assert ops(g).count("matmul") == 1
    b = node_of(g, "b")
    assert b.op == "matmul" and b.name == "b"
    exp = next(n for n in g.nodes if n.op == "exp")
    assert exp.args == (b.id,)


def test_cse_keeps_different_attrs_and_operand_orders_apart():
    g, _ = lowered(
        "inputs:\n  x: [N, D]\ngraph:\n  a: sum(x, axis=0)\n  b: sum(x, axis=1)\n"
        "  c: sum(x, axis=0, keepdims=True)\n  d: x - exp(x)\n  e: exp(x) - x\n"
        "  f: sum(a) + sum(b) + sum(c) + sum(d) + sum(e)\n"
    )
    sums = [n for n in g.nodes if n.op == "sum" and n.refs and g.nodes[n.refs[0]].op == "input"]
    assert len(sums) == 3
    assert ops(g).count("sub") == 2
    assert ops(g).count("exp") == 1


# --------------------------------------------------------------------------------------------------
# literals and attrs


def test_literals_become_consts_and_fold_unary_minus():
    g, _ = lowered("inputs:\n  x: [N]\ngraph:\n  a: 2 * x - (-3) + x / 0.5\n  b: +x\n")
    consts = [a for n in g.nodes for a in n.args if isinstance(a, Const)]
    assert [(c.value, c.text) for c in consts] == [(2, "2"), (-3, "-3"), (0.5, "0.5")]
    mul = next(n for n in g.nodes if n.op == "mul")
    assert isinstance(mul.args[0], Const) and mul.args[1] == 0  # literal on the left stays on the left
    assert node_of(g, "b").id == 0  # unary plus is the operand itself
    assert "neg" not in ops(g)


def test_power_takes_a_literal_exponent_as_an_attr():
    g, _ = lowered("inputs:\n  x: [N]\ngraph:\n  a: x ** 2 + x ** -0.5 + -x\n")
    pows = [n for n in g.nodes if n.op == "pow"]
    assert [p.attr("k") for p in pows] == [2, -0.5]
    assert all(p.args == (0,) for p in pows)
    assert ops(g).count("neg") == 1


@pytest.mark.parametrize(
    "expr, op, attrs",
    [
        ("sum(x)", "sum", (("axis", None), ("keepdims", False))),
        ("sum(x, axis=0)", "sum", (("axis", 0), ("keepdims", False))),
        ("sum(x, -1, True)", "sum", (("axis", -1), ("keepdims", True))),
        ("mean(x, axis=(0, 1), keepdims=True)", "mean", (("axis", (0, 1)), ("keepdims", True))),
        ("mean(x, axis=[1, 0])", "mean", (("axis", (1, 0)), ("keepdims", False))),
        ("logsumexp(x)", "logsumexp", (("axis", -1), ("keepdims", False))),
        ("softmax(x, axis=0)", "softmax", (("axis", 0),)),
        ("log_softmax(x)", "log_softmax", (("axis", -1),)),
        ("x.T", "transpose", (("axes", None),)),
        ("transpose(x, axes=[1, 0])", "transpose", (("axes", (1, 0)),)),
    ],
)
def test_call_attrs_with_defaults(expr, op, attrs):
    g, _ = lowered(f"inputs:\n  x: [N, D]\ngraph:\n  a: {expr}\n")
    a = node_of(g, "a")
    assert a.op == op and a.args == (0,) and a.attrs == attrs


@pytest.mark.parametrize(
    "call, reduction",
    [
        ("softmax_cross_entropy(z, y)", "mean"),
        ('softmax_cross_entropy(z, y, reduction="sum")', "sum"),
        ("softmax_cross_entropy(labels=y, logits=z)", "mean"),
    ],
)
def test_softmax_cross_entropy_operands_and_reduction(call, reduction):
    g, _ = lowered(f"inputs:\n  z: [N, C]\n  y: {{shape: [N], dtype: int}}\ngraph:\n  loss: {call}\n")
    loss = node_of(g, "loss")
    assert loss.args == (0, 1)  # logits, labels: in parameter order whatever the call order
    assert loss.attr("reduction") == reduction


# --------------------------------------------------------------------------------------------------
# name resolution, output, wrt


def test_names_resolve_to_inputs_and_earlier_entries():
    g, _ = lowered("inputs:\n  x: [N]\n  w: [N]\ngraph:\n  a: x * w\n  b: a + x\n")
    a, b = node_of(g, "a"), node_of(g, "b")
    assert a.args == (0, 1) and b.args == (a.id, 0)
    assert [i.name for i in g.inputs] == ["x", "w"]
    assert b.entry == "b" and g.nodes[0].entry is None


@pytest.mark.parametrize(
    "graph, fragments",
    [
        ("  y: z + x\n  z: x\n", ["'z'", "before it is defined", "line 5"]),
        ("  y: q + x\n", ["unknown name 'q'"]),
        ("  y: y + x\n", ["'y'", "its own definition"]),
        ("  y: x(2)\n", ["'x'", "not an op"]),
    ],
)
def test_name_errors(graph, fragments):
    (msg,) = errors("inputs:\n  x: [N]\ngraph:\n" + graph)
    assert msg.startswith("spec.yaml:4:6: error: "), msg  # the offending name starts the expression
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_output_and_wrt_defaults():
    g, warnings = lowered(
        "inputs:\n  x: [N]\n  y: {shape: [N], dtype: int}\n  w: [N]\n" "graph:\n  a: x * w\n  b: sum(a)\n"
    )
    assert g.output == node_of(g, "b").id
    assert [g.nodes[i].name for i in g.wrt] == ["x", "w"]  # every float input, in input order
    assert warnings == []


def test_explicit_output_and_wrt_order_and_unused_entry_warning():
    g, warnings = lowered(
        "inputs:\n  x: [N]\n  w: [N]\ngraph:\n  a: sum(x * w)\n  b: sum(x)\n" "output: a\nwrt: [w, x]\n"
    )
    assert g.output == node_of(g, "a").id
    assert [g.nodes[i].name for i in g.wrt] == ["w", "x"]
    assert len(warnings) == 1
    assert (
        warnings[0].startswith("spec.yaml:6:3: warning: ")
        and "'b'" in warnings[0]
        and "not used" in warnings[0]
    )


def test_module_name_from_name_key_or_file_stem():
    assert lowered("inputs:\n  x: [N]\ngraph:\n  a: x\n", "dir/my_net.yaml")[0].name == "my_net"
    assert lowered("name: other\ninputs:\n  x: [N]\ngraph:\n  a: x\n", "dir/my_net.yaml")[0].name == "other"


def test_input_shapes_and_dim_origins():
    g, _ = lowered("inputs:\n  x: [N, D]\n  w: [D, 1]\n  s: []\ngraph:\n  a: x @ w\n")
    assert [str(d) for d in g.inputs[0].shape] == ["N", "D"]
    assert [str(d) for d in g.inputs[1].shape] == ["D", "1"]
    assert g.inputs[1].shape[1].is_const and g.inputs[2].shape == ()
    assert [d for d, _, _ in g.dim_origin] == ["N", "D"]  # order of first appearance
    assert g.dim_origin[1][2].line == 2 and g.dim_origin[1][2].col == 10
