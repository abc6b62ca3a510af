"""Unit tests for gradgen.dims: symbolic dims as canonical polynomials."""

from __future__ import annotations

import pytest

from gradgen.dims import Dim, concrete, numel, shape_str

N, M, D = Dim.sym("N"), Dim.sym("M"), Dim.sym("D")


def test_const_and_sym_basics():
    assert Dim.const(3).is_const and Dim.const(3).value == 3
    assert not N.is_const and N.value is None
    assert N.symbols == ("N",)
    assert Dim.const(1).is_one() and not Dim.const(2).is_one() and not N.is_one()
    assert Dim.const(0).terms == () and Dim.const(0).value == 0


def test_equality_is_structural_and_canonical():
    assert N * M == M * N
    assert N + M == M + N
    assert (N + M) * D == N * D + M * D
    assert N != M
    assert Dim.const(1) != N
    assert hash(N * M) == hash(M * N)


def test_arithmetic_folds_constants_and_cancels():
    assert Dim.const(2) + Dim.const(3) == Dim.const(5)
    assert Dim.const(2) * Dim.const(3) == Dim.const(6)
    assert N * Dim.const(1) == N
    assert N + Dim.const(0) == N
    assert Dim.const(2) * N == (N + N)
    assert (N + Dim.const(-1) * N).terms == ()  # cancels to zero
    assert (N * N).symbols == ("N",)
    assert (N * M * D).symbols == ("D", "M", "N")


def test_str_and_render():
    assert str(N) == "N"
    assert str(Dim.const(4)) == "4"
    assert str(N * M) == "M*N"  # sorted monomial
    assert str(Dim.const(2) * N) == "2*N"
    # as a person writes them: the terms added, then those subtracted, symbols before the constant
    assert str(N + Dim.const(1)) == "N + 1"
    assert str(N + Dim.const(-2)) == "N - 2"
    assert str(Dim.const(1) + Dim.const(-1) * N) == "1 - N"
    assert str(N + Dim.const(-1) * M + Dim.const(-1)) == "N - M - 1"
    assert str(Dim.const(-1) * N * M) == "-M*N"
    assert str(Dim.const(-3) * N + Dim.const(-1)) == "-3*N - 1"
    assert str(N * M + N + Dim.const(2)) == "M*N + N + 2"
    assert (N + Dim.const(-2)).render({"N": "n"}) == "n - 2"
    assert (Dim.const(-1) * N * M).render() == "-M * N"
    assert (N * M).render() == "M * N"
    assert (N * M).render({"N": "N_dim"}) == "M * N_dim"
    assert Dim.const(0).render() == "0"
    assert repr(N * M) == "Dim('M*N')"


@pytest.mark.parametrize(
    "d",
    [
        N + Dim.const(-2),
        Dim.const(1) + Dim.const(-1) * N,
        Dim.const(-1) * N * M,
        Dim.const(-3) * N * N + M + Dim.const(-7),
        N * M + Dim.const(2) * N + Dim.const(-1) * M + Dim.const(5),
        Dim.const(-4),
    ],
)
def test_dim_expr_is_the_dim_as_python(d):
    """The code of a dim (``dim_expr``) reads as its comment does and evaluates to its value."""
    from gradgen.context import dim_expr

    code = dim_expr(d, {"N": "N", "M": "M"}).render()
    assert code == d.render()
    for sizes in ({"N": 1, "M": 1}, {"N": 3, "M": 7}, {"N": 10, "M": 2}):
        assert eval(code, {}, dict(sizes)) == concrete((d,), sizes)[0]


def test_shape_str_and_numel():
    assert shape_str(()) == "[]"
    assert shape_str((N, Dim.const(1), M)) == "[N, 1, M]"
    assert numel(()) == Dim.const(1)
    assert numel((N, Dim.const(3), M)) == Dim.const(3) * N * M


@pytest.mark.parametrize(
    "shape, sizes, expected",
    [
        ((), {}, ()),
        ((Dim.sym("N"), Dim.const(1)), {"N": 5}, (5, 1)),
        ((Dim.sym("N") * Dim.sym("M"), Dim.sym("N") + Dim.const(2)), {"N": 3, "M": 4}, (12, 5)),
        ((Dim.const(2) * Dim.sym("N") * Dim.sym("N"),), {"N": 3}, (18,)),
    ],
)
def test_concrete(shape, sizes, expected):
    assert concrete(shape, sizes) == expected


def test_concrete_needs_every_symbol():
    with pytest.raises(KeyError):
        concrete((N,), {"M": 2})
