"""Derivative programs as graphs in the spec's own IR, and the builder that the rules use to grow them.

A ``Program`` is a frozen, typed graph (``ir.Node``s with their ``TensorType``s, the same IR that
``lower`` produces) with arguments and several outputs.  The transformations in ``gradgen/derive.py``
(reverse sweep, forward mode, batching) make programs from programs through a ``Builder``:

- every node it adds is type-checked by its op's shape rule, so a derivative program is shape-checked
  like a spec, and can itself be differentiated, batched and emitted;
- equal nodes (same op, operands and attributes) are shared, so a rule that is applied twice, or two
  rules that need the same value (softmax of the logits, say), add it once;
- its arithmetic knows the symbolic zero (``None``: no tangent, no cotangent) and folds the identities
  that literals produce (times 1, minus a negation, a filled array times a full-shaped one);
- a Python number (a literal, a size, the cotangent 1 of ``value_and_grad`` and what arithmetic makes of
  them: dtype ``"number"``) never reaches an op that could not take it: it becomes an array of the
  computation's dtype first (``np.full``), so float32 stays float32.

Nothing here knows any particular op beyond the few generic ones it is built from (arithmetic,
reductions, broadcasting and layout); what an op needs is on its row in ``gradgen/ops.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

from gradgen.dims import Dim
from gradgen.ir import Const, InputInfo, Node, TensorType, TypedGraph, perm_of
from gradgen.numbers import RunNum
from gradgen.ops import ROWS, ShapeError, broadcast_shapes

Operand = "int | Const"


@dataclass(frozen=True)
class Hint:
    """The variable name a derived node asks for: ``prefix + <name of node base> + suffix``."""

    base: int
    prefix: str = ""
    suffix: str = ""
    final: bool = True  # False: a value on the way inside a rule (``dz1_mul``), renamed if it turns out
    # to be a result

    def derive(self, prefix: str = "", suffix: str = "", final: bool | None = None) -> Hint:
        keep = self.final if final is None else final
        return Hint(self.base, prefix + self.prefix, self.suffix + suffix, keep)


@dataclass(frozen=True)
class Program:
    """A typed graph with arguments and outputs: one generated function."""

    tg: TypedGraph
    params: tuple[int, ...]  # argument nodes, in order: the spec's inputs, then tangents / v
    outputs: tuple[int, ...]
    rules: tuple[str | None, ...]  # per node: the rule its line cites; None for the spec's own values
    hints: tuple[Hint | None, ...]  # per node: the name it asks for; None for the spec's own values
    n_spec: int  # params[:n_spec] are the spec's inputs, the rest were added (tangents, v)
    anchors: tuple[int | None, ...]  # per node: the node whose rule made it (None for the spec's own)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.tg.graph.nodes

    @property
    def types(self) -> tuple[TensorType, ...]:
        return self.tg.types


class _ShapeCheck:
    """What an op's shape rule reads of a node being built (like ``shapes.RuleContext``)."""

    def __init__(self, node: Node, types: list):
        self.node = node
        self.types = [None if isinstance(a, Const) else types[a] for a in node.args]

    def attr(self, key, default=None):
        return self.node.attr(key, default)

    def t(self, i):
        return self.types[i]

    def where(self, i):
        return f"operand {i}"

    def fail(self, message):
        raise ShapeError(message)


class BuildError(AssertionError):
    """A derivative rule built a node whose shape rule fails: a bug in gradgen, never in a spec."""


def is_intermediate(hint: Hint | None) -> bool:
    """A name a rule gave to a value on the way (``dz1_mul``), not to a result it stands for."""
    return hint is not None and not hint.final


def const(value) -> Const:
    return Const(value, repr(value) if isinstance(value, float) else str(value))


def size(d: Dim) -> Const:
    """A dim as an operand (a count to divide by); a literal when the dim is a number."""
    if d.is_const:
        return const(d.value)
    return Const(None, str(d), RunNum("dim", dim=d))


def attrs_of(op: str, given: dict) -> tuple:
    """An op's attributes in its parameter order, defaults filled in, as ``lower`` builds them."""
    out = []
    for p in ROWS[op].params:
        if p.kind in ("tensor", "tensors", "operand"):
            continue
        out.append((p.name, given.pop(p.name) if p.name in given else p.default))
    if given:
        raise BuildError(f"{op}: unknown attributes {sorted(given)}")
    return tuple(out)


