"""The reverse sweep that ``backward`` and ``value_and_grad`` are emitted from.

Each op row's emission-level ``vjp`` rule writes NumPy expressions for its operands' cotangents into a
statement list; the sweep reduces broadcasts statically (notes section 6), accumulates over uses (notes
section 3), gives a bare number cotangent an array's dtype before a rule that could not take it, and
folds a full reduction's filled cotangent into the elementwise rule that follows.  (Derivative programs
are built by the graph-level sweeps of ``gradgen/derive.py`` instead.)
"""

from __future__ import annotations

from gradgen.buffers import Stmt
from gradgen.context import _Ctx, _section
from gradgen.dims import Dim
from gradgen.expr import UFUNCS, Bin, Call, E, Lit, Neg, Tuple, Var, add, axis_lit, method
from gradgen.ir import Const, Node
from gradgen.ops import TABLE


class BwdCtx(_Ctx):
    def __init__(self, planner, node, g: E, sweep: _Sweep):
        super().__init__(planner, node)
        self.g = g
        self.sweep = sweep
        self.rule_note: str | None = None

    @property
    def y(self) -> E:
        return Var(self.p.var[self.node.id])

    def x(self, i) -> E:
        return self.operand(i)

    def saved(self, hint) -> E:
        return Var(self.p.fwd_temps[(self.node.id, hint)])

    def needs(self, i) -> bool:
        a = self.node.args[i]
        return isinstance(a, int) and self.p.needs_grad[a]

    def dim(self, d: Dim) -> E:
        return self.p.dim_expr(d)

    def dtype(self) -> E:
        return self.sweep.dtype

    def note(self, text: str):
        self.rule_note = text

    def is_number(self, e: E) -> bool:
        return _is_number(e, self.sweep)

    def definition(self, e: E) -> E | None:
        """The expression a cotangent variable was assigned, if it was assigned once and never mutated."""
        if isinstance(e, Var) and e.name not in self.sweep.mutated:
            return self.sweep.defs.get(e.name)
        return None

    def temp(self, hint, expr, shape) -> Var:
        key = (self.node.id, hint)
        if key not in self.p.bwd_temps:  # the same name in backward and in value_and_grad
            # the temporary that holds operand 0's cotangent (the row's grad_temp) is named after it
            grad_of_operand = hint == TABLE[self.node.op].grad_temp
            self.p.bwd_temps[key] = self.p.namer.fresh(
                (
                    f"d{self.p.var[self.node.args[0]]}"
                    if grad_of_operand
                    else f"d{self.p.var[self.node.id]}_{hint}"
                ),
                "temp",
                "bwd",
            )
        name = self.p.bwd_temps[key]
        self.p.temp_shapes[name] = tuple(shape)
        self.sweep.emit(Stmt(name, expr, comment=self.rule_note or TABLE[self.node.op].rule))
        return Var(name)

    def stmt(self, target, expr, op="=", index=None):
        name = target.name if isinstance(target, Var) else target
        self.sweep.emit(Stmt(name, expr, op, index, comment=self.rule_note or TABLE[self.node.op].rule))

    def unbroadcast(self, e: E, from_shape, to_shape) -> E:
        return unbroadcast(e, from_shape, to_shape)


def unbroadcast(e: E, from_shape: tuple[Dim, ...], to_shape: tuple[Dim, ...]) -> E:
    """Sum a cotangent over the axes along which its operand was broadcast (notes section 6)."""
    lead = len(from_shape) - len(to_shape)
    if lead > 0:
        if lead == len(from_shape):
            e = method(e, "sum")
        else:
            e = method(e, "sum", axis=axis_lit(tuple(range(lead))))
    keep = tuple(k for k, d in enumerate(to_shape) if d.is_one() and not from_shape[lead + k].is_one())
    if keep:
        e = method(e, "sum", axis=axis_lit(keep), keepdims=Lit("True"))
    return e


