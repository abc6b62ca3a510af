"""Unit tests for gradgen.rewrite: which logs become stable ops, and what the new graph looks like.

Each rewrite is checked three ways: the rewritten graph's live nodes (which ops the planner will see),
the IR's invariants (ids are positions, operands come first, types carried over), and the generated
module's values against the expression as written, so a rewrite that reads well but computes something
else still fails.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from gradgen.ir import TypedGraph
from gradgen.load import load
from gradgen.lower import lower
from gradgen.pipeline import build_text
from gradgen.rewrite import rewrite
from gradgen.shapes import infer


def typed(spec: str) -> TypedGraph:
    graph, _ = lower(load("r.yaml", spec))
    return infer(graph)


def spec_of(expr: str, inputs: str = "z: [N]", more: str = "") -> str:
    return f"inputs:\n  {inputs}\ngraph:\n{more}  y: {expr}\noutput: y\n"


def live_ops(tg: TypedGraph) -> list[str]:
    """The ops the output depends on, in graph order (inputs left out)."""
    g = tg.graph
    seen, stack = set(), [g.output]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(g.node(i).refs)
    return [n.op for n in g.nodes if n.id in seen and n.op != "input"]


def check_invariants(before: TypedGraph, after: TypedGraph) -> None:
    g = after.graph
    assert len(after.types) == len(g.nodes)
    for i, n in enumerate(g.nodes):
        assert n.id == i
        assert all(a < i for a in n.refs), f"node {i} reads a later node"
    assert [i.name for i in g.inputs] == [i.name for i in before.graph.inputs]
    for info in g.inputs:
        assert g.node(info.node).op == "input" and g.node(info.node).name == info.name
    for e in g.entries:
        assert g.node(e.node).name == e.name
    assert after.types[g.output] == before.types[before.graph.output]
    assert [g.node(w).name for w in g.wrt] == [before.graph.node(w).name for w in before.graph.wrt]


def module_from(spec_text: str):
    built = build_text("r.yaml", spec_text)
    mod = types.ModuleType(built.name)
    exec(compile(dict(built.files)[f"{built.name}.py"], "r.py", "exec"), mod.__dict__)
    return mod


# -- each rewrite fires -------------------------------------------------------------------------------


FIRES = [
    ("log(sigmoid(z))", ["log_sigmoid"]),
    ("log(1 - sigmoid(z))", ["neg", "log_sigmoid"]),
    ("log(1.0 - sigmoid(z))", ["neg", "log_sigmoid"]),
    ("log(1 + exp(z))", ["softplus"]),
    ("log(exp(z) + 1)", ["softplus"]),
    ("log(1.0 + exp(2 * z))", ["mul", "softplus"]),
    ("log(sigmoid(-z))", ["neg", "log_sigmoid"]),
]


@pytest.mark.parametrize("expr, ops", FIRES)
def test_rewrite_fires(expr, ops):
    before = typed(spec_of(expr))
    after = rewrite(before)
    check_invariants(before, after)
    assert live_ops(after) == ops
    out = after.graph.node(after.graph.output)
    assert out.name == "y" and out.note is not None


def test_named_intermediates_used_twice_as_binary_logistic_writes_them():
    """p: sigmoid(z), then log(p) and log(1 - p): both logs rewritten, the sigmoid no longer live."""
    spec = (
        "inputs:\n  z: [N]\n  t: [N]\ngraph:\n  p: sigmoid(z)\n"
        "  nll: -(t * log(p) + (1 - t) * log(1 - p))\n"
    )
    before = typed(spec)
    after = rewrite(before)
    check_invariants(before, after)
    ops = live_ops(after)
    assert ops.count("log_sigmoid") == 2 and "log" not in ops and "sigmoid" not in ops
    notes = {n.note for n in after.graph.nodes if n.note}
    assert len(notes) == 2


@pytest.mark.parametrize(
    "expr, op, attrs",
    [
        ("log(softmax(x))", "log_softmax", {"axis": -1}),
        ("log(softmax(x, axis=0))", "log_softmax", {"axis": 0}),
        ("log(sum(exp(x)))", "logsumexp", {"axis": None, "keepdims": False}),
        ("log(sum(exp(x), axis=1))", "logsumexp", {"axis": 1, "keepdims": False}),
        ("log(sum(exp(x), axis=(0, 1), keepdims=True))", "logsumexp", {"axis": (0, 1), "keepdims": True}),
        ("log(sum(exp(x), 0, True))", "logsumexp", {"axis": 0, "keepdims": True}),
    ],
)
def test_rewrite_keeps_axis_and_keepdims(expr, op, attrs):
    before = typed(spec_of(expr, "x: [N, C]"))
    after = rewrite(before)
    check_invariants(before, after)
    assert live_ops(after) == [op]
    node = after.graph.node(after.graph.output)
    assert dict(node.attrs) == attrs


# -- and does not fire where it must not ----------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "log(z)",
        "log(2 - sigmoid(z))",
        "log(sigmoid(z) - 1 + 2)",
        "log(1 + sigmoid(z))",
        "log(sigmoid(z) + 1)",
        "log(1 + 2 * exp(z))",
        "log(2 + exp(z))",
        "log(1 - exp(-z))",
        "log(exp(z) - 1 + 2)",
        "log(mean(exp(z)))",
        "log(sum(square(z)))",
        "sigmoid(log(z))",
        "log(tanh(z) + 2)",
    ],
)
def test_rewrite_does_not_fire(expr):
    before = typed(spec_of(expr))
    assert rewrite(before) == before


def test_log_of_an_input_or_of_a_sum_of_an_input_is_left_alone():
    for expr in ("log(x)", "log(sum(x, axis=1))", "log(1 - x)", "log(1 + x)"):
        before = typed(spec_of(expr, "x: [N, C]"))
        assert rewrite(before) == before


# -- other uses of the intermediate are kept --------------------------------------------------------------


def test_sigmoid_read_by_the_output_directly_and_through_log_is_still_computed():
    spec = "inputs:\n  z: [N]\ngraph:\n  p: sigmoid(z)\n  l: log(p)\n  y: p * l\noutput: y\n"
    after = rewrite(typed(spec))
    ops = live_ops(after)
    assert "sigmoid" in ops and "log_sigmoid" in ops and "log" not in ops
    # and the generated module computes the same as the expression written out
    mod = module_from(spec)
    z = np.linspace(-5, 5, 11)
    y, cache = mod.forward(z)
    s = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(y, s * np.log(s), rtol=1e-13)
    (dz,) = mod.backward(np.ones_like(z), cache)
    np.testing.assert_allclose(dz, s * (1 - s) * (np.log(s) + 1), rtol=1e-12)


SHARED = [
    ("exp(z)", "log(1 + e) + e", lambda e: np.log(1 + e) + e),
    ("softmax(x)", "log(e) * e", lambda e: np.log(e) * e),
    ("exp(x)", "log(sum(e)) + sum(e)", lambda e: np.log(e.sum()) + e.sum()),
]


@pytest.mark.parametrize("inner, other, reference", SHARED)
def test_shared_intermediate_stays_live_and_the_log_is_rewritten(inner, other, reference):
    spec = f"inputs:\n  x: [N, C]\n  z: [N, C]\ngraph:\n  e: {inner}\n  y: {other}\noutput: y\n"
    ops = live_ops(rewrite(typed(spec)))
    assert inner.split("(")[0] in ops and "log" not in ops, ops
    mod = module_from(spec)
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    y, _ = mod.forward(x, z)
    e = {"exp(z)": np.exp(z), "softmax(x)": np.exp(x) / np.exp(x).sum(-1, keepdims=True), "exp(x)": np.exp(x)}
    np.testing.assert_allclose(y, reference(e[inner]), rtol=1e-12)


# -- new nodes -----------------------------------------------------------------------------------------


def test_an_existing_negation_is_reused():
    spec = spec_of("log(1 - sigmoid(z)) + n", more="  n: -z\n")
    before = typed(spec)
    after = rewrite(before)
    negs = [n for n in after.graph.nodes if n.op == "neg"]
    assert len(negs) == 1 and negs[0].name == "n"
    ls = next(n for n in after.graph.nodes if n.op == "log_sigmoid")
    assert ls.args == (negs[0].id,)


def test_a_rewritten_node_keeps_its_name_place_and_entry():
    spec = "inputs:\n  x: [N, C]\ngraph:\n  loss: log(sum(exp(x)))\n"
    before = typed(spec)
    after = rewrite(before)
    old = before.graph.node(before.graph.output)
    new = after.graph.node(after.graph.output)
    assert (new.name, new.label, new.place, new.entry) == (old.name, old.label, old.place, old.entry)
    assert new.op == "logsumexp" and old.op == "log"


def test_rewrite_is_pure():
    before = typed(spec_of("log(1 - sigmoid(z))"))
    snapshot = repr(before)
    first = rewrite(before)
    assert repr(before) == snapshot
    assert rewrite(before) == first


def test_nested_rewrites():
    """softplus of a log-sigmoid: the inner log is rewritten, and the outer sees its replacement."""
    before = typed(spec_of("log(1 + exp(log(sigmoid(z))))"))
    after = rewrite(before)
    check_invariants(before, after)
    assert live_ops(after) == ["log_sigmoid", "softplus"]


# -- what the generated code says ----------------------------------------------------------------------


def test_generated_lines_say_what_was_rewritten():
    spec = (
        "inputs:\n  z: [N]\n  x: [N, C]\ngraph:\n  a: log(sigmoid(z)) + log(1 - sigmoid(z)) + log(1 + exp(z))\n"
        "  b: log(softmax(x)) + log(sum(exp(x), axis=-1, keepdims=True))\n  loss: sum(a) + sum(b)\n"
    )
    module = dict(build_text("r.yaml", spec).files)["r.py"]
    for text in (
        "# log(sigmoid(z)) rewritten as log_sigmoid(z): stable for large |z|",
        "# log(1 - sigmoid(z)) rewritten as log_sigmoid(-z): stable for large |z|",
        "# log(1 + exp(z)) rewritten as softplus(z): no overflow for large z",
        "# log(softmax(x)) rewritten as log_softmax(x): no log of an underflowed 0",
        "# log(sum(exp(x))) rewritten as logsumexp(x): max-shifted, no overflow",
    ):
        # above the entry's lines in forward and backward, and in both halves of value_and_grad
        assert module.count(text) == 4, (text, module.count(text))
    assert "np.log(" not in module.replace("np.log(np.exp(", "")  # only logsumexp's own log-sum
    assert "np.tanh" not in module


def test_note_lines_do_not_move_the_fused_split():
    """value_and_grad's forward lines keep their shape comments after a note line."""
    spec = "inputs:\n  z: [N]\ngraph:\n  loss: sum(log(sigmoid(z)))\n"
    module = dict(build_text("r.yaml", spec).files)["r.py"]
    fused = module[module.index("def value_and_grad") :]
    forward_part = fused[: fused.index("# loss = sum(log(sigmoid(z)))")]
    code = [ln for ln in forward_part.splitlines()[3:] if ln.strip() and not ln.strip().startswith("#")]
    assert code and all(ln.rstrip().endswith(("# [N]", "# []")) for ln in code), code


