"""The buffer pass (``gradgen/buffers.py``): in-place updates on owned, dead buffers, and no line that
only renames a buffer (``dx_2 = dx`` before ``dx_2 += g``)."""

from __future__ import annotations

import itertools
import re

import pytest

from gradgen.buffers import Stmt, optimize
from gradgen.dims import Dim
from gradgen.expr import Bin, Call, Index, Lit, Method, Var

N = (Dim.sym("N"),)
ASKED = {"dx": "dx", "dx_2": "dx", "dh": "dh", "dz1": "dz1", "g": "g", "m": "m", "e": "e", "dx_3": "dx"}


def run(stmts, live, params=frozenset({"x", "mask", "dout"})):
    body, renames = optimize(
        stmts, set(params), list(live), lambda n: ("user", "bwd"), lambda n: N, stem=ASKED.get
    )
    lines = [s.render() for s in body if s.expr is not None]
    return lines, [renames.get(v, v) for v in live]


def exp(v):
    return Call("np.exp", (Var(v),))


def no_bare_rename(lines):
    return not any(re.fullmatch(r"\w+ = \w+", line) for line in lines)


def test_a_sum_over_uses_is_written_into_its_first_term_under_its_name():
    stmts = [
        Stmt("dx", exp("x")),  # fresh
        Stmt("g", exp("dout")),
        Stmt("m", Method(Var("dx"), "sum")),  # dx read before the sum: dx and dx_2 are two values
        Stmt("dx_2", Bin("+", Var("dx"), Var("g"))),
        Stmt("dx_3", Bin("+", Var("dx_2"), Var("m"))),
    ]
    lines, returns = run(stmts, ["dx_3"])
    assert lines == ["dx = np.exp(x)", "g = np.exp(dout)", "m = dx.sum()", "dx += g", "dx += m"]
    assert returns == ["dx"]


def test_a_value_with_a_name_of_its_own_is_computed_into_the_dead_buffer_with_out():
    stmts = [Stmt("dh", exp("x")), Stmt("dz1", Bin("*", Var("dh"), Var("mask")))]
    lines, returns = run(stmts, ["dz1"])
    assert lines == ["dh = np.exp(x)", "dz1 = np.multiply(dh, mask, out=dh)"]
    assert returns == ["dz1"]
    # the operand on the right of a - or a /: the ufunc with out=, never a rename
    stmts = [Stmt("dh", exp("x")), Stmt("dz1", Bin("-", Var("mask"), Var("dh")))]
    assert run(stmts, ["dz1"])[0] == ["dh = np.exp(x)", "dz1 = np.subtract(mask, dh, out=dh)"]


@pytest.mark.parametrize(
    "first",
    [
        Var("x"),  # an input
        Index(Var("e"), (Lit("0"),), False),  # a view of an owned buffer
        Method(Var("e"), "reshape", (Lit("-1"),)),  # a view of an owned buffer
    ],
)
def test_never_written_in_place_unless_fresh(first):
    """An input, or a view of a buffer another name holds, is never the buffer of a sum: a new array."""
    stmts = [
        Stmt("e", exp("x")),
        Stmt("dx", first),
        Stmt("dx_2", Bin("+", Var("dx"), Var("dout"))),
        Stmt("m", Method(Var("e"), "sum")),
    ]
    lines, _ = run(stmts, ["dx_2", "m"])
    assert no_bare_rename(lines), lines
    assert not any(line.startswith(("dx +=", "x +=", "e +=")) or "out=dx" in line for line in lines), lines
    assert any(re.fullmatch(r"dx_2 = (x|dx) \+ dout", line) for line in lines), lines  # a new array


def test_a_buffer_read_later_is_not_overwritten():
    stmts = [
        Stmt("dx", exp("x")),
        Stmt("dx_2", Bin("+", Var("dx"), Var("dout"))),
        Stmt("m", Method(Var("dx"), "sum")),  # the old dx is still read
    ]
    lines, _ = run(stmts, ["dx_2", "m"])
    assert "dx_2 = dx + dout" in lines and no_bare_rename(lines)


def test_the_generated_modules_have_no_bare_rename_before_an_update():
    """In every generated module, no ``a = b`` line is followed by an update of a (``a += ...``)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "generated"
    for path in sorted(root.glob("[!t]*.py")):
        lines = [ln.split("  #")[0].rstrip() for ln in path.read_text().splitlines()]
        code = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        for a, b in itertools.pairwise(code):
            m = re.fullmatch(r"(\w+) = (\w+)", a)
            if m and m.group(2) not in ("True", "False"):
                assert not re.match(rf"{m.group(1)}(\[.*\])? [-+*/]= ", b), f"{path.name}: {a} / {b}"