def _is_number(e: E, sw: _Sweep) -> bool:
    """A Python number at run time: it reads only dims and variables assigned such numbers
    (value_and_grad's cotangent 1, scaled by literals and sizes).  A number has no dtype of its own, so
    it must become a typed array before it meets a mask, a view method or einsum, or is returned."""
    seen: set[str] = set()
    stack = list(e.vars())
    while stack:  # iterative: a chain of scalar entries makes a chain of definitions this long
        v = stack.pop()
        if v in sw.dims or v in seen or sw.numbers.get(v):
            continue
        seen.add(v)
        d = sw.defs.get(v)
        if d is None or v in sw.mutated:
            return False
        stack.extend(d.vars())
    for v in seen:  # each of them reads only numbers: remember it until something is mutated
        sw.numbers[v] = True
    return True


class _Sweep:
    def __init__(self, dtype: E):
        self.stmts: list[Stmt] = []
        self.dtype = dtype
        self.defs: dict[str, E] = {}
        self.mutated: set[str] = set()
        self.dims: set[str] = set()
        self.numbers: dict[str, bool] = {}  # variables known to hold a number (see _is_number)
        self.adj: dict[int, E] = {}  # each node's cotangent so far (read by ops_index's scatters)
        self.scatters: dict[str, int] = {}  # fresh zeros an index rule wrote into -> its operand

    def emit(self, s: Stmt):
        self.stmts.append(s)
        if s.target and s.op == "=" and s.index is None:
            if s.target in self.defs:  # a redefinition: what was known from the old one may not hold
                self.numbers.clear()
            self.defs[s.target] = s.expr
        elif s.target:
            self.mutated.add(s.target)
            self.numbers.clear()


def _total(terms: list[E]) -> E:
    """The sum of an operand's contributions: ``a + b + c`` for a few, and for an operand used many
    times (``concatenate((x, x, ..., x))``) sums of at most 16 terms summed again, so that the tree
    that is rendered (recursively) stays shallow."""
    while len(terms) > 1:
        chunks = [terms[k : k + 16] for k in range(0, len(terms), 16)]
        terms = []
        for chunk in chunks:
            e = chunk[0]
            for c in chunk[1:]:
                e = add(e, c)
            terms.append(e)
    return terms[0]


def _expr_shape(e: E, shapes: dict[str, tuple]):
    """The shape of an elementwise expression, from its variables' shapes; None when unknown."""
    if isinstance(e, Var):
        return shapes.get(e.name)
    if isinstance(e, Lit):
        return ()
    if isinstance(e, Neg):
        return _expr_shape(e.a, shapes)
    parts = (
        [e.a, e.b]
        if isinstance(e, Bin) and e.op != "@"
        else list(e.args) if isinstance(e, Call) and e.func in UFUNCS else None
    )
    if parts is None:
        return None
    out: tuple = ()
    for p in parts:
        sh = _expr_shape(p, shapes)
        if sh is None:
            return None
        if len(sh) > len(out):
            out, sh = sh, out
        lead = len(out) - len(sh)
        merged = list(out[:lead])
        for d1, d2 in zip(out[lead:], sh):
            if d1 == d2 or d2.is_one():
                merged.append(d1)
            elif d1.is_one():
                merged.append(d2)
            else:
                return None
        out = tuple(merged)
    return out


def _scalar_last(e: E, s: E) -> E:
    """s * X -> X * s and s * (k * X) -> X * (k * s): the array operand first, for in-place updates."""
    if isinstance(e, Bin) and e.op == "*" and e.a == s:
        rest = e.b
        if isinstance(rest, Bin) and rest.op == "*" and isinstance(rest.a, Lit):
            return Bin("*", rest.b, Bin("*", rest.a, s))
        return Bin("*", rest, s)
    return e


