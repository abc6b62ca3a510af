"""Unit tests for gradgen.expr: rendering with minimal parentheses, smart constructors, classification."""

from __future__ import annotations

import ast
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradgen.expr import (
    Attr,
    Bin,
    Call,
    Index,
    Lit,
    Method,
    Neg,
    Tuple,
    Var,
    add,
    axis_lit,
    call,
    div,
    is_one,
    method,
    mul,
    neg,
    num,
    sub,
)

a, b, c = Var("a"), Var("b"), Var("c")


@pytest.mark.parametrize(
    "expr, text",
    [
        (Bin("+", a, b), "a + b"),
        (Bin("*", Bin("+", a, b), c), "(a + b) * c"),
        (Bin("+", Bin("*", a, b), c), "a * b + c"),
        (Bin("+", a, Bin("*", b, c)), "a + b * c"),
        (Bin("-", Bin("-", a, b), c), "a - b - c"),
        (Bin("-", a, Bin("-", b, c)), "a - (b - c)"),
        (Bin("-", a, Bin("+", b, c)), "a - (b + c)"),
        (Bin("+", a, Bin("+", b, c)), "a + (b + c)"),  # kept: float addition is not associative
        (Bin("/", a, Bin("*", b, c)), "a / (b * c)"),
        (Bin("*", Bin("/", a, b), c), "a / b * c"),
        (Bin("@", Bin("*", a, b), c), "a * b @ c"),
        (Bin("@", a, Bin("@", b, c)), "a @ (b @ c)"),
        (Bin("**", a, Bin("**", b, c)), "a ** b ** c"),  # ** is right-associative
        (Bin("**", Bin("**", a, b), c), "(a ** b) ** c"),
        (Bin("**", Neg(a), Lit("2")), "(-a) ** 2"),
        (Neg(Bin("**", a, Lit("2"))), "-a ** 2"),
        (Bin("**", Lit("-1"), a), "(-1) ** a"),
        (Bin("*", a, Lit("-1")), "a * -1"),
        (Neg(Bin("+", a, b)), "-(a + b)"),
        (Neg(Bin("*", a, b)), "-(a * b)"),
        (Bin("*", Neg(a), b), "-a * b"),
        (Bin("*", a, Bin(">", b, Lit("0"))), "a * (b > 0)"),
        (Bin(">", Bin("+", a, b), Lit("0")), "a + b > 0"),
    ],
)
def test_binary_precedence(expr, text):
    assert expr.render() == text
    assert str(expr) == text


@pytest.mark.parametrize(
    "expr, text",
    [
        (Var("dh#2"), "dh"),  # the version suffix never reaches the code
        (Method(Bin("+", a, b), "sum"), "(a + b).sum()"),
        (
            Method(a, "sum", (), (("axis", Lit("0")), ("keepdims", Lit("True")))),
            "a.sum(axis=0, keepdims=True)",
        ),
        (Attr(Bin("@", a, b), "T"), "(a @ b).T"),
        (Attr(Neg(a), "T"), "(-a).T"),
        (Bin("@", Attr(a, "T"), b), "a.T @ b"),
        (Index(a, (Var("rows"), Var("y")), True), "a[rows, y]"),
        (Index(Bin("*", a, b), (Lit("0"),), False), "(a * b)[0]"),
        (Tuple((a,)), "(a,)"),
        (Tuple((a, Lit("3"))), "(a, 3)"),
        (Call("np.exp", (Bin("-", a, b),)), "np.exp(a - b)"),
        (
            call("np.full", Tuple((Var("N"), Var("M"))), a, dtype=Var("dtype")),
            "np.full((N, M), a, dtype=dtype)",
        ),
        (method(a, "reshape", num(-1), Var("K")), "a.reshape(-1, K)"),
    ],
)
def test_atoms_calls_methods(expr, text):
    assert expr.render() == text


def test_num_and_axis_lit():
    assert num(2).render() == "2"
    assert num(2.0).render() == "2.0"
    assert num(-0.5).render() == "-0.5"
    assert num(1e-5).render() == "1e-05"
    assert axis_lit((0,)).render() == "0"
    assert axis_lit((0, 2)).render() == "(0, 2)"


# --------------------------------------------------------------------------------------------------
# smart constructors


def test_mul_folds_one_and_signs():
    assert mul(Lit("1"), a) == a
    assert mul(a, Lit("1.0")) == a
    assert mul(a, b) == Bin("*", a, b)
    assert mul(Neg(a), Neg(b)) == Bin("*", a, b)
    assert mul(Neg(a), b) == Neg(Bin("*", a, b))
    assert mul(a, Neg(b)) == Neg(Bin("*", a, b))
    assert mul(a, Lit("-1")) == Bin("*", a, Lit("-1"))  # -1 is not 1
    assert is_one(Lit("1")) and is_one(Lit("1.0")) and not is_one(Lit("10")) and not is_one(Var("1"))


def test_div_add_sub_neg():
    assert div(a, Lit("1")) == a
    assert div(Lit("1"), a) == Bin("/", Lit("1"), a)
    assert add(a, Neg(b)) == Bin("-", a, b)
    assert add(a, b) == Bin("+", a, b)
    assert sub(a, Neg(b)) == Bin("+", a, b)
    assert sub(a, b) == Bin("-", a, b)
    assert neg(Neg(a)) == a
    assert neg(a) == Neg(a)
    assert add(a, neg(mul(b, c))).render() == "a - b * c"
    assert sub(a, neg(Bin("-", b, c))).render() == "a + (b - c)"


# --------------------------------------------------------------------------------------------------
# vars, rename, buffer classification


