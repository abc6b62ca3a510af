"""What an op's emission rules see: names, and the contexts of ``forward`` emission.

``FwdCtx`` is the context an op row's ``forward(f)`` rule receives, in the planner (``forward``,
``value_and_grad``) and in the emitter of derivative programs alike; ``Namer`` hands out the variable
names of one generated function.
"""

from __future__ import annotations

import builtins
import keyword

from gradgen.buffers import Stmt
from gradgen.dims import Dim, shape_str
from gradgen.expr import Bin, E, Lit, Neg, Tuple, Var
from gradgen.ir import Const, Node
from gradgen.lower import RESERVED
from gradgen.ops import ROWS


class Namer:
    def __init__(self, taken: set[str]):
        self.taken = set(taken) | set(keyword.kwlist) | set(RESERVED) | set(dir(builtins)) | {"math"}
        self.kind: dict[str, tuple[str, str]] = {}  # name -> (kind, phase)
        self.asked: dict[str, str] = {}  # name -> the name asked for (dx_2 -> dx)

    def claim(self, name: str, kind: str, phase: str) -> str:
        self.kind[name] = (kind, phase)
        self.asked[name] = name
        return name

    def fresh(self, hint: str, kind: str = "temp", phase: str = "fwd") -> str:
        name = hint
        k = 1
        while name in self.taken:
            k += 1
            name = f"{hint}_{k}"
        self.taken.add(name)
        self.kind[name] = (kind, phase)
        self.asked[name] = hint
        return name

    def stem(self, name: str) -> str | None:
        """The name asked for when ``name`` was handed out (``dx`` for ``dx_2`` and for ``dx#2``, the
        next version of one cotangent); None for a name this namer did not hand out."""
        return self.asked.get(name) or self.asked.get(name.split("#")[0])


class _Ctx:
    """A rule's view of its node; ``planner`` is the planner or the emitter of a derivative program
    (names, types, dims and temporaries of the function being written)."""

    def __init__(self, planner, node: Node):
        self.p = planner
        self.node = node
        self.graph = planner.graph
        self.types = [None if isinstance(a, Const) else planner.types[a] for a in node.args]
        self.out = planner.types[node.id]

    def attr(self, key, default=None):
        return self.node.attr(key, default)

    def t(self, i):
        return self.types[i]

    def where(self, i):
        return str(i)

    def fail(self, message):  # shapes were checked already
        raise AssertionError(message)

    def shape_tuple(self, shape: tuple[Dim, ...]) -> E:
        return Tuple(tuple(self.dim(d) for d in shape))

    def operand(self, i) -> E:
        a = self.node.args[i]
        if isinstance(a, Const):
            return self.p.const_expr(a)
        return Var(self.p.var[a])

    def dtype(self) -> E:
        """The dtype the function computes in (internal ops that create arrays need it)."""
        return self.p.dtype_expr()


class FwdCtx(_Ctx):
    def __init__(self, planner, node, out: list[Stmt]):
        super().__init__(planner, node)
        self.stmts = out
        self.var = Var(planner.var[node.id])

    def operand_node(self, i) -> Node | None:
        a = self.node.args[i]
        return None if isinstance(a, Const) else self.graph.nodes[a]

    def single_use(self, i) -> bool:
        """Operand i is read by this node alone and is not the output."""
        a = self.node.args[i]
        return isinstance(a, int) and self.p.uses.get(a, 0) == 1 and not self.p.is_output(a)

    def value(self, operand) -> E:
        if isinstance(operand, Const):
            return self.p.const_expr(operand)
        return Var(self.p.var[operand])

    def a(self, i) -> E:
        return self.operand(i)

    def dim(self, d: Dim) -> E:
        return self.p.dim_expr(d)

    def saved_by(self, op: str) -> dict[str, E]:
        """The temporaries that the already emitted nodes of ``op`` on the same operand 0 saved, in a
        derivative program (the probabilities of a softmax cross-entropy, say; both an exact and a
        tanh-approximate GELU of one operand, each its own); {} in the planner."""
        if not getattr(self.p, "shares_temps", False) or not self.node.args:
            return {}
        first = self.node.args[0]
        found: dict[str, E] = {}  # (an earlier node's temporary wins over a later one's of that name)
        for n in self.graph.nodes:
            if n.op == op and n.args and n.args[0] == first and n.id != self.node.id:
                for (nid, h), v in self.p.fwd_temps.items():
                    if nid == n.id:
                        found.setdefault(h, Var(v))
        return found

    def temp(self, hint, expr, shape) -> Var:
        name = self.p.namer.fresh(f"{self.var.name}_{hint}", "temp", "fwd")
        self.p.fwd_temps[(self.node.id, hint)] = name
        self.p.temp_shapes[name] = tuple(shape)
        self.stmts.append(Stmt(name, expr, comment=shape_str(shape)))
        return Var(name)

    def view(self, hint, expr) -> Var:
        """A named view of this node's own array (a diagonal to update through): declared a view of
        it, so that the buffer pass never takes the name for a buffer of its own."""
        name = self.p.namer.fresh(f"{self.var.name}_{hint}", "temp", "fwd")
        self.stmts.append(Stmt(name, expr, view_of=self.var.name))
        return Var(name)

    def stmt(self, target, expr, op="=", index=None):
        name = target.name if isinstance(target, Var) else target
        self.stmts.append(Stmt(name, expr, op, index, comment=None))


def dim_expr(d: Dim, dim_var: dict[str, str]) -> E:
    """A (polynomial) dim as an expression over the variables the dims are bound to, its terms in the
    order ``Dim.render`` writes them (``T - 2``, ``-D * H``)."""
    if d.is_const:
        return Lit(str(d.value))
    expr = None
    for m, c in d.written():
        factors = [Var(dim_var[s]) for s in m]
        if abs(c) != 1 or not factors:
            factors.insert(0, Lit(str(abs(c))))
        if expr is None and c < 0:  # a leading minus sign binds to the first factor: -D * H
            first = factors[0]
            factors[0] = Lit("-" + first.text) if isinstance(first, Lit) else Neg(first)
        term = factors[0]
        for f in factors[1:]:
            term = Bin("*", term, f)
        if expr is None:
            expr = term
        else:
            expr = Bin("-" if c < 0 else "+", expr, term)
    return expr


def declared_view(n: Node, var: dict[int, str]) -> str | None:
    """The variable a node's result views when its op row says it returns a view (``fresh=False``)."""
    if ROWS[n.op].fresh is False:
        a = next((a for a in n.args if isinstance(a, int)), None)
        return var.get(a) if a is not None else None
    return None


def _section(e, origin) -> str:
    """The comment that opens a backward section: the entry; for an inlined block, the chain of calls
    (entry: block) and the block's entry with its line (h1: layer -> up: layernorm -> mu = ...)."""
    if not origin:
        return f"{e.name} = {e.text}"
    callers = [e.name] + [frame.entry for frame in origin[:-1]]
    chain = " -> ".join(f"{c}: {frame.block}" for c, frame in zip(callers, origin))
    last = origin[-1]
    return f"{chain} -> {last.entry} = {last.source} (block {last.block}, line {last.place.line})"
