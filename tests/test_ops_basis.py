"""The structured basis rows (``gradgen/ops_basis.py``): each op's generated NumPy against the product
with an explicit identity basis it stands for, and each op's forward-mode and reverse rules against
differences and the adjoint identity, so that a derivative program made of them can be differentiated
again (no generated function does that today; the rules must still be right).

The cases use a basis with rows before and after the block the unit vectors fill (an offset, and more
rows than entries), transposed bases, scales, and every letter pattern that matmul and outer batching
produce: a wrong offset, a transposed diagonal or a missing scale changes the numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradgen import derive
from gradgen.builder import Builder
from gradgen.dims import Dim
from gradgen.ir import Const
from tests.test_derive import emitted, typed

SPEC = """\
name: basis_ops
inputs:
  A: [N, K]
  W: [K, M]
  s: [K, M]
  x: [K]
  B: [K, K]
  T: [K, K, K]
graph:
  out: sum(A) + sum(W) + sum(s) + sum(x) + sum(B) + sum(T)
wrt: [A]
"""
N, K, M = 3, 4, 5
Nd, Kd, Md = Dim.sym("N"), Dim.sym("K"), Dim.sym("M")
ONE = Const(1, "1")


def unit(n: int, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """The n unit vectors over entries offset .. offset + numel(shape), shaped [n, *shape]."""
    return np.eye(n, int(np.prod(shape)), -offset).reshape((n,) + shape)


def data(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "A": rng.standard_normal((N, K)),
        "W": rng.standard_normal((K, M)),
        "s": rng.standard_normal((K, M)),
        "x": rng.standard_normal(K),
        "B": rng.standard_normal((K, K)),
        "T": rng.standard_normal((K, K, K)),
    }


# (name, extra inputs {name: shape}, the node, the reference from the same arrays)
def _contract(operand, which, subscripts, n, offset, shape, perm, scale=ONE):
    def build(b, ids):
        args = (ids[operand], ids[scale] if isinstance(scale, str) else scale)
        return b.op(
            "basis_contract",
            *args,
            subscripts=subscripts,
            which=which,
            n=n,
            offset=offset,
            shape=shape,
            perm=perm,
        )

    return build


CASES = {
    # x @ W_dot: a's columns onto the diagonal of the rows 2 .. 2 + K*M of K*M + 3
    "matmul, right, offset": (
        _contract("A", 1, "nk,zkm->znm", Kd * Md + Dim.const(3), Dim.const(2), (Kd, Md), (0, 1)),
        lambda d: np.einsum("nk,zkm->znm", d["A"], unit(K * M + 3, 2, (K, M))),
    ),
    # dlogits @ W2_dot.T: the basis over [M, K] seen transposed
    "matmul, right, transposed basis": (
        _contract("A", 1, "nk,zkm->znm", Kd * Md + Dim.const(1), Dim.const(1), (Md, Kd), (1, 0)),
        lambda d: np.einsum("nk,zkm->znm", d["A"], unit(K * M + 1, 1, (M, K)).transpose(0, 2, 1)),
    ),
    # x_dot @ W: a basis over [N, K] on the left
    "matmul, left": (
        _contract("W", 0, "znk,km->znm", Nd * Kd + Dim.const(2), Dim.const(0), (Nd, Kd), (0, 1)),
        lambda d: np.einsum("znk,km->znm", unit(N * K + 2, 0, (N, K)), d["W"]),
    ),
    # a scaled basis (an elementwise derivative times the unit vectors) times a matrix
    "matmul, right, scaled": (
        _contract("A", 1, "nk,zkm->znm", Kd * Md, Dim.const(0), (Kd, Md), (0, 1), scale="s"),
        lambda d: np.einsum("nk,zkm->znm", d["A"], unit(K * M, 0, (K, M)) * d["s"]),
    ),
    # every unit vector picks one row of W: a copy, no zeros
    "vector basis times a matrix": (
        _contract("W", 0, "zk,km->zm", Kd, Dim.const(0), (Kd,), (0,)),
        lambda d: np.einsum("zk,km->zm", unit(K, 0, (K,)), d["W"]),
    ),
    "vector basis times a matrix, scaled": (
        _contract("W", 0, "zk,km->zm", Kd, Dim.const(0), (Kd,), (0,), scale="x"),
        lambda d: np.einsum("zk,km->zm", unit(K, 0, (K,)) * d["x"], d["W"]),
    ),
    # outer(basis, x): the rows of a Jacobian w.r.t. a matrix
    "outer": (
        _contract("x", 1, "i,zj->zij", Kd + Dim.const(2), Dim.const(2), (Kd,), (0,), scale="x"),
        lambda d: np.einsum("i,zj->zij", d["x"], unit(K + 2, 2, (K,)) * d["x"]),
    ),
    "scaled basis": (
        lambda b, ids: b.op(
            "scaled_basis", ids["s"], n=Kd * Md + Dim.const(2), offset=Dim.const(1), shape=(Kd, Md)
        ),
        lambda d: unit(K * M + 2, 1, (K, M)) * d["s"],
    ),
    "scaled basis, a number": (
        lambda b, ids: b.op("scaled_basis", Const(0.5, "0.5"), n=Kd, offset=Dim.const(0), shape=(Kd,)),
        lambda d: unit(K, 0, (K,)) * 0.5,
    ),
}


def _run(build_outputs, extra=()):
    """Emit a program over the spec's inputs (and ``extra`` parameters: (name, shape, like)) and return
    a function of the arrays computing its outputs."""
    tg = typed(SPEC)
    b = Builder(tg)
    ids = {n.name: n.id for n in tg.graph.nodes if n.op == "input"}
    outs = build_outputs(b, ids)
    prog = b.finish(outs)
    em = emitted(prog, tg)
    params = ", ".join(i.name for i in tg.graph.inputs) + "".join(", " + p for p in em.params)
    body = "\n".join("    " + line.code for line in em.lines if line.code)
    source = (
        f"import numpy as np\n\ndef f({params}):\n    N, K = A.shape\n    M = W.shape[1]\n    dtype = A.dtype\n"
        f"{body}\n    return {', '.join(em.returns)}\n"
    )
    ns: dict = {}
    exec(compile(source, "<program>", "exec"), ns)
    return ns["f"], source


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_structured_product_equals_the_product_with_the_identity_basis(case):
    build, reference = CASES[case]
    f, source = _run(lambda b, ids: [build(b, ids)])
    d = data()
    got = f(*d.values())
    want = reference(d)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # one product per entry: exact
    assert "np.eye" not in source  # no identity is ever built


def test_adding_onto_a_full_value_writes_its_diagonal_in_place():
    n, offset = K * M + 3, 2

    def build(b, ids):
        onto = b.input("onto", (Kd * Md + Dim.const(3), Nd, Md), ids["A"])
        c = _contract(
            "A", 1, "nk,zkm->znm", Kd * Md + Dim.const(3), Dim.const(offset), (Kd, Md), (0, 1), "s"
        )(b, ids)
        onto2 = b.input("onto2", (Kd * Md + Dim.const(3), Kd, Md), ids["A"])
        sb = b.op(
            "scaled_basis", ids["s"], n=Kd * Md + Dim.const(3), offset=Dim.const(offset), shape=(Kd, Md)
        )
        return [
            b.op("add_basis_contract", onto, *b.nodes[c].args, **dict(b.nodes[c].attrs)),
            b.op("add_scaled_basis", onto2, ids["s"], **dict(b.nodes[sb].attrs)),
        ]

    f, source = _run(build)
    d = data(1)
    rng = np.random.default_rng(5)
    onto, onto2 = rng.standard_normal((n, N, M)), rng.standard_normal((n, K, M))
    keep = onto.copy(), onto2.copy()
    got, got2 = f(*d.values(), onto, onto2)
    np.testing.assert_allclose(
        got, keep[0] + np.einsum("nk,zkm->znm", d["A"], unit(n, offset, (K, M)) * d["s"])
    )
    np.testing.assert_allclose(got2, keep[1] + unit(n, offset, (K, M)) * d["s"])
    # the caller's arrays are copied, never written (onto is an argument, not a buffer of the program)
    np.testing.assert_array_equal(onto, keep[0])
    np.testing.assert_array_equal(onto2, keep[1])
    assert "np.eye" not in source and "np.zeros" not in source  # written onto the copies, in place


RULE_CASES = {
    "basis_contract": (
        ["A", "s"],
        _contract("A", 1, "nk,zkm->znm", Kd * Md + Dim.const(3), Dim.const(2), (Kd, Md), (0, 1), scale="s"),
    ),
    "basis_contract, transposed": (
        ["A", "s"],
        lambda b, ids: b.op(
            "basis_contract",
            ids["A"],
            b.transpose(ids["s"]),
            subscripts="nk,zkm->znm",
            which=1,
            n=Kd * Md + Dim.const(1),
            offset=Dim.const(1),
            shape=(Md, Kd),
            perm=(1, 0),
        ),
    ),
    # a basis on the left (x_dot @ W), scaled by a factor shaped like it: which=0's subscripts
    "basis_contract, left, scaled": (
        ["W", "A"],
        lambda b, ids: b.op(
            "basis_contract",
            ids["W"],
            ids["A"],
            subscripts="znk,km->znm",
            which=0,
            n=Nd * Kd + Dim.const(2),
            offset=Dim.const(1),
            shape=(Nd, Kd),
            perm=(0, 1),
        ),
    ),
    "add_scaled_basis": (
        ["B", "x"],
        lambda b, ids: b.op("add_scaled_basis", ids["B"], ids["x"], n=Kd, offset=Dim.const(0), shape=(Kd,)),
    ),
    "add_basis_contract": (
        ["T", "x", "s"],
        lambda b, ids: b.op(
            "add_basis_contract",
            ids["T"],
            ids["x"],
            b.op(
                "reshape",
                b.op("slice_axis", ids["s"], axis=1, start=Dim.const(0), stop=Dim.const(1)),
                shape=(Kd,),
            ),
            subscripts="i,zj->zij",
            which=1,
            n=Kd,
            offset=Dim.const(0),
            shape=(Kd,),
            perm=(0,),
        ),
    ),
    "scaled_basis": (
        ["s"],
        lambda b, ids: b.op(
            "scaled_basis", ids["s"], n=Kd * Md + Dim.const(2), offset=Dim.const(1), shape=(Kd, Md)
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_the_rules_agree_with_differences_and_with_each_other(case):
    """JVP: the output is bilinear in its operands, so a central difference is exact up to rounding.
    Pullback: <g, J v> = <J^T g, v> for a random cotangent g, to 1e-12 relative (a transposed or
    scaled rule fails it)."""
    names, build = RULE_CASES[case]

    def program(b, ids):
        y = build(b, ids)
        seeds = {ids[nm]: b.input(f"{nm}_t", b.shape(ids[nm]), ids[nm]) for nm in names}
        tan = derive.tangents(b, seeds)
        g = b.input("g", b.shape(y), y)
        cots = derive.pullbacks(b, y, g, [ids[nm] for nm in names])
        return [y, tan[y], *(cots[ids[nm]] for nm in names)]

    f, _ = _run(program)
    d = data(2)
    rng = np.random.default_rng(3)
    v = {nm: rng.standard_normal(d[nm].shape) for nm in names}
    forward, _ = _run(lambda b, ids: [build(b, ids)])
    g = rng.standard_normal(forward(*d.values()).shape)
    _, ydot, *cots = f(*d.values(), *v.values(), g)

    def at(t):
        moved = {k: a + t * v[k] if k in v else a for k, a in d.items()}
        return f(*moved.values(), *v.values(), g)[0]

    diff = (at(1e-3) - at(-1e-3)) / 2e-3
    np.testing.assert_allclose(ydot, diff, rtol=1e-9, atol=1e-12 * np.abs(diff).max())
    assert np.abs(ydot).max() > 0
    lhs = float(np.vdot(g, ydot))
    rhs = sum(float(np.vdot(c, v[nm])) for c, nm in zip(cots, names))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
