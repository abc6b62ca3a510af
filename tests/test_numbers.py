"""Unit tests for gradgen.numbers: number-only subexpressions folded exactly as Python computes them,
and dims used as numbers kept as expressions for run time."""

from __future__ import annotations

import ast
import math

import pytest

from gradgen.dims import Dim
from gradgen.numbers import (
    FoldError,
    fold_binary,
    fold_call,
    literal_text,
    of_dim,
    of_value,
    run_binary,
    run_call,
    run_neg,
)

N, D = Dim.sym("N"), Dim.sym("D")


@pytest.mark.parametrize(
    "op, a, b, value",
    [
        ("**", 2, 0.5, 2**0.5),
        ("-", 1, 0.3, 1 - 0.3),
        ("/", 1, 3, 1 / 3),
        ("*", 2, 3, 6),
        ("+", 2, 3, 5),
        ("/", 6, 3, 2.0),  # true division gives a float, as in Python
        ("**", 2, 10, 1024),
        ("**", 2, -1, 0.5),
        ("**", 10, -400, 0.0),  # underflow to zero is a finite float
    ],
)
def test_fold_binary_is_python_arithmetic(op, a, b, value):
    out = fold_binary(op, a, b, "e")
    assert out == value and type(out) is type(value)


def test_ints_stay_ints_and_floats_are_written_by_repr():
    assert literal_text(fold_binary("*", 2, 3, "")) == "6"
    assert literal_text(fold_binary("**", 2, 0.5, "")) == "1.4142135623730951"
    assert literal_text(fold_binary("/", 1, 3, "")) == "0.3333333333333333"
    assert float(literal_text(1 / 3)) == 1 / 3  # the text gives back the exact float


@pytest.mark.parametrize(
    "op, a, b, fragment",
    [
        ("/", 1, 0, "1 / 0 divides by zero"),
        ("/", 1.0, 0.0, "divides by zero"),
        ("**", 0, -1, "divides by zero"),
        ("**", 0.0, -2.5, "divides by zero"),
        ("**", 10.0, 400, "overflows"),
        ("*", 1e308, 10, "overflows"),
        ("**", 2, 5000, "overflows"),  # refused before Python computes a 5000-bit int
        ("**", 7, 10**12, "overflows"),
        ("*", 2**1000, 2**100, "overflows"),
        ("**", -8, 1 / 3, "is not a real number"),
    ],
)
def test_fold_binary_refuses_what_has_no_finite_real_value(op, a, b, fragment):
    with pytest.raises(FoldError) as info:
        fold_binary(op, a, b, "1 / 0" if fragment.startswith("1 / 0") else "the number")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "func, a, value",
    [
        ("sqrt", 2, math.sqrt(2)),
        ("exp", 1, math.e),
        ("log", math.e, 1.0),
        ("tanh", 0.5, math.tanh(0.5)),
        ("square", 3, 9),
        ("abs", -2, 2),
        ("relu", -2, 0),
        ("relu", 2.5, 2.5),
        ("sigmoid", 0, 0.5),
        ("sigmoid", -800.0, 0.0),  # the stable form: no overflow for a large negative argument
        ("sigmoid", 800.0, 1.0),
    ],
)
def test_fold_call_applies_the_op_to_the_number(func, a, value):
    out = fold_call(func, a, "f(a)")
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize(
    "func, a, fragment",
    [
        ("log", 0, "is not defined: log of 0 has no real value"),
        ("sqrt", -1, "is not defined: sqrt of -1 has no real value"),
        ("exp", 1000, "overflows"),
    ],
)
def test_fold_call_refuses_domain_errors_and_overflow(func, a, fragment):
    with pytest.raises(FoldError) as info:
        fold_call(func, a, f"{func}({a})")
    assert str(info.value).startswith(f"{func}({a}) ")
    assert fragment in str(info.value)


