"""Unit tests for gradgen.lower: expressions to graph nodes, CSE, name resolution, literals, attrs."""

from __future__ import annotations

import math

import pytest

from gradgen.diagnostics import SpecError
from gradgen.dims import Dim
from gradgen.ir import Const
from gradgen.load import load
from gradgen.lower import lower
from gradgen.ops import callable_ops


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


def test_a_tensor_exponent_is_a_power_node_with_two_operands():
    g, _ = lowered("inputs:\n  x: [N]\n  k: [N]\ngraph:\n  a: x ** k + 2 ** k + x ** (2 * 3)\n")
    powers = [n for n in g.nodes if n.op == "power"]
    assert [p.args[1] for p in powers] == [1, 1]
    assert powers[0].args[0] == 0 and powers[1].args[0].value == 2  # 2 ** k: a number base
    assert [n.attr("k") for n in g.nodes if n.op == "pow"] == [6]  # a folded number stays a pow


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


# --------------------------------------------------------------------------------------------------
# separate namespaces: a name in call position is an op, a bare name a value


@pytest.mark.parametrize(
    "name", ["var", "gelu", "cos", "exp", "sum", "max", "abs", "len", "print", "e", "pi"]
)
def test_a_value_may_be_named_like_an_op_or_a_builtin(name):
    g, _ = lowered(f"inputs:\n  x: [N]\ngraph:\n  {name}: exp(x)\n  y: sum({name}) + {name}\n")
    value = node_of(g, name)
    y = node_of(g, "y")
    assert value.op == "exp" and value.name == name
    add = g.nodes[y.id]
    assert add.op == "add" and add.args[1] == value.id  # the bare name is the value
    assert g.nodes[add.args[0]].op == "sum" and g.nodes[add.args[0]].args == (value.id,)  # the call, the op


def test_an_input_named_like_an_op_is_a_value_and_the_op_still_works():
    g, _ = lowered("inputs:\n  exp: [N]\ngraph:\n  y: exp(exp)\n")
    y = node_of(g, "y")
    assert y.op == "exp" and y.args == (0,) and g.nodes[0].name == "exp"


@pytest.mark.parametrize("name", ["np", "dout", "cache", "dtype", "Gradients", "ValueError", "slice"])
def test_names_that_break_the_generated_module_are_still_refused(name):
    (msg,) = errors(f"inputs:\n  x: [N]\ngraph:\n  {name}: exp(x)\n")
    assert f"graph entry {name!r} is reserved in generated modules" in msg


# --------------------------------------------------------------------------------------------------
# numbers folded at build time


def number_operand(expr: str, inputs: str = "  x: [N]\n"):
    g, _ = lowered(f"inputs:\n{inputs}graph:\n  y: x * ({expr})\n")
    (const,) = [a for a in node_of(g, "y").args if isinstance(a, Const)]
    return const


@pytest.mark.parametrize(
    "expr, value, text",
    [
        ("2 ** 0.5", 2**0.5, "1.4142135623730951"),
        ("1 - 0.3", 1 - 0.3, "0.7"),
        ("1 / 3", 1 / 3, "0.3333333333333333"),
        ("-(2*3)", -6, "-6"),
        ("2 * 3", 6, "6"),
        ("2 ** 3", 8, "8"),
        ("6 / 3", 2.0, "2.0"),
        ("2 * pi", 2 * math.pi, repr(2 * math.pi)),
        ("e", math.e, repr(math.e)),
        ("sqrt(2)", math.sqrt(2), repr(math.sqrt(2))),
        ("exp(-1) + log(2)", math.exp(-1) + math.log(2), repr(math.exp(-1) + math.log(2))),
        ("maximum(2, 3.5)", 3.5, "3.5"),
        ("-3", -3, "-3"),  # a signed literal keeps its spelling
        ("1e-5", 1e-5, "1e-5"),
    ],
)
def test_number_only_subexpressions_are_folded(expr, value, text):
    const = number_operand(expr)
    assert const.num is None
    assert const.value == value and type(const.value) is type(value)
    assert const.text == text


def test_a_folded_exponent_is_a_power_attr():
    g, _ = lowered("inputs:\n  x: [N]\ngraph:\n  y: x ** (1 / 3) + x ** -(2 * 0.5)\n")
    assert [n.attr("k") for n in g.nodes if n.op == "pow"] == [1 / 3, -1.0]


def test_values_shadow_the_constants_pi_and_e():
    g, _ = lowered("inputs:\n  x: [N]\n  pi: []\ngraph:\n  y: x * pi\n")
    assert node_of(g, "y").args == (0, 1)  # the input, not 3.14159...


