"""Structure-aware batching over basis vectors (issue 8): the rows and rules that keep a batch of unit
vectors from ever being multiplied out.

A Jacobian or a Hessian is a derivative program batched over the n unit vectors of the wrt inputs
(``gradgen/derive.py``).  Written plainly, the first product a basis meets (``x @ W_dot`` with
``W_dot = np.eye(n, D*H).reshape(n, D, H)``) is a full matrix product of which all but one term per
entry is a multiplication by 0 or 1, and a basis cotangent scaled by an elementwise derivative
(``np.eye(H) * s``) is an H x H array with H numbers in it.  An expert writes neither: the product of
``x`` with a unit vector is a column of ``x`` put in its place, and the scaled basis is a diagonal.

Four internal rows hold that knowledge, so that nothing op-specific enters the transformations:

- ``scaled_basis(s)``: the basis times an unbatched factor s shaped like one input, y[k, i] = s[i]
  where k is entry i's unit vector, else 0 (what batching ``basis * s`` gives);
- ``basis_contract(a, s)``: an einsum of an unbatched operand a with a (scaled, transposed) basis, that
  is a's entries copied onto a diagonal of zeros; no multiplication by the basis, no loop;
- ``add_scaled_basis`` and ``add_basis_contract``: either of those added onto a full batched value,
  in place on its diagonal (no zeros array, no second pass).

``basis_like`` recognizes a basis through the layout ops batching puts on it (a transpose of its data
axes); ``contract_batch``, ``scale_batch`` and ``add_batch`` are the batch rules that matmul and outer,
the elementwise product, quotient and negation, and the sum call before their general rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.dims import Dim, numel
from gradgen.expr import Attr, Index, Lit, Slice, call, method, mul
from gradgen.ir import Const, TensorType, perm_of
from gradgen.ops import ONE, P, Param, op


@dataclass(frozen=True)
class BasisView:
    """A batched value that is a basis: n unit vectors over entries offset .. offset + numel(shape) of
    all wrt entries, times ``scale`` (an unbatched tensor shaped ``shape``, or a number), its data axes
    permuted: axis j of the value (after the batch axis) is axis perm[j] of ``shape``."""

    n: Dim
    offset: Dim
    shape: tuple[Dim, ...]
    scale: object  # node id or Const
    perm: tuple[int, ...]


def basis_like(b, x) -> BasisView | None:
    """The basis that the batched value ``x`` is, seen through transposes of its data axes, or None."""
    if not isinstance(x, int):
        return None
    node = b.nodes[x]
    if node.op in ("basis", "scaled_basis"):
        scale = node.args[0] if node.op == "scaled_basis" else ONE
        shape = tuple(node.attr("shape"))
        return BasisView(node.attr("n"), node.attr("offset"), shape, scale, tuple(range(len(shape))))
    if node.op == "transpose":
        inner = basis_like(b, node.args[0])
        axes = perm_of(node, len(b.shape(node.args[0])))
        if inner is None or axes[0] != 0:  # (the batch axis stays in front)
            return None
        perm = tuple(inner.perm[a - 1] for a in axes[1:])
        return BasisView(inner.n, inner.offset, inner.shape, inner.scale, perm)
    return None


# ------------------------------------------------------------------------------------------------
# the batch rules that keep a basis structured


def contract_batch(r, subscripts: str, which: int):
    """The einsum ``subscripts`` (batched: one operand's term and the output start with z) of the
    unbatched operand and the batched operand ``which`` when that one is a basis, as a basis_contract;
    None when it is not a basis or the einsum would sum over an axis of the other operand alone."""
    view = basis_like(r.b, r.batched[which])
    if view is None:
        return None
    terms, out = subscripts.split("->")
    t_a, t_u = terms.split(",")[1 - which], terms.split(",")[which]
    if not set(t_a) <= set(t_u) | set(out) or len(set(t_u)) != len(t_u):
        return None
    other, t_a = _untransposed(r.b, r.x(1 - which), t_a)
    parts = terms.split(",")
    parts[1 - which] = t_a
    subscripts = ",".join(parts) + "->" + out
    with _citing(r, "a product with unit vectors: a copy onto a diagonal"):
        return _contract_node(r, other, view, subscripts, which)


def _contract_node(r, other, view: BasisView, subscripts: str, which: int):
    return r.op(
        "basis_contract",
        other,
        view.scale,
        subscripts=subscripts,
        which=which,
        n=view.n,
        offset=view.offset,
        shape=view.shape,
        perm=view.perm,
    )


def _untransposed(b, x, letters: str):
    """A transposed operand as the array it transposes, its einsum letters permuted to match."""
    node = b.nodes[x] if isinstance(x, int) else None
    if node is None or node.op != "transpose":
        return x, letters
    inner = [""] * len(letters)
    for j, p in enumerate(perm_of(node, len(letters))):
        inner[p] = letters[j]
    return node.args[0], "".join(inner)


def scale_batch(r, combine):
    """An elementwise op of a batched basis and an unbatched factor (``combine(scale, factor)``): the
    scaled basis, when the result has the basis's own shape; None otherwise."""
    xs = r.batched
    if sum(x is not None for x in xs) != 1:
        return None
    i = 0 if xs[0] is not None else 1
    view = basis_like(r.b, xs[i])
    if view is None or view.perm != tuple(range(len(view.shape))) or tuple(r.out.shape) != view.shape:
        return None
    factor = r.x(1 - i) if len(xs) == 2 else None
    scale = combine(view.scale, factor, i)
    if scale is None:
        return None
    if not r.is_number(scale) and tuple(r.shape(scale)) != view.shape:
        scale = r.broadcast(scale, view.shape)
    with _citing(r, "unit vectors times a factor: a diagonal"):
        return r.op("scaled_basis", scale, n=view.n, offset=view.offset, shape=view.shape)


def add_batch(r):
    """A full batched value plus a scaled basis of the same shape: the basis's diagonal added to the
    value in place (``add_scaled_basis``); None otherwise."""
    xs = r.batched
    if any(x is None for x in xs):
        return None
    for i in (0, 1):
        node = r.b.nodes[xs[i]]
        dense = xs[1 - i]
        if node.op not in ("scaled_basis", "basis_contract") or r.b.nodes[dense].op in (
            "scaled_basis",
            "basis",
        ):
            continue
        if tuple(r.shape(dense)) != (r.size_dim,) + tuple(r.out.shape):
            continue  # (the dense value is the whole result: nothing of it is broadcast)
        if node.op == "scaled_basis" and tuple(r.out.shape) != tuple(node.attr("shape")):
            continue
        attrs = dict(node.attrs)
        with _citing(r, "the unit vectors' part added onto a diagonal in place"):
            if node.op == "basis_contract":
                return r.op("add_basis_contract", dense, *node.args, **attrs)
            return r.op("add_scaled_basis", dense, node.args[0], **attrs)
    return None


def _citing(r, words: str):
    """What the lines of a structured basis say: the rule they apply, and how the unit vectors went."""
    rule = r.b.rule
    return r.b.applying(r.b.like, f"{rule}; {words}" if rule else words, r.b.hint)


# ------------------------------------------------------------------------------------------------
# emission: zeros, and the values written onto the diagonal that the basis picks


def _letters(subscripts: str, which: int, perm, rank: int):
    """(the other operand's term, the basis data letters in the basis's own axis order, the output's
    data letters)."""
    terms, out = subscripts.split("->")
    t_a, t_u = terms.split(",")[1 - which], terms.split(",")[which]
    data = t_u[1:]
    s_letters = "".join(data[perm.index(ax)] for ax in range(rank))
    return t_a, s_letters, out[1:]


def _arranged(value, letters: str, uniq: str):
    """``value`` (axes named by ``letters``) transposed and given new axes so that it broadcasts
    against an array whose axes are named by ``uniq``."""
    order = sorted(range(len(letters)), key=lambda i: uniq.index(letters[i]))
    if order != list(range(len(letters))):
        if order == [1, 0]:
            value = Attr(value, "T")
        else:
            value = method(value, "transpose", *(Lit(str(i)) for i in order))
    first = min((uniq.index(c) for c in letters), default=len(uniq))
    index = [Lit(":") if c in letters else Lit("None") for c in uniq[first:]]
    if any(i.text == "None" for i in index):
        value = Index(value, tuple(index), False)
    return value


def _diagonal(f, view_shape, blk: str):
    """The writable view of f.var's rows offset .. offset + numel(shape), reshaped to ``view_shape``,
    with its repeated letters taken on the diagonal (np.einsum returns a view for that)."""
    n, offset, shape = f.attr("n"), f.attr("offset"), tuple(f.attr("shape"))
    rows = f.var
    stop = offset + numel(shape)
    if not (offset.is_const and offset.value == 0 and stop == n):
        rows = _index(
            f.var, Slice(None if offset.is_const and offset.value == 0 else f.dim(offset), f.dim(stop))
        )
    block = (
        rows
        if tuple(view_shape) == tuple(f.out.shape)
        else method(rows, "reshape", f.shape_tuple(view_shape))
    )
    uniq = "".join(dict.fromkeys(blk))
    if uniq == blk:
        return block, uniq
    return call("np.einsum", Lit(repr(f"{blk}->{uniq}")), block), uniq


def _index(value, item):
    return Index(value, (item,), False)


def _contract_value(f, k: int):
    """(the block's letters, its diagonal's letters, what goes on the diagonal): operand k (a) arranged
    to the diagonal's axes, times the scale (operand k + 1)."""
    shape = tuple(f.attr("shape"))
    t_a, s_letters, out = _letters(f.attr("subscripts"), f.attr("which"), f.attr("perm"), len(shape))
    blk = s_letters + out
    uniq = "".join(dict.fromkeys(blk))
    value = _arranged(f.a(k), t_a, uniq)
    factor = _scale_factor(f, k + 1, s_letters, uniq)
    return blk, uniq, value if factor is None else mul(value, factor)


def _unscaled(scale) -> bool:
    return isinstance(scale, Const) and scale.value == 1


def _scale_factor(f, k: int, s_letters: str, uniq: str):
    scale = f.node.args[k]
    if _unscaled(scale):
        return None
    if isinstance(scale, Const):
        return f.a(k)
    return _arranged(f.a(k), s_letters, uniq)


# what a product with the basis is: the einsum, which operand the basis is, and the basis itself
CONTRACT_ATTRS = (
    Param("subscripts", "str"),
    Param("which", "int"),
    Param("n", "dim"),
    Param("offset", "dim"),
    Param("shape", "dims"),
    Param("perm", "axes"),
)


@op(
    "scaled_basis",
    (P("s", "operand"), Param("n", "dim"), Param("offset", "dim"), Param("shape", "dims")),
    rule="the basis vectors, scaled",
    internal=True,
    fresh=True,
    linear=True,
    number_operands=True,
    derivation="""
y[k, i] = s[i] when k is the unit vector of entry i (k = offset + the flat index of i), else 0: the
batch of unit vectors times a factor shaped like one input (a basis cotangent through an elementwise
rule).  Written as zeros and one copy of s onto the diagonal; linear in s, whose cotangent is that
diagonal of g.""",
)
class ScaledBasis:
    shape = staticmethod(lambda s: TensorType((s.attr("n"),) + tuple(s.attr("shape")), "float"))

    @staticmethod
    def forward(f):
        shape = tuple(f.attr("shape"))
        size = numel(shape)
        f.stmt(f.var, call("np.zeros", f.shape_tuple(f.out.shape), dtype=f.dtype()))
        diag, _ = _diagonal(f, (size, size), "ii")
        value = f.a(0)
        if f.t(0) is not None and f.t(0).rank > 1:  # (a number or a 0-d value broadcasts as it is)
            value = method(value, "reshape", f.dim(size))
        f.stmt(None, call("np.copyto", diag, value))
        return None

    @staticmethod
    def pullback(r):
        if isinstance(r.x(0), Const):
            return (None,)
        shape = tuple(r.attr("shape"))
        basis = r.op("basis", n=r.attr("n"), offset=r.attr("offset"), shape=shape)
        data = "abcdefghijklmnopqrstuvwxy"[: len(shape)]
        return (r.op("contract", r.g, basis, subscripts=f"z{data},z{data}->{data}"),)


@op(
    "basis_contract",
    (P("a"), P("s", "operand"), *CONTRACT_ATTRS),
    rule="product with the basis: a copy onto the diagonal",
    internal=True,
    fresh=True,
    number_operands=True,
    derivation="""
y = einsum(subscripts) of a and U, U the batch of unit vectors (times s, data axes permuted by perm)
as operand ``which``.  Each unit vector fixes the letters of its term to the entry it stands for, so
y's rows are a's entries (times s) on the diagonal where an output letter equals a basis letter, and 0
elsewhere: zeros and one copy, no multiplication by the basis.  Bilinear in (a, s); the cotangents are
the einsum rule's, contracted with U.""",
)
class BasisContract:
    @staticmethod
    def shape(s):
        t_a, s_letters, out = _letters(
            s.attr("subscripts"), s.attr("which"), s.attr("perm"), len(s.attr("shape"))
        )
        size = dict(zip(t_a, s.types[0].shape))
        size.update(zip(s_letters, s.attr("shape")))
        return TensorType((s.attr("n"),) + tuple(size[c] for c in out), "float")

    @staticmethod
    def forward(f):
        shape = tuple(f.attr("shape"))
        blk, uniq, value = _contract_value(f, 0)
        offset, n = f.attr("offset"), f.attr("n")
        if uniq == blk and offset.is_const and offset.value == 0 and numel(shape) == n:
            # every unit vector picks one entry of a: y is a itself, rearranged (a copy, as promised)
            if len(shape) != 1:
                value = method(value, "reshape", f.shape_tuple(f.out.shape))
            return call("np.array", value) if _unscaled(f.node.args[1]) else value
        f.stmt(f.var, call("np.zeros", f.shape_tuple(f.out.shape), dtype=f.dtype()))
        diag, _ = _diagonal(f, shape + tuple(f.out.shape[1:]), blk)
        f.stmt(None, call("np.copyto", diag, value))
        return None

    @staticmethod
    def jvp(r):
        ta, ts = r.tangents
        keep = dict(r.node.attrs)
        da = r.op("basis_contract", ta, r.x(1), **keep) if ta is not None else None
        ds = r.op("basis_contract", r.x(0), ts, **keep) if ts is not None else None
        return r.add(da, ds)

    @staticmethod
    def pullback(r):
        subscripts, which = r.attr("subscripts"), r.attr("which")
        terms, out = subscripts.split("->")
        t_a, t_u = terms.split(",")[1 - which], terms.split(",")[which]
        shape = tuple(r.attr("shape"))
        unit = r.op("basis", n=r.attr("n"), offset=r.attr("offset"), shape=shape)
        unit = r.transpose(unit, (0,) + tuple(1 + p for p in r.attr("perm")))
        scaled = unit if r.is_number(r.x(1)) else r.mul(unit, r.transpose(r.x(1), r.attr("perm")))
        if r.is_number(r.x(1)) and not (isinstance(r.x(1), Const) and r.x(1).value == 1):
            scaled = r.mul(unit, r.x(1))
        da = r.op("contract", r.g, scaled, subscripts=f"{out},{t_u}->{t_a}")
        if r.is_number(r.x(1)):
            return (da, None)
        _, s_letters, _ = _letters(subscripts, which, r.attr("perm"), len(shape))
        ds = r.op("contract", r.g, r.x(0), unit, subscripts=f"{out},{t_a},{t_u}->{s_letters}")
        return (da, ds)


def _diagonal_index(f) -> tuple:
    """The fancy index of the entries the unit vectors pick: row offset + k of entry k, and the entry's
    own position, as broadcasting aranges (y[offset + flat(i), i] for every i of the input's shape)."""
    offset, shape = f.attr("offset"), tuple(f.attr("shape"))
    size = numel(shape)
    start = [] if offset.is_const and offset.value == 0 else [f.dim(offset)]
    rows = call("np.arange", *start, f.dim(offset + size) if start else f.dim(size))
    if len(shape) > 1:
        rows = method(rows, "reshape", f.shape_tuple(shape))
    index = [rows]
    for j, d in enumerate(shape):
        ar = call("np.arange", f.dim(d))
        trailing = len(shape) - 1 - j
        if trailing:
            ar = Index(ar, (Lit(":"),) + tuple(Lit("None") for _ in range(trailing)), False)
        index.append(ar)
    return tuple(index)


@op(
    "add_scaled_basis",
    (P("a"), P("s", "operand"), Param("n", "dim"), Param("offset", "dim"), Param("shape", "dims")),
    rule="the basis vectors, scaled, added on the diagonal",
    internal=True,
    fresh=True,
    linear=True,
    number_operands=True,
    derivation="""
y = a + scaled_basis(s): a with s[i] added at the entry that unit vector offset + flat(i) picks, in
place (a copy of a when a is not a buffer of its own).  Linear in (a, s): a receives g, s the diagonal
of g.""",
)
class AddScaledBasis:
    shape = staticmethod(lambda s: TensorType(s.types[0].shape, "float"))

    @staticmethod
    def forward(f):
        f.stmt(f.var, method(f.a(0), "copy"))
        f.stmt(f.var, f.a(1), op="+=", index=_diagonal_index(f))
        return None

    @staticmethod
    def jvp(r):
        ta, ts = r.tangents
        keep = dict(r.node.attrs)
        basis = r.op("scaled_basis", ts, **keep) if ts is not None else None
        return r.add(ta, basis)

    @staticmethod
    def pullback(r):
        keep = dict(r.node.attrs)
        ds = None if r.is_number(r.x(1)) else ScaledBasis.pullback(_Attrs(r, keep))[0]
        return (r.g, ds)


class _Attrs:
    """A rule's view of an add_* node as the node it adds (a pullback shared between two rows): the
    given attributes, and the operands after the first."""

    def __init__(self, r, attrs):
        self._r, self._attrs = r, attrs

    def __getattr__(self, name):
        return getattr(self._r, name)

    def attr(self, key, default=None):
        return self._attrs.get(key, default)

    def x(self, i):
        return self._r.x(i + 1)


@op(
    "add_basis_contract",
    (P("onto"), P("a"), P("s", "operand"), *CONTRACT_ATTRS),
    rule="product with the basis: added onto the diagonal",
    internal=True,
    fresh=True,
    number_operands=True,
    derivation="""
y = onto + basis_contract(a, s): a's entries (times s) added onto the diagonal of onto's rows that the
unit vectors pick, in place (a copy of onto when onto is not a buffer of its own); no zeros array, no
second pass.  Linear in onto, bilinear in (a, s): onto receives g, a and s what basis_contract's
rule gives them.""",
)
class AddBasisContract:
    shape = staticmethod(lambda s: TensorType(s.types[0].shape, "float"))

    @staticmethod
    def forward(f):
        shape = tuple(f.attr("shape"))
        blk, _, value = _contract_value(f, 1)
        f.stmt(f.var, method(f.a(0), "copy"))
        diag, uniq = _diagonal(f, shape + tuple(f.out.shape[1:]), blk)
        f.stmt(f.view("rows" if uniq == blk else "diagonal", diag), value, op="+=")
        return None

    @staticmethod
    def jvp(r):
        t_onto, ta, ts = r.tangents
        keep = dict(r.node.attrs)
        da = r.op("basis_contract", ta, r.x(2), **keep) if ta is not None else None
        ds = r.op("basis_contract", r.x(1), ts, **keep) if ts is not None else None
        return r.add(t_onto, r.add(da, ds))

    @staticmethod
    def pullback(r):
        return (r.g,) + tuple(BasisContract.pullback(_Attrs(r, dict(r.node.attrs))))
