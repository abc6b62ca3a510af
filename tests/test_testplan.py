"""gradgen.testplan: what the generated tests read off the op facts (domains, edges, forced kinks)."""

from __future__ import annotations

import textwrap

from gradgen.dims import Dim
from gradgen.ir import ANY, POSITIVE, PROBS, Domain
from gradgen.ops import TABLE
from gradgen.pipeline import plan_text
from gradgen.testplan import KinkSite


def plan_of(inputs: str, graph: str, wrt: str = ""):
    text = "inputs:\n" + textwrap.indent(textwrap.dedent(inputs), "  ")
    text += "graph:\n" + textwrap.indent(textwrap.dedent(graph), "  ")
    text += f"wrt: {wrt}\n" if wrt else ""
    p, _ = plan_text("t.yaml", text)
    return p


def domains(p) -> dict[str, Domain]:
    return {name: d for name, _, _, d in p.test_inputs}


def test_domains_follow_the_op_facts():
    p = plan_of(
        """
        a: [N]
        d: [N]
        r: [N]
        s: [N]
        q: [N]
        """,
        "loss: sum(log(a) + a / d + sqrt(r) + s ** 0.5 + q ** 2)\n",
    )
    assert domains(p) == {"a": POSITIVE, "d": POSITIVE, "r": POSITIVE, "s": POSITIVE, "q": ANY}


def test_labels_indices_and_probabilities():
    p = plan_of(
        """
        tok: {shape: [B], dtype: int}
        E: [V, C]
        y: {shape: [B], dtype: int}
        t: [B, C]
        """,
        "z: take(E, tok)\nloss: softmax_cross_entropy(z, y) + softmax_cross_entropy(z, t)\n",
    )
    # the bound is the dim itself (a value, not text to parse): the table's rows, the classes
    labels, indices = Domain("labels", Dim.sym("C")), Domain("indices", Dim.sym("V"))
    assert domains(p) == {"tok": indices, "E": ANY, "y": labels, "t": PROBS}


def test_every_op_states_its_facts_in_the_known_vocabulary():
    for name, d in TABLE.items():
        assert d.magnitude in ("grows", "bounded", "explodes"), name
        assert d.zeros is None or callable(d.zeros) or d.zeros in ("all", "any", "first"), name
        assert all(s in (-1, 1) for s in d.shift), name
        assert all(s in (-1, 0, 1) for s in d.kink), name
        assert not d.kink or d.zeros == "all", f"{name}: a kink sits where its operands are all 0"


def test_edges_scale_what_cannot_overflow_and_push_domains_to_their_edge():
    p = plan_of(
        """
        x: [N]
        u: [N]
        w: [N]
        pos: [N]
        t: [N, C]
        k: {shape: [N], dtype: int}
        L: [N, C]
        """,
        """
        loss: sum(exp(x) + exp(tanh(u)) + w + log(pos)) + softmax_cross_entropy(L, t) + softmax_cross_entropy(L, k)
        """,
    )
    edges = dict(p.edges)
    assert "x" not in edges  # exp(100 x) overflows in exact arithmetic too
    assert edges["u"] == "scale"  # tanh bounds what reaches exp
    assert edges["w"] == "scale" and edges["L"] == "scale"
    assert edges["pos"] == "shrink"
    assert edges["t"] == "onehot"
    assert "k" not in edges