def test_a_negated_cotangent_through_a_negation_is_not_negated_twice():
    """log_sigmoid(-z)'s rule forms -(g * expm1(y)); the negation before it takes the inner product
    as it is instead of negating the negation (one pass, one sign)."""
    for spec in (
        "inputs:\n  z: [N]\ngraph:\n  y: sum(log(1 - sigmoid(z)))\n",
        "inputs:\n  z: [N]\n  w: [N]\ngraph:\n  y: -(-(z * w))\n",
    ):
        module = dict(build_text("r.yaml", spec).files)["r.py"]
        backward = module[module.index("def backward") : module.index("return Gradients")]
        code = [ln.split("#")[0] for ln in backward.splitlines()[4:]]
        assert not any("-" in ln for ln in code), backward  # no sign written at all: none twice
    mod = module_from("inputs:\n  z: [N]\n  w: [N]\ngraph:\n  y: -(-(z * w))\n")
    z, w = np.array([1.0, -2.0]), np.array([3.0, 5.0])
    y, cache = mod.forward(z, w)
    grads = mod.backward(np.array([7.0, 11.0]), cache)
    np.testing.assert_array_equal(y, z * w)
    np.testing.assert_array_equal(grads.z, [21.0, 55.0])
    np.testing.assert_array_equal(grads.w, [7.0, -22.0])