def test_vars_in_order_with_repeats_and_rename():
    e = Call("np.add", (Bin("*", a, b), Method(a, "sum", (), (("axis", c),))), (("out", Var("o")),))
    assert e.vars() == ["a", "b", "a", "c", "o"]
    r = e.rename({"a": "x", "o": "p"})
    assert r.vars() == ["x", "b", "x", "c", "p"]
    assert r.render() == "np.add(x * b, x.sum(axis=c), out=p)"
    assert Index(a, (b,), True).rename({"b": "y"}).render() == "a[y]"
    assert Tuple((a, b)).rename({"b": "z"}).render() == "(a, z)"
    assert Lit("3").vars() == [] and Lit("3").rename({"3": "x"}) == Lit("3")


def test_fresh_and_view_classification():
    assert not Var("a").fresh and Var("a").view_of == "a"
    assert Bin("+", a, b).fresh and Bin("+", a, b).view_of is None
    assert not call("np.broadcast_to", a, Tuple((b,))).fresh
    assert call("np.broadcast_to", a, Tuple((b,))).view_of == "a"
    assert call("np.exp", a).fresh and call("np.exp", a).view_of is None
    assert call("np.exp", a).is_ufunc and not call("np.exp", a, out=a).is_ufunc
    assert not call("np.outer", a, b).is_ufunc
    assert not method(a, "reshape", num(-1)).fresh and method(a, "reshape", num(-1)).view_of == "a"
    assert method(a, "sum").fresh and method(a, "sum").view_of is None
    assert Attr(a, "T").view_of == "a" and not Attr(a, "T").fresh
    assert Attr(a, "dtype").view_of is None
    assert Index(a, (b,), True).fresh and Index(a, (b,), True).view_of is None
    assert not Index(a, (Lit("0"),), False).fresh and Index(a, (Lit("0"),), False).view_of == "a"
    # a view of a view still names the base variable
    assert Attr(method(a, "reshape", num(-1)), "T").view_of == "a"


# --------------------------------------------------------------------------------------------------
# property: rendered text evaluates like the tree (parenthesization is semantically right)

NAMES = {"a": Fraction(3, 2), "b": Fraction(-2), "c": Fraction(5, 3), "d": Fraction(7)}


def _eval(e):
    """The exact value of a tree; ZeroDivisionError where it divides by zero (or 0 ** -1)."""
    if isinstance(e, Var):
        return NAMES[e.name]
    if isinstance(e, Lit):
        return Fraction(e.text)
    if isinstance(e, Neg):
        return -_eval(e.a)
    x, y = _eval(e.a), _eval(e.b)
    ops = {"+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y, "/": lambda: x / y, "**": lambda: x**y}
    return ops[e.op]()


class _Exact(ast.NodeTransformer):
    """Make every number literal a Fraction, so that evaluation of rendered text is exact."""

    def visit_Constant(self, node):
        return ast.copy_location(ast.Call(ast.Name("F", ast.Load()), [node], []), node)


def _run(text: str):
    tree = ast.fix_missing_locations(_Exact().visit(ast.parse(text, mode="eval")))
    return eval(compile(tree, "<rendered>", "eval"), {"F": Fraction}, dict(NAMES))


_leaf = st.one_of(st.sampled_from([Var(n) for n in NAMES]), st.sampled_from([Lit("2"), Lit("-3"), Lit("1")]))


def _grow(children):
    binop = st.builds(Bin, st.sampled_from(["+", "-", "*", "/"]), children, children)
    power = st.builds(lambda x, k: Bin("**", x, Lit(k)), children, st.sampled_from(["2", "3", "-1"]))
    return st.one_of(binop, power, st.builds(Neg, children))


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.recursive(_leaf, _grow, max_leaves=8))
def test_rendering_preserves_meaning(tree):
    try:
        expected = _eval(tree)
    except ZeroDivisionError:
        expected = None
    if expected is None:
        return
    text = tree.render()
    try:
        got = _run(text)
    except ZeroDivisionError:
        pytest.fail(f"{text!r} divides by zero but the tree does not")
    assert got == expected, text


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.recursive(_leaf, _grow, max_leaves=6), st.recursive(_leaf, _grow, max_leaves=6))
def test_smart_constructors_preserve_meaning(x, y):
    try:
        vx, vy = _eval(x), _eval(y)
    except ZeroDivisionError:
        return
    if vx is None or vy is None:
        return
    assert _run(mul(x, y).render()) == vx * vy
    assert _run(add(x, y).render()) == vx + vy
    assert _run(sub(x, y).render()) == vx - vy
    assert _run(neg(x).render()) == -vx
    if vy:
        assert _run(div(x, y).render()) == vx / vy


@pytest.mark.parametrize(
    "spec, fresh",
    [
        ("'abc->ac'", True),  # sums over b: a new array
        ("'ii->'", True),  # a trace
        ("'ij->ji'", False),  # a transpose: NumPy returns a view
        ("'kmnm->kmn'", False),  # a diagonal: a view (written through by np.copyto)
        ("'ij'", False),  # implicit output: taken to be a view
    ],
)
def test_einsum_of_one_operand_is_fresh_only_when_it_sums(spec, fresh):
    e = call("np.einsum", Lit(spec), Var("x"))
    assert e.fresh is fresh
    assert (e.view_of == "x") is not fresh
    shapes = {"'abc->ac'": (2, 3, 4), "'kmnm->kmn'": (2, 3, 4, 3)}
    x = np.ones(shapes.get(spec, (3, 3)))
    out = np.einsum(spec.strip("'"), x)
    assert np.shares_memory(out, x) is not fresh  # what NumPy does, not only what we assume