def reverse_sweep(self, root: E, dtype: E) -> tuple[list[Stmt], dict[int, E]]:
    """The reverse sweep of ``backward`` and ``value_and_grad`` for the planner ``self``: walk the nodes
    in reverse, ask each op's VJP for its operands' cotangents, reduce broadcasts statically, and add
    each cotangent into the map (notes section 3 when a value fans out)."""
    sw = _Sweep(dtype)
    sw.dims = set(self.dim_var.values())
    self.last_sweep = sw
    g = self.graph
    adj: dict[int, E] = {g.output: root}
    sw.adj = adj
    version: dict[int, int] = {}
    entries = {e.name: e for e in g.entries}
    last_entry = None
    for n in reversed(g.nodes):
        if n.op == "input" or n.id not in self.live or not self.needs_grad[n.id] or n.id not in adj:
            continue
        if (n.entry, n.origin) != last_entry and n.entry is not None:
            last_entry = (n.entry, n.origin)
            e = entries.get(n.entry)
            if e is not None:
                sw.emit(Stmt(None, None, comment=_section(e, n.origin)))
            for note in self.notes(n.entry, backward=True):
                sw.emit(Stmt(None, None, comment=note, note=True))
        opdef = TABLE[n.op]
        if _is_number(adj[n.id], sw) and not opdef.number_cotangent:
            # a bare number as cotangent (value_and_grad's 1): give it the output's shape and dtype
            # before a rule that could not take a number (a mask product, .T, einsum, ...)
            name = self.adj_name[n.id] + f"#{version.get(n.id, 0) + 1}"
            version[n.id] = version.get(n.id, 0) + 1
            self.namer.kind.setdefault(name, self.namer.kind[self.adj_name[n.id]])
            shape = Tuple(tuple(self.dim_expr(d) for d in self.types[n.id].shape))
            sw.emit(Stmt(name, Call("np.full", (shape, adj[n.id]), (("dtype", sw.dtype),))))
            adj[n.id] = Var(name)
        ctx = BwdCtx(self, n, adj[n.id], sw)
        cots = opdef.vjp(ctx)
        if opdef.elementwise:
            cots = fold_filled(self, n, ctx, cots, sw)
        merged: dict[int, tuple[list[E], str]] = {}  # one contribution per operand, even if used twice
        for i, c in enumerate(cots):
            a = n.args[i]
            if c is None or isinstance(a, Const) or not self.needs_grad[a]:
                continue
            rule = ctx.rule_note or opdef.rule
            if opdef.elementwise:
                to_shape = self.types[a].shape
                if to_shape != self.types[n.id].shape:
                    c = unbroadcast(c, self.types[n.id].shape, to_shape)
                    rule = opdef.broadcast_rule or rule
            merged.setdefault(a, ([], rule))[0].append(c)
        for a, (terms, rule) in merged.items():
            c = _total(terms)
            # accumulate into the cotangent map (multi-path chain rule, notes section 3)
            k = version.get(a, 0) + 1
            version[a] = k
            name = self.adj_name[a] + ("" if k == 1 else f"#{k}")
            self.namer.kind.setdefault(name, self.namer.kind[self.adj_name[a]])
            expr = c if a not in adj else add(adj[a], c)
            sw.emit(
                Stmt(
                    name,
                    expr,
                    comment=rule + (", accumulated over uses (notes section 3)" if a in adj else ""),
                )
            )
            adj[a] = Var(name)
    return sw.stmts, adj


def fold_filled(self, n: Node, ctx: BwdCtx, cots, sw: _Sweep):
    """When the cotangent is np.full(shape, s) (a full reduction's), an elementwise rule that
    multiplies it by a full-shaped operand can use the number s instead: one pass, no filled
    array.  Each contribution keeps the output's shape or the original cotangent is kept."""
    g = ctx.g
    filled = ctx.definition(g)
    if not (isinstance(filled, Call) and filled.func == "np.full"):
        return cots
    s = filled.args[1]
    if _is_number(s, sw) and not TABLE[n.op].number_cotangent:  # (1 / N) * mask would be float64
        return cots
    ctx2 = BwdCtx(self, n, s, sw)
    cots2 = TABLE[n.op].vjp(ctx2)
    out_shape = self.types[n.id].shape
    shapes = dict.fromkeys(self.dim_var.values(), ())
    shapes["dout"] = ()
    shapes.update(self.temp_shapes)  # forward temporaries a rule reads (sigmoid's tail)
    for _i, a in enumerate(n.args):
        if isinstance(a, int):
            shapes[self.var[a]] = self.types[a].shape
    shapes[self.var[n.id]] = out_shape
    result = []
    for c, c2 in zip(cots, cots2):
        if c is None:
            result.append(None)
            continue
        if c2 is None or _expr_shape(c2, shapes) != out_shape:
            return cots
        result.append(_scalar_last(c2, s))
    return tuple(result)