def test_kink_sites_name_a_control_and_the_side_of_its_derivative():
    p = plan_of(
        """
        x: [N, D]
        W: [D, H]
        b: [H]
        c: [H]
        e: [H]
        lo: [H]
        hi: [H]
        """,
        """
        z: x @ W
        r: relu(z + b)
        s: relu(z - c)
        a: abs(e + z)
        u: maximum(lo, z)
        v: minimum(z, hi)
        loss: sum(r * s + a + u * v)
        """,
    )
    sites = {k.control: k for k in p.kinks}
    assert sites["b"] == KinkSite("relu", "r", TABLE["relu"].rule, "b", ("W",), -1)
    assert sites["c"].side == 1  # z - c: c moves the operand down, so "from below" is c from above
    assert sites["e"].side == 0  # abs'(0) = 0, the mean of both slopes
    assert (sites["lo"].op, sites["lo"].side) == ("maximum", 1)  # a tie goes to a: a from above
    assert (sites["hi"].op, sites["hi"].side) == ("minimum", 1)  # b of minimum: b from above
    assert set(p.ops_used) == {"matmul", "add", "relu", "sub", "mul", "abs", "maximum", "minimum", "sum"}


def test_no_kink_site_when_its_control_meets_another_kink_at_the_same_point():
    p = plan_of("b: [H]\n", "loss: sum(relu(b) + abs(b))\n")
    assert p.kinks == ()


def test_a_later_kink_provably_off_its_kink_is_allowed():
    p = plan_of("x: [N, D]\nW: [D, H]\nb: [H]\n", "loss: sum(minimum(relu(x @ W + b), 1.5))\n")
    assert [(k.op, k.control, k.zeroed) for k in p.kinks] == [("relu", "b", ("W",))]


def test_no_kink_site_without_a_differentiated_control_or_with_a_nonzero_literal():
    assert plan_of("x: [N, D]\nW: [D, H]\nb: [H]\n", "loss: sum(relu(x @ W + b))\n", wrt="[W]").kinks == ()
    assert plan_of("x: [N, H]\nb: [H]\n", "loss: sum(relu(x + b + 1.0))\n").kinks == ()
    assert plan_of("x: [N, H]\n", "loss: sum(minimum(x, 1.5))\n").kinks == ()


def test_dead_entries_are_not_ops_used():
    p = plan_of("x: [N]\n", "dead: exp(x)\nloss: sum(x)\n")
    assert p.ops_used == ("sum",)


def test_no_kink_site_when_its_control_meets_a_mask_at_its_tie():
    """where(x >= 0, x, 0) at x = 0 picks x (the mask holds at the tie), so relu's slope from below is
    not the derivative there: the site is dropped.  A comparison with a nonzero number is no tie."""
    tied = plan_of("x: [N]\n", "loss: sum(relu(x) + where(x >= 0, x, 0.0))\n")
    assert tied.kinks == ()
    off = plan_of("x: [N]\n", "loss: sum(relu(x) + where(x >= 0.5, x, 0.0))\n")
    assert [k.control for k in off.kinks] == ["x"]


def test_bool_inputs_are_drawn_as_masks_and_never_zeroed():
    p = plan_of("x: [N]\nm: {shape: [N], dtype: bool}\n", "loss: sum(relu(where(m, x, 0.0)))\n")
    assert [(n, dtype) for n, _, dtype, _ in p.test_inputs] == [("x", "float"), ("m", "bool")]
    assert all("m" not in k.zeroed and k.control == "x" for k in p.kinks)


def test_an_int_that_is_only_compared_is_drawn_over_the_values_it_is_compared_with():
    p = plan_of(
        """
        x: [N, C]
        y: {shape: [N], dtype: int}
        k: {shape: [N], dtype: int}
        j: {shape: [N], dtype: int}
        """,
        "w: where(k == 5, 2.0, 1.0) * where(j != 0, 1.0, 3.0) * where(y == 0, 2.0, 1.0)\n"
        "loss: softmax_cross_entropy(x, y) + mean(w)\n",
        "[x]",
    )
    d = domains(p)
    # k is compared with 5: values 0..5, so k == 5 holds for some rows and not for others; j with 0:
    # at least 0..2; y is also softmax cross-entropy's labels, drawn over its C classes
    assert d["k"] == Domain("labels", Dim.const(6))
    assert d["j"] == Domain("labels", Dim.const(3))
    assert d["y"] == Domain("labels", Dim.sym("C"))