def test_sums_and_products_of_dims_stay_dim_polynomials():
    assert run_binary("*", of_value(2), of_dim(D), "") == of_dim(Dim.const(2) * D)
    assert run_binary("+", of_dim(N), of_dim(D), "") == of_dim(N + D)
    assert run_binary("-", of_dim(D), of_dim(D), "") == of_dim(Dim.const(0))
    assert run_neg(of_dim(N)) == of_dim(Dim.const(-1) * N)
    assert run_call("square", of_dim(D)) == of_dim(D * D)


def test_other_operations_on_dims_are_kept_for_run_time():
    q = run_binary("/", of_value(1), of_dim(N), "")
    assert q.op == "/" and q.args == (of_value(1), of_dim(N))
    half = run_binary("*", of_value(0.5), of_dim(N), "")  # a float coefficient is no polynomial
    assert half.op == "*"
    root = run_call("sqrt", of_dim(D))
    assert root.op == "sqrt" and root.functions == ("sqrt",)
    assert run_binary("/", of_value(1), root, "").functions == ("sqrt",)
    assert run_call("relu", of_dim(D)) is None  # no run-time form: the lowerer refuses it


def test_division_by_a_dim_that_is_zero_is_refused():
    zero = run_binary("-", of_dim(D), of_dim(D), "")
    with pytest.raises(FoldError, match="divides by zero"):
        run_binary("/", of_dim(N), zero, "N / (D - D)")
    with pytest.raises(FoldError, match="divides by zero"):
        run_binary("/", of_dim(N), of_value(0.0), "N / 0.0")


# --------------------------------------------------------------------------------------------------
# property: what the spec folds is what Python computes


def _number_expressions():
    from hypothesis import strategies as st

    leaves = st.one_of(
        st.integers(0, 12).map(str),
        st.sampled_from(["0.5", "0.3", "1e-3", "2.5", "1e300", "3.0", "0.0"]),
    )

    def extend(inner):
        binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )
        power = st.tuples(inner, st.sampled_from(["0.5", "2", "3", "-1", "-2", "0", "(1 / 3)"])).map(
            lambda t: f"({t[0]} ** {t[1]})"
        )
        negation = inner.map(lambda e: f"(-{e})")
        return st.one_of(binary, power, negation)

    return st.recursive(leaves, extend, max_leaves=6)


def _subvalues(text):
    """Python's value of every subexpression of ``text`` (1e300 * 1e300 is inf even where the whole,
    (1e300 * 1e300) ** -1, is a finite 0.0: gradgen refuses such an overflow on the way)."""
    tree = ast.parse(text, mode="eval")
    for node in ast.walk(tree.body):
        if isinstance(node, ast.expr):
            yield eval(ast.unparse(node))


def _real_finite(value) -> bool:
    return not isinstance(value, complex) and abs(value) < 2**1024 and math.isfinite(value)


def test_folding_matches_python_on_random_number_expressions():
    from hypothesis import given, settings

    from gradgen.diagnostics import SpecError
    from gradgen.ir import Const
    from gradgen.load import load
    from gradgen.lower import lower

    @settings(max_examples=300, deadline=None)
    @given(_number_expressions())
    def check(text):
        try:
            expected = eval(text)  # the test's oracle: Python itself (gradgen never evaluates spec text)
            ok = all(_real_finite(v) for v in _subvalues(text))  # an overflow on the way is refused too
        except (ZeroDivisionError, OverflowError):
            ok = False
        spec = f"inputs:\n  x: [N]\ngraph:\n  y: x * {text}\n"
        if not ok:
            with pytest.raises(SpecError) as info:
                lower(load("s.yaml", spec))
            (message,) = [d.message for d in info.value.diagnostics]
            assert any(w in message for w in ("divides by zero", "overflows", "not a real number")), message
            return
        graph, _ = lower(load("s.yaml", spec))
        (const,) = [a for n in graph.nodes for a in n.args if isinstance(a, Const)]
        assert const.value == expected and type(const.value) is type(expected), (text, const)
        assert eval(const.text) == expected  # the emitted literal reads back exactly

    check()