class Builder:
    def __init__(self, base: TypedGraph | Program):
        if isinstance(base, Program):
            tg, rules, hints, params = base.tg, base.rules, base.hints, base.params
            self.n_spec = base.n_spec
            anchors = base.anchors
        else:
            tg = base
            rules = hints = (None,) * len(tg.types)
            params = tuple(i.node for i in tg.graph.inputs)
            self.n_spec = len(params)
            anchors = (None,) * len(tg.types)
        self.graph = tg.graph
        self.nodes: list[Node] = list(tg.graph.nodes)
        self.types: list[TensorType] = list(tg.types)
        self.rules: list[str | None] = list(rules)
        self.hints: list[Hint | None] = list(hints)
        self.anchors: list[int | None] = list(anchors)
        self.inputs: list[InputInfo] = list(tg.graph.inputs)
        self.params: list[int] = list(params)
        self.cse = {(n.op, n.args, n.attrs): n.id for n in self.nodes if n.op != "input"}
        self.like: int | None = None  # the node whose rule is being applied
        self.rule: str | None = None
        self.hint: Hint | None = None

    # -- context -----------------------------------------------------------------------------------
    @contextmanager
    def applying(self, like: int, rule: str | None, hint: Hint | None):
        """Nodes added inside take ``like``'s place, cite ``rule`` and are named after ``hint``."""
        saved = (self.like, self.rule, self.hint)
        self.like, self.rule, self.hint = like, rule, hint
        try:
            yield
        finally:
            self.like, self.rule, self.hint = saved

    def name_result(self, nid, hint: Hint, since: int) -> None:
        """The node a rule returned takes the hint's own name (not an intermediate's) if the rule made
        it (node ids from ``since`` on); a value it reused keeps its name."""
        if not isinstance(nid, int) or self.rules[nid] is None:
            return
        old = self.hints[nid]
        # a value a rule made, one made on the way, or one named after a value the spec did not name
        unnamed = old is not None and not _named(self.nodes[old.base]) and _named(self.nodes[hint.base])
        if nid >= since or is_intermediate(old) or unnamed:
            self.hints[nid] = hint

    # -- nodes -------------------------------------------------------------------------------------
    def type(self, a) -> TensorType:
        if isinstance(a, Const):
            return TensorType((), "number")
        return self.types[a]

    def shape(self, a) -> tuple[Dim, ...]:
        return self.type(a).shape

    def is_number(self, a) -> bool:
        return self.type(a).dtype == "number"

    def input(self, name: str, shape: tuple[Dim, ...], like: int, param: bool = True) -> int:
        """A new argument of the program (a tangent, a vector v), shaped like node ``like``; with
        ``param`` False a stand-in that a transformation replaces (batching's seeds)."""
        src = self.nodes[like]
        nid = len(self.nodes)
        self.nodes.append(Node(nid, "input", (), (), name, name, src.place, None))
        self.types.append(TensorType(tuple(shape), "float"))
        self.rules.append(None)
        self.hints.append(None)
        self.anchors.append(None)
        self.inputs.append(InputInfo(nid, name, tuple(shape), "float", src.place, ()))
        if param:
            self.params.append(nid)
        return nid

    def op(self, op: str, *args, **attrs) -> int:
        return self.node(op, tuple(args), attrs_of(op, dict(attrs)))

    def node(self, op: str, args: tuple, attrs: tuple) -> int:
        row = ROWS[op]
        args = self._materialize(row, args)
        key = (op, args, attrs)
        if key in self.cse:
            return self.cse[key]
        like = self.nodes[self.like] if self.like is not None else self.nodes[-1]
        nid = len(self.nodes)
        node = Node(nid, op, args, attrs, None, like.label, like.place, like.entry, origin=like.origin)
        try:
            t = row.shape(_ShapeCheck(node, self.types))
        except ShapeError as exc:
            raise BuildError(f"{op}{args}{attrs}: {exc}") from None
        self.nodes.append(node)
        self.types.append(TensorType(t.shape, self._dtype(row, args, t.dtype)))
        self.rules.append(self.rule or row.rule)
        if row.hint and args and isinstance(args[0], int):  # a mask, a softmax: named after its operand
            self.hints.append(Hint(args[0], "", f"_{row.hint}"))
        else:
            self.hints.append(self.hint.derive(suffix=f"_{op}", final=False) if self.hint else Hint(nid))
        self.anchors.append(self.like)
        self.cse[key] = nid
        return nid

    def _dtype(self, row, args, dtype: str) -> str:
        if dtype != "float" or not row.elementwise:
            return dtype
        tensors = [self.types[a].dtype for a in args if isinstance(a, int)]
        return "number" if all(d == "number" for d in tensors) else "float"

    def _materialize(self, row, args: tuple) -> tuple:
        """Numbers become 0-d arrays of the dtype where the op could not take them as they are: in a
        non-elementwise op, or in an elementwise one whose only arrays are masks (1 * mask is int)."""
        numbers = [k for k, a in enumerate(args) if isinstance(a, Const) or self.is_number(a)]
        if not numbers or row.number_operands:
            return args
        if row.elementwise:
            kinds = {self.types[a].dtype for a in args if isinstance(a, int)}
            if "float" in kinds or kinds <= {"number"}:
                return args
        out = list(args)
        for k in numbers:
            out[k] = self.full((), args[k])
        return tuple(out)

    # -- arithmetic with symbolic zeros and folded identities --------------------------------------
    def _def(self, a) -> Node | None:
        return self.nodes[a] if isinstance(a, int) else None

    def _is(self, a, value) -> bool:
        return isinstance(a, Const) and a.num is None and a.value == value and not isinstance(a.value, bool)

    def add(self, a, b):
        if a is None or self._is(a, 0):
            return b
        if b is None or self._is(b, 0):
            return a
        nb, na = self._def(b), self._def(a)
        if nb is not None and nb.op == "neg":
            return self.sub(a, nb.args[0])
        if na is not None and na.op == "neg":
            return self.sub(b, na.args[0])
        return self.op("add", *self._unfill(a, b))

    def sub(self, a, b):
        if b is None or self._is(b, 0):
            return a
        if a is None or self._is(a, 0):
            return self.neg(b)
        nb = self._def(b)
        if nb is not None and nb.op == "neg":
            return self.add(a, nb.args[0])
        return self.op("sub", *self._unfill(a, b))

    def neg(self, a):
        if a is None:
            return None
        if isinstance(a, Const) and a.num is None:
            return const(-a.value)
        na = self._def(a)
        if na is not None and na.op == "neg":
            return na.args[0]
        return self.op("neg", a)

    def mul(self, a, b):
        if a is None or b is None:
            return None
        a, b = self._unfill(a, b)
        for x, y in ((a, b), (b, a)):
            if self._is(x, 1) and self.type(y).dtype != "bool":
                return y
            if self._is(x, -1) and self.type(y).dtype != "bool":
                return self.neg(y)
        na, nb = self._def(a), self._def(b)
        if na is not None and nb is not None and na.op == "neg" and nb.op == "neg":
            return self.mul(na.args[0], nb.args[0])
        if na is not None and na.op == "neg":
            return self.neg(self.mul(na.args[0], b))
        if nb is not None and nb.op == "neg":
            return self.neg(self.mul(a, nb.args[0]))
        for x, y in ((a, b), (b, a)):  # s * (c * X) with single values s, c: (s * c) * X, one pass
            ny = self._def(y)
            if self._single(x) and ny is not None and ny.op == "mul":
                c, rest = ny.args if self._single(ny.args[0]) else ny.args[::-1]
                if self._single(c) and not self._single(rest):
                    return self.mul(rest, self.mul(x, c))
        return self.op("mul", *self._unfill(a, b))

    def _single(self, a) -> bool:
        """One value: a number, or a 0-d float array (backward's dout, scaled)."""
        return self._scalar(a) or (len(self.shape(a)) == 0 and self.type(a).dtype == "float")

    def _scalar(self, a) -> bool:
        """A Python number at run time (a literal, a size, or arithmetic on them)."""
        return isinstance(a, Const) or self.is_number(a)

    def div(self, a, b):
        if a is None:
            return None
        if self._is(b, 1):
            return a
        na = self._def(a)
        if na is not None and na.op == "neg":
            return self.neg(self.div(na.args[0], b))
        return self.op("div", *self._unfill(a, b))

    def _unfill(self, a, b) -> tuple:
        """A filled or broadcast operand of an elementwise op whose other operand already has the result's
        shape is used as it is (np.full(shape, s) * X is s * X): one pass, no filled array."""
        out = [a, b]
        full = broadcast_shapes(self, [self.shape(a), self.shape(b)])
        for k in (0, 1):
            x, y = out[k], out[1 - k]  # the other operand as it is now: at most one is unfilled
            nx = self._def(x)
            if nx is None or nx.op not in ("full", "broadcast_to") or self.shape(y) != full:
                continue
            if self.type(y).dtype == "bool" and self._scalar(nx.args[0]):
                continue  # (a number times a mask is an int array; a 0-d float array is not)
            out[k] = nx.args[0]
        return tuple(out)

    # shape helpers (the ``s`` that broadcast_shapes reports to: never fails on a built graph)
    def where(self, i):
        return f"operand {i}"

    def fail(self, message):
        raise BuildError(message)

    # -- reductions, broadcasting and layout -------------------------------------------------------
    def sum(self, a, axes: tuple[int, ...] | None, keepdims: bool = False):
        """Sum over non-negative ``axes`` (None: all)."""
        if a is None:
            return None
        rank = len(self.shape(a))
        if (axes is not None and len(axes) == 0) or rank == 0:
            return a
        if axes is None or len(axes) == rank:
            axis = None
        else:
            axis = axes[0] if len(axes) == 1 else tuple(axes)
        return self.op("sum", a, axis=axis, keepdims=keepdims)

    def sum_to(self, a, shape: tuple[Dim, ...]):
        """Sum a value over the axes along which something of ``shape`` was broadcast to it (notes
        section 6): the leading axes it lacks, and its axes of literal size 1."""
        if a is None:
            return None
        from_shape = self.shape(a)
        if from_shape == tuple(shape):
            return a
        lead = len(from_shape) - len(shape)
        if lead < 0:
            raise BuildError(f"sum_to: {from_shape} is smaller than {shape}")
        if lead:
            a = self.sum(a, tuple(range(lead)))
        keep = tuple(k for k, d in enumerate(shape) if d.is_one() and not from_shape[lead + k].is_one())
        if keep:
            a = self.sum(a, keep, keepdims=True)
        return a

    def expand(self, a, axes: tuple[int, ...]):
        """Insert axes of size 1 at ``axes`` (positions in the result)."""
        if a is None or not axes:
            return a
        if self.is_number(a):
            return a  # a number broadcasts as it is
        na = self._def(a)
        if na is not None and na.op in ("full", "broadcast_to") and self._scalar_fill(na):
            # one value everywhere (a full reduction's cotangent, spread): spread it to the new shape
            shape = list(self.shape(a))
            for ax in sorted(axes):
                shape.insert(ax, Dim.const(1))
            return self.broadcast(na.args[0], tuple(shape))
        return self.op("expand_dims", a, axis=tuple(sorted(axes)))

    def _scalar_fill(self, node: Node) -> bool:
        """A ``full`` or a ``broadcast_to`` of a 0-d value: the same number at every position."""
        return len(self.shape(node.args[0])) == 0

    def broadcast(self, a, shape: tuple[Dim, ...]):
        if a is None:
            return None
        shape = tuple(shape)
        if self.shape(a) == shape:
            return a
        if self.is_number(a):
            return self.full(shape, a)
        na = self._def(a)
        if na is not None and na.op == "broadcast_to":  # a broadcast of a broadcast: one view
            return self.broadcast(na.args[0], shape)
        return self.op("broadcast_to", a, shape=shape)

    def full(self, shape: tuple[Dim, ...], value) -> int:
        return self.op("full", value, shape=tuple(shape))

    def zeros(self, shape: tuple[Dim, ...]) -> int:
        return self.op("zeros", shape=tuple(shape))

    def reshape(self, a, shape: tuple[Dim, ...]):
        if a is None:
            return None
        if self.shape(a) == tuple(shape):
            return a
        na = self._def(a)
        if na is not None and na.op == "reshape" and self.shape(na.args[0]) == tuple(shape):
            return na.args[0]
        return self.op("reshape", a, shape=tuple(shape))

    def transpose(self, a, perm: tuple[int, ...] | None = None):
        """Permute the axes (None: reverse them); transposing back gives the operand itself."""
        if a is None:
            return None
        rank = len(self.shape(a))
        perm = tuple(reversed(range(rank))) if perm is None else tuple(perm)
        if perm == tuple(range(rank)):
            return a
        na = self._def(a)
        if na is not None and na.op == "transpose":
            inner = perm_of(na, len(self.shape(na.args[0])))
            combined = tuple(inner[p] for p in perm)
            if combined == tuple(range(rank)):
                return na.args[0]
        if na is not None and na.op == "matmul" and self.rules[a] is not None and perm == _swap_last(rank):
            x, y = na.args
            if len(self.shape(x)) >= 2 and len(self.shape(y)) >= 2:
                # a derived product (a cotangent): (X Y)^T = Y^T X^T, a product of transposed views
                # instead of a transposed product that a later reshape would have to copy
                return self.op("matmul", self.swap_last(y), self.swap_last(x))
        axes = None if perm == tuple(reversed(range(rank))) else perm
        return self.op("transpose", a, axes=axes)

    def swap_last(self, a):
        rank = len(self.shape(a))
        return self.transpose(a, tuple(range(rank - 2)) + (rank - 1, rank - 2))

    # -- the finished program ----------------------------------------------------------------------
    def finish(self, outputs: list) -> Program:
        """Freeze the graph; a zero output becomes zeros of its shape, a number a filled array."""
        graph = replace(self.graph, nodes=tuple(self.nodes), inputs=tuple(self.inputs))
        prog = Program(
            TypedGraph(graph, tuple(self.types)),
            tuple(self.params),
            tuple(outputs),
            tuple(self.rules),
            tuple(self.hints),
            self.n_spec,
            tuple(self.anchors),
        )
        return prog


def _named(node: Node) -> bool:
    """A value the spec names: a graph entry, or an entry of an inlined block (h1_mu)."""
    return node.name is not None or node.hint is not None


def _swap_last(rank: int) -> tuple[int, ...]:
    return tuple(range(rank - 2)) + (rank - 1, rank - 2)