@pytest.mark.parametrize(
    "expr, col, fragment",
    [
        ("x * (1 / 0)", 11, "1 / 0 divides by zero"),
        ("x / (3 - 3)", 6, "x / (3 - 3) divides by zero"),
        ("x + 10.0 ** 400", 10, "10.0 ** 400 overflows"),
        ("x * log(0)", 10, "log(0) is not defined"),
        ("x + (-8) ** (1 / 3)", 10, "is not a real number"),
        ("x * 2 ** 5000", 10, "overflows"),
        ("x * 1" + "0" * 400, 10, "is too large for a float"),
        ("x @ 2", 6, "matmul needs two tensors, not a number"),
        ("x * 0 ** x", 10, "the base of ** with a tensor exponent must be positive, not 0"),
        ("(2 - 3) ** x", 7, "the base of ** with a tensor exponent must be positive, not 2 - 3"),
    ],
)
def test_folding_errors_point_at_the_subexpression(expr, col, fragment):
    (msg,) = errors(f"inputs:\n  x: [N]\ngraph:\n  y: {expr}\n")
    assert msg.startswith(f"spec.yaml:4:{col}: error: "), msg
    assert fragment in msg, msg


# --------------------------------------------------------------------------------------------------
# dims used as numbers: bound from the inputs at run time


def test_a_dim_is_a_number_known_at_run_time():
    const = number_operand("1 / sqrt(K)", "  x: [N]\n  w: [K]\n")
    assert const.value is None and const.text == "1 / sqrt(K)"
    assert const.num.op == "/" and const.num.functions == ("sqrt",)
    n = number_operand("N", "  x: [N]\n")
    assert n.num.op == "dim" and n.num.dim == Dim.sym("N") and n.text == "N"
    two_d = number_operand("2 * N - 1", "  x: [N]\n")
    assert two_d.num.dim == Dim.const(2) * Dim.sym("N") + Dim.const(-1)


def test_a_dim_expression_that_is_constant_folds():
    const = number_operand("N - N + 3")
    assert const.num is None and const.value == 3 and const.text == "3"


def test_sum_over_a_dim():
    g, _ = lowered("inputs:\n  x: [N, D]\ngraph:\n  y: sum(x) / N\n")
    y = node_of(g, "y")
    assert y.op == "div" and y.args[1].num.dim == Dim.sym("N")


def test_values_shadow_dims():
    g, _ = lowered("inputs:\n  x: [N]\n  N: []\ngraph:\n  y: x * N\n")
    assert node_of(g, "y").args == (0, 1)


@pytest.mark.parametrize(
    "expr, fragment",
    [
        ("x ** N", "the exponent of ** must be a number known when the spec is built; N reads a dim"),
        ("x / (N - N)", "x / (N - N) divides by zero"),
        ("x * relu(N)", "relu of a number known only at run time (relu(N)) is not supported"),
        ("x * maximum(N, 2)", "maximum needs at least one tensor operand"),
        ("x * Q", "unknown name 'Q'"),
    ],
)
def test_dim_number_errors(expr, fragment):
    (msg,) = errors(f"inputs:\n  x: [N]\ngraph:\n  y: {expr}\n")
    assert fragment in msg, msg


def test_the_name_math_is_taken_only_when_the_module_imports_math():
    text = "inputs:\n  x: [N]\n  math: [N]\ngraph:\n  y: x * math / {}\n"
    lowered(text.format("N"))  # no math.* in the generated code: fine
    (msg,) = errors(text.format("sqrt(N)"))
    assert msg.startswith("spec.yaml:3:3: error: the name 'math' is taken in this spec"), msg
    assert "(line 5)" in msg


# --------------------------------------------------------------------------------------------------
# products of dims in shapes


def test_input_shapes_may_hold_products_of_dims():
    g, _ = lowered("inputs:\n  x: [B, T, H*Dh]\n  W: [H, Dh, 3 * H*Dh]\ngraph:\n  y: sum(x)\n")
    assert [str(d) for d in g.inputs[0].shape] == ["B", "T", "Dh*H"]
    assert g.inputs[1].shape[2] == Dim.const(3) * Dim.sym("H") * Dim.sym("Dh")
    assert [d for d, _, _ in g.dim_origin] == ["B", "T", "H", "Dh"]  # bound where each stands alone


def test_a_dim_only_inside_products_is_an_error_that_says_how_to_bind_it():
    (msg,) = errors("inputs:\n  x: [N, H*Dh]\n  w: [H]\ngraph:\n  y: sum(x) + sum(w)\n")
    assert msg.startswith("spec.yaml:2:10: error: dim 'Dh' appears only inside products (H*Dh"), msg
    assert "give Dh an axis of its own in some input's shape (an input of shape [Dh]" in msg


def test_reshape_shapes_take_products_and_dims_of_the_spec():
    g, _ = lowered("inputs:\n  x: [B, T, H*Dh]\n  w: [H, Dh]\ngraph:\n  y: reshape(x, [B*T, H, Dh])\n")
    assert node_of(g, "y").attr("shape") == (Dim.sym("B") * Dim.sym("T"), Dim.sym("H"), Dim.sym("Dh"))
    (msg,) = errors("inputs:\n  x: [N, D]\ngraph:\n  y: reshape(x, [N + D])\n")
    assert "a dim of the shape of reshape is a name, an int or a product like B*T" in msg


# --------------------------------------------------------------------------------------------------
# error cascades and hints


def test_an_entry_that_failed_is_still_a_known_name():
    msgs = errors("inputs:\n  x: [N]\ngraph:\n  h: foo(x)\n  k: exp(h) + h\n  m: k * 2 + q\noutput: m\n")
    assert msgs == [
        "spec.yaml:4:6: error: unknown op 'foo'; known ops: "
        + ", ".join(callable_ops())
        + "; `gradgen ops NAME` describes each",
    ]


def test_a_failed_entry_does_not_hide_unrelated_errors():
    msgs = errors("inputs:\n  x: [N]\ngraph:\n  h: foo(x)\n  k: exp(h) + q\n  m: x + z\n")
    assert len(msgs) == 2 and "foo" in msgs[0] and "unknown name 'z'" in msgs[1]


@pytest.mark.parametrize(
    "expr, message",
    [
        ("np.exp(x)", "ops are called by their bare names: write exp(x) instead of np.exp(x)"),
        (
            "numpy.sum(x, axis=0)",
            "ops are called by their bare names: write sum(x, axis=0) instead of numpy.sum(x, axis=0)",
        ),
        ("x.sum()", "methods are not allowed; write sum(x) instead of x.sum()"),
        ("x.sum(axis=0)", "methods are not allowed; write sum(x, axis=0) instead of x.sum(axis=0)"),
        ("x.reshape(N, D)", "methods are not allowed; write reshape(x, [N, D]) instead of x.reshape(N, D)"),
        (
            "x.transpose(1, 0)",
            "methods are not allowed; write transpose(x, axes=[1, 0]) instead of x.transpose(1, 0)",
        ),
        ("x.dot(x)", "methods are not allowed; the matrix product is the @ operator: write x @ x"),
        ("np.dot(x, x)", "np.dot is not an op; the matrix product is the @ operator: write x @ x"),
        ("np.max(x)", "ops are called by their bare names: write max(x) instead of np.max(x)"),
        ("x.max(axis=0)", "methods are not allowed; write max(x, axis=0) instead of x.max(axis=0)"),
        ("np.amax(x, axis=1)", "np.amax is not an op; the max reduction is called max: write max(x, axis=1)"),
        ("x.amin()", "methods are not allowed; the min reduction is called min: write min(x)"),
        (
            "x.max(x)",
            "methods are not allowed; max(a, axis) is a reduction over axes, and x is no axis; for the "
            "elementwise maximum of two tensors write maximum(x, x)",
        ),
        ("x.foo()", "methods are not allowed, and foo is not an op (x.foo())"),
        ("np.foo(x)", "only the ops may be called, not np.foo"),
        (
            "max(x, x)",
            "max(a, axis) is a reduction over axes, and x is no axis; for the elementwise maximum of two "
            "tensors write maximum(x, x)",
        ),
        (
            "min(x, 2 * x)",
            "min(a, axis) is a reduction over axes, and 2 * x is no axis; for the elementwise minimum of two "
            "tensors write minimum(x, 2 * x)",
        ),
        ("amin(x, 0)", "unknown op 'amin'; the min reduction is called min: write min(x, 0)"),
        ("power(x, 2)", "unknown op 'power'; a power is the ** operator: write x ** 2"),
        ("matmul(x, x)", "unknown op 'matmul'; the matrix product is the @ operator: write x @ x"),
        ("exp", "op 'exp' must be called, as exp(...)"),
    ],
)
def test_hints_point_at_the_right_op(expr, message):
    (msg,) = errors(f"inputs:\n  x: [N, D]\ngraph:\n  y: {expr}\n")
    assert msg.startswith("spec.yaml:4:6: error: "), msg
    assert message in msg, msg
