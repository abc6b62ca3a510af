"""Stage 4, plan: the forward program, a reverse sweep over a cotangent map, and a buffer pass.

``plan`` returns a ``Plan``: statement lists (with expressions already rendered to text) for the
forward function, the backward function and the fused ``value_and_grad``, plus the names the templates
need.  The backward pass is the twenty-line sweep in ``_Planner.sweep``: walk the nodes in reverse,
ask each op's VJP rule for its operands' cotangents, reduce broadcasts statically, and add a cotangent
into the map (``+=`` when a value fans out, notes section 3's multi-path chain rule).
"""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass

from gradgen import runtime
from gradgen.dims import Dim, shape_str, single_symbol
from gradgen.expr import (
    AUG_OPS,
    UFUNC_OF,
    UFUNCS,
    Attr,
    Bin,
    Call,
    E,
    Index,
    Lit,
    Method,
    Neg,
    Tuple,
    Var,
    add,
    axis_lit,
    method,
    num,
)
from gradgen.ir import Const, Node, TypedGraph
from gradgen.lower import RESERVED
from gradgen.numbers import RUN_FUNCS, RunNum
from gradgen.ops import TABLE
from gradgen.testplan import KinkSite, domains, edges, kinks, ops_used

# ------------------------------------------------------------------------------------------------
# statements


@dataclass
class Stmt:
    target: str | None  # internal variable name (may carry a '#k' version suffix)
    expr: E | None  # None: a comment-only line
    op: str = "="  # "=", or an augmented "+=", "-=", "*=", "/="
    index: tuple[E, ...] | None = None  # target[index] op= expr
    comment: str | None = None
    # a comment-only line that explains the lines below it (an inlined block call, a rewrite), as
    # opposed to the section comments that head each graph entry's part of the backward pass
    note: bool = False

    def reads(self) -> list[str]:
        out = self.expr.vars() if self.expr is not None else []
        if self.index is not None:
            for e in self.index:
                out += e.vars()
        if self.target is not None and (self.op != "=" or self.index is not None):
            out.append(self.target)
        return out

    def rename(self, m: dict[str, str]) -> Stmt:
        return Stmt(
            m.get(self.target, self.target) if self.target else None,
            self.expr.rename(m) if self.expr is not None else None,
            self.op,
            tuple(e.rename(m) for e in self.index) if self.index is not None else None,
            self.comment,
            self.note,
        )

    def render(self) -> str:
        if self.expr is None:
            return ""
        if self.target is None:
            return self.expr.render()
        target = Var(self.target).render()
        if self.index is not None:
            target += "[" + ", ".join(e.render() for e in self.index) + "]"
        return f"{target} {self.op} {self.expr.render()}"


@dataclass(frozen=True)
class Line:
    code: str  # "" for a comment-only line
    comment: str | None = None


@dataclass(frozen=True)
class DimCheck:
    input: str
    rank: int
    dims: tuple[tuple[int, str, str | None], ...]  # (axis, dim text, var name if a plain symbol)
    # product axes (3*D, H*Dh), checked once their dims are bound: (axis, text, code, ((dim, var), ...))
    products: tuple[tuple[int, str, str, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class RangeCheck:
    input: str
    rank: int
    size: str  # Python expression of the indexed axis' length ("C", "B * T", "10")
    dim: str  # how the message shows that length ("C", "B*T", "10")
    role: str


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    source_path: str
    inputs: tuple[tuple[str, str, str], ...]  # (name, shape text, dtype)
    output: str
    output_shape: str
    scalar_output: bool
    wrt: tuple[str, ...]
    dims: tuple[tuple[str, str], ...]  # (dim symbol, variable name), in order of first appearance
    dim_checks: tuple[DimCheck, ...]
    forward: tuple[Line, ...]
    forward_out: str
    cache_fields: tuple[str, ...]
    cache_values: tuple[str, ...]  # what forward stores in each field but the last (the dtype)
    backward: tuple[Line, ...]
    fused: tuple[Line, ...]
    grads: tuple[tuple[str, str], ...]  # (input name, expression returned)
    fused_grads: tuple[tuple[str, str], ...]
    fused_out: str
    test_inputs: tuple[tuple[str, tuple, str, str], ...]  # (name, shape (symbolic text), dtype, domain)
    dim_symbols: tuple[str, ...]
    # run-time value checks (gradgen/runtime.py), rendered with the dims' variable names
    index_checks: tuple[RangeCheck, ...]
    nonempty_checks: tuple[tuple[str, str], ...]  # (dim expression, message), raised when it is 0
    output_dtype: str  # the forward output's dtype, for the cache: "loss.dtype"
    dout_shape: str  # the output's shape as a Python tuple in backward's names: "(N, C)"
    # for the generated tests (gradgen.testplan): ops the output uses, kinks that can be forced exactly,
    # and (input, "scale" | "shrink" | "onehot") for the large-magnitude test
    ops_used: tuple[str, ...]
    kinks: tuple[KinkSite, ...]
    edges: tuple[tuple[str, str], ...]
    imports_math: bool = False  # a number computed from dims uses math.sqrt, math.log, ...


# ------------------------------------------------------------------------------------------------
# naming


class Namer:
    def __init__(self, taken: set[str]):
        self.taken = set(taken) | set(keyword.kwlist) | set(RESERVED) | set(dir(builtins)) | {"math"}
        self.kind: dict[str, tuple[str, str]] = {}  # name -> (kind, phase)

    def claim(self, name: str, kind: str, phase: str) -> str:
        self.kind[name] = (kind, phase)
        return name

    def fresh(self, hint: str, kind: str = "temp", phase: str = "fwd") -> str:
        name = hint
        k = 1
        while name in self.taken:
            k += 1
            name = f"{hint}_{k}"
        self.taken.add(name)
        self.kind[name] = (kind, phase)
        return name


# ------------------------------------------------------------------------------------------------
# rule contexts


class _Ctx:
    def __init__(self, planner: _Planner, node: Node):
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
        return isinstance(a, int) and self.p.uses.get(a, 0) == 1 and a != self.graph.output

    def value(self, operand) -> E:
        if isinstance(operand, Const):
            return self.p.const_expr(operand)
        return Var(self.p.var[operand])

    def a(self, i) -> E:
        return self.operand(i)

    def dim(self, d: Dim) -> E:
        return self.p.dim_expr(d)

    def temp(self, hint, expr, shape) -> Var:
        name = self.p.namer.fresh(f"{self.var.name}_{hint}", "temp", "fwd")
        self.p.fwd_temps[(self.node.id, hint)] = name
        self.p.temp_shapes[name] = tuple(shape)
        self.stmts.append(Stmt(name, expr, comment=shape_str(shape)))
        return Var(name)

    def stmt(self, target, expr, op="=", index=None):
        name = target.name if isinstance(target, Var) else target
        self.stmts.append(Stmt(name, expr, op, index, comment=None))


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
            self.p.bwd_temps[key] = self.p.namer.fresh(
                (
                    f"d{self.p.var[self.node.id]}_{hint}"
                    if hint != "dlogits"
                    else f"d{self.p.var[self.node.args[0]]}"
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


# ------------------------------------------------------------------------------------------------
# the planner


# Rules that take a bare number as cotangent and still give float arrays of the right dtype: they only
# multiply or divide it into float arrays, or fill an array of the operand's dtype with it.
NUMBER_SAFE = frozenset(
    {
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "pow",
        "exp",
        "log",
        "sqrt",
        "tanh",
        "sigmoid",
        "log_sigmoid",
        "softplus",
        "square",
        "abs",
        "sum",
        "mean",
        "softmax_cross_entropy",
        "matmul",  # a number reaches only scalar outputs: a dot product, g * b and g * a
    }
)


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

    def emit(self, s: Stmt):
        self.stmts.append(s)
        if s.target and s.op == "=" and s.index is None:
            if s.target in self.defs:  # a redefinition: what was known from the old one may not hold
                self.numbers.clear()
            self.defs[s.target] = s.expr
        elif s.target:
            self.mutated.add(s.target)
            self.numbers.clear()


class _Planner:
    def __init__(self, tg: TypedGraph):
        self.tg = tg
        self.graph = g = tg.graph
        self.types = tg.types
        user_names = {n.name for n in g.nodes if n.name}
        dim_syms = [d for d, _, _ in g.dim_origin]
        self.namer = Namer(user_names)
        self.var: dict[int, str] = {}
        self.dim_var: dict[str, str] = {}
        for d in dim_syms:
            self.dim_var[d] = (
                d if d not in user_names and d not in self.namer.taken else self.namer.fresh(f"{d}_dim")
            )
            self.namer.taken.add(self.dim_var[d])
            self.namer.claim(self.dim_var[d], "param", "fwd")
        self.live = _ancestors(g, g.output)
        self.uses: dict[int, int] = {}
        for n in g.nodes:
            if n.id in self.live:
                for a in n.refs:
                    self.uses[a] = self.uses.get(a, 0) + 1
        self.fwd_temps: dict[tuple[int, str], str] = {}
        self.temp_shapes: dict[str, tuple[Dim, ...]] = {}
        self.bwd_temps: dict[tuple[int, str], str] = {}
        for n in g.nodes:
            if n.id not in self.live and n.op != "input":
                continue
            if n.name:
                self.var[n.id] = self.namer.claim(n.name, "param" if n.op == "input" else "user", "fwd")
            else:  # an inlined block entry is named after its call and entry (h1_mu)
                self.var[n.id] = self.namer.fresh(n.hint or f"{n.entry}_{n.op}", "temp", "fwd")
        wrt = set(g.wrt)
        self.needs_grad = {}
        for n in g.nodes:
            self.needs_grad[n.id] = n.id in wrt or (
                n.op != "input" and any(self.needs_grad.get(a, False) for a in n.refs)
            )
        self.adj_name = {}
        for n in g.nodes:
            if n.id in self.var and self.needs_grad[n.id]:
                kind = "user" if n.name else "temp"
                hint = f"d{self.var[n.id]}"
                if hint in self.namer.taken:  # dout, say, for an entry named out: d_out reads better
                    hint = f"d_{self.var[n.id]}"
                self.adj_name[n.id] = self.namer.fresh(hint, kind, "bwd")
        self.noted: dict[str | None, list[Node]] = {}  # graph entry -> its rewritten live nodes
        for n in g.nodes:
            if n.note is not None and n.id in self.live:
                self.noted.setdefault(n.entry, []).append(n)

    def const_expr(self, a: Const) -> E:
        """A number operand: its literal, or for a number known at run time, its expression over the
        module's dim variables (a Python int or float, so float32 arrays stay float32)."""
        if a.num is not None:
            return self.run_expr(a.num)
        return Lit(a.text if not a.text.startswith("+") else a.text[1:])

    def run_expr(self, n: RunNum) -> E:
        if n.op == "dim":
            return self.dim_expr(n.dim)
        if n.op == "lit":
            return num(n.value)
        if n.op == "neg":
            return Neg(self.run_expr(n.args[0]))
        if n.op in RUN_FUNCS:
            return Call(RUN_FUNCS[n.op], (self.run_expr(n.args[0]),))
        return Bin(n.op, self.run_expr(n.args[0]), self.run_expr(n.args[1]))

    def dim_expr(self, d: Dim) -> E:
        if d.is_const:
            return Lit(str(d.value))
        expr = None
        for m, c in d.terms:
            term = Lit(str(c)) if c != 1 or not m else None
            for s in m:
                v = Var(self.dim_var[s])
                term = v if term is None else Bin("*", term, v)
            expr = term if expr is None else Bin("+", expr, term)
        return expr

    def notes(self, entry: str | None, backward: bool = False) -> list[str]:
        """What gradgen.rewrite changed in a graph entry, once each, printed at the head of its lines."""
        out: list[str] = []
        for n in self.noted.get(entry, ()):
            if n.note not in out and (not backward or self.needs_grad[n.id]):
                out.append(n.note)
        return out

    # -- forward ---------------------------------------------------------------------------------
    def forward(self) -> list[Stmt]:
        stmts: list[Stmt] = []
        entry = call = None
        entries = {e.name: e for e in self.graph.entries}
        for n in self.graph.nodes:
            if n.op == "input" or n.id not in self.live:
                continue
            if n.entry != entry:
                entry = n.entry
                stmts += [Stmt(None, None, comment=note, note=True) for note in self.notes(entry)]
            here = (n.entry, n.origin[0].call_place) if n.origin else None
            if here != call:
                call = here
                if n.origin and n.entry in entries:
                    e, frame = entries[n.entry], n.origin[0]
                    text = f"{e.name} = {e.text}, inlined from block {frame.block}"
                    stmts.append(Stmt(None, None, comment=text, note=True))
            ctx = FwdCtx(self, n, stmts)
            e = TABLE[n.op].forward(ctx)
            if e is not None:
                stmts.append(Stmt(self.var[n.id], e, comment=shape_str(self.types[n.id].shape)))
            else:  # the rule assigned the node's variable itself; label its first line
                for s in stmts:
                    if s.target == self.var[n.id] and s.op == "=" and s.comment is None:
                        s.comment = shape_str(self.types[n.id].shape)
                        break
        return stmts

    # -- backward: the reverse sweep ------------------------------------------------------------
    def sweep(self, root: E, dtype: E) -> tuple[list[Stmt], dict[int, E]]:
        sw = _Sweep(dtype)
        sw.dims = set(self.dim_var.values())
        self.last_sweep = sw
        g = self.graph
        adj: dict[int, E] = {g.output: root}
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
            if _is_number(adj[n.id], sw) and n.op not in NUMBER_SAFE:
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
                cots = self.fold_filled(n, ctx, cots, sw)
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
        if _is_number(s, sw) and n.op not in NUMBER_SAFE:  # (1 / N) * mask would be float64
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


def _ancestors(g, root) -> set[int]:
    seen, stack = set(), [root]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(g.nodes[i].refs)
    return seen


# ------------------------------------------------------------------------------------------------
# the buffer pass: copy propagation, dead code, in-place updates on dead owned buffers


def optimize(
    stmts: list[Stmt], params: set[str], live_out: list[str], kind, shape_of
) -> tuple[list[Stmt], dict[str, str]]:
    """Rewrite a function body; returns it and the renames applied (old -> new internal names).

    Three linear passes: copy propagation (``t = v`` disappears, the better name survives), dead code,
    and in-place updates (an elementwise result overwrites an operand's buffer when that buffer is
    owned by this function and nobody reads it afterwards).  Renames are collected in a union-find map
    and applied once at the end, so the cost stays linear in the number of statements.
    """
    renames: dict[str, str] = {}

    def resolve(n):
        path = []
        while n in renames:
            path.append(n)
            n = renames[n]
        for x in path:
            renames[x] = n
        return n

    def rn(x: Stmt) -> Stmt:
        names = set(x.reads()) | ({x.target} if x.target else set())
        m = {k: resolve(k) for k in names if k in renames}
        return x.rename(m) if m else x

    # 1. copy propagation: drop `t = v`
    uses = _last_uses(stmts, live_out)
    mutated = {s.target for s in stmts if s.target and (s.op != "=" or s.index is not None)}
    for s in stmts:
        if isinstance(s.expr, Call):
            for k, v in s.expr.kwargs:
                if k == "out":
                    mutated.update(v.vars())
    defs = {s.target for s in stmts if s.target and s.op == "=" and s.index is None}
    live_set = set(live_out)
    kept: list[Stmt] = []
    for i, s0 in enumerate(stmts):
        s = rn(s0)
        if s.op == "=" and s.index is None and isinstance(s.expr, Var) and s.target is not None:
            t, v = s.target, s.expr.name
            if (
                kind(v)[0] == "temp"
                and v in defs
                and v not in params
                and uses.get(v, -1) <= i
                and v not in live_set
            ):
                renames[v] = t  # the temp takes the better name
                uses[t] = max(uses.get(t, -1), uses.get(v, -1))
                continue
            if t not in mutated and t not in live_set:
                renames[t] = v
                uses[v] = max(uses.get(v, -1), uses.get(t, -1))
                if t in mutated:
                    mutated.add(v)
                continue
        kept.append(s)
    live_out = [resolve(x) for x in live_out]
    stmts = [rn(x) for x in kept]

    # 2. dead code: one reverse pass
    live = set(live_out)
    rev: list[Stmt] = []
    for s in reversed(stmts):
        if s.target and s.op == "=" and s.index is None and s.target not in live:
            continue
        rev.append(s)
        live.update(s.reads())
    stmts = rev[::-1]

    # 3. in-place on dead owned buffers
    uses = _last_uses(stmts, live_out)
    versions: dict[str, set[str]] = {}  # displayed name -> the internal names shown with it
    for x in stmts:
        for name in x.reads() + ([x.target] if x.target else []):
            versions.setdefault(Var(name).render(), set()).add(name)
    base: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    owned: set[str] = set()
    out: list[Stmt] = []

    def set_base(var, b):
        base[var] = b
        members.setdefault(b, set()).add(var)

    def buf_dead_after(v, i):
        b = base.get(v, v)
        return all(uses.get(u, -1) <= i for u in members.get(b, {v}))

    for i, s0 in enumerate(stmts):
        s = rn(s0)
        if s.target is None or s.op != "=" or s.index is not None:
            out.append(s)
            continue
        t, e = s.target, s.expr
        done = False
        for v, pos in _inplace_candidates(e):
            if v not in owned or v in params or base.get(v, v) != v or not buf_dead_after(v, i):
                continue
            st, sv = shape_of(t), shape_of(v)
            if st is None or st != sv or len(st) == 0:
                continue
            kv, kt = kind(v), kind(t)
            show_t = Var(t).render()
            other_reads = {Var(x).render() for x in e.vars() if x != v}
            if show_t == Var(v).render():
                mode = "rename"  # the next version of one accumulating cotangent
            elif kv[0] == "temp" and kv[1] == kt[1] and len(versions.get(show_t, ())) == 1:
                mode = "rename"  # an anonymous temporary takes the name of what it becomes
            elif isinstance(e, Bin) and (pos == 0 or e.op in ("+", "*")) and show_t not in other_reads:
                mode = "alias"  # t = v, then t op= other
            else:
                mode = "out"  # t = np.ufunc(..., out=v)
            new = _rewrite(e, v, pos, t if mode == "rename" else v)
            if new is None:
                continue
            if mode == "rename":
                renames[v] = t  # v's buffer carries t's name from its definition on
                uses[t] = max(uses.get(t, -1), uses.get(v, -1))
                if new[2] != "noop":  # (a copy of a dead buffer needs no statement at all)
                    out.append(Stmt(*new, comment=s.comment))
            elif mode == "alias":
                out.append(Stmt(t, Var(v), comment=s.comment))
                out.append(Stmt(*_rename_new(new, v, t), comment=s.comment))
            else:
                target, expr, _ = new
                if target is not None:  # an augmented form: spell it as the ufunc with out=
                    expr = Call(UFUNC_OF[e.op], (e.a, e.b), (("out", Var(v)),))
                out.append(Stmt(t, expr, comment=s.comment))
            owned.discard(v)
            owned.add(t)
            set_base(t, t)
            done = True
            break
        if done:
            continue
        if e.fresh and not isinstance(e, Lit):
            owned.add(t)
            set_base(t, t)
        elif e.view_of is not None:
            set_base(t, base.get(e.view_of, e.view_of))
        out.append(s)
    out = [rn(x) for x in out]
    return out, {k: resolve(k) for k in list(renames)}


def _rename_new(new, v, t):
    target, expr, op = new
    if op != "=":
        return (t, expr, op)
    return (target, expr.rename({v: t}), op)


def _inplace_candidates(e: E) -> list[tuple[str, int]]:
    if isinstance(e, Bin) and e.op in AUG_OPS:
        out = []
        if isinstance(e.a, Var):
            out.append((e.a.name, 0))
        if isinstance(e.b, Var):
            out.append((e.b.name, 1))
        return out
    if isinstance(e, Neg) and isinstance(e.a, Var):
        return [(e.a.name, 0)]
    if isinstance(e, Call) and e.is_ufunc:
        return [(a.name, k) for k, a in enumerate(e.args) if isinstance(a, Var)]
    if isinstance(e, Method) and e.name == "copy" and isinstance(e.obj, Var) and not e.args:
        return [(e.obj.name, 0)]
    return []


def _rewrite(e: E, v: str, pos: int, name: str):
    """(target, expr, op) computing e into v's buffer, the buffer then called ``name``."""
    m = {v: name}
    if isinstance(e, Method):  # a copy of a dead buffer is the buffer itself
        return (name, Var(name), "noop") if name != v else None
    if isinstance(e, Bin):
        a, b = e.a.rename(m), e.b.rename(m)
        if pos == 0:
            return (name, b, e.op + "=")
        if e.op in ("+", "*"):
            return (name, a, e.op + "=")
        return (None, Call(UFUNC_OF[e.op], (a, b), (("out", Var(name)),)), "=")
    if isinstance(e, Neg):
        return (None, Call("np.negative", (Var(name),), (("out", Var(name)),)), "=")
    if isinstance(e, Call):
        return (None, Call(e.func, tuple(a.rename(m) for a in e.args), e.kwargs + (("out", Var(name)),)), "=")
    return None


def _last_uses(stmts: list[Stmt], live_out: list[str]) -> dict[str, int]:
    uses: dict[str, int] = {}
    for i, s in enumerate(stmts):
        for v in s.reads():
            uses[v] = i
    for v in live_out:
        uses[v] = len(stmts)
    return uses


# ------------------------------------------------------------------------------------------------
# putting it together


def _lines(stmts: list[Stmt], shape_of=None) -> tuple[Line, ...]:
    """Rendered lines; with ``shape_of``, a forward line without a comment gets its value's shape."""
    out = []
    for s in stmts:
        comment = s.comment
        if comment is None and shape_of is not None and s.expr is not None:
            name = s.target
            if name is None and isinstance(s.expr, Call):
                name = next((v.name for k, v in s.expr.kwargs if k == "out" and isinstance(v, Var)), None)
            shape = shape_of(name) if name else None
            comment = shape_str(shape) if shape is not None else None
        out.append(Line(s.render(), comment))
    return tuple(out)


def plan(tg: TypedGraph) -> Plan:
    p = _Planner(tg)
    g = p.graph
    out_node = g.output
    out_var = p.var[out_node]
    out_type = tg.types[out_node]
    inputs = [i.name for i in g.inputs]
    wrt_nodes = list(g.wrt)
    dims_all = list(p.dim_var.values())

    def kind(name):
        base_name = name.split("#")[0]
        return p.namer.kind.get(name) or p.namer.kind.get(base_name) or ("temp", "fwd")

    shapes: dict[str, tuple] = {}
    for nid, v in p.var.items():
        shapes[v] = tg.types[nid].shape
    for nid, v in p.adj_name.items():
        shapes[v] = tg.types[nid].shape

    def shape_of(name):
        base_name = name.split("#")[0]
        for key in (name, base_name):
            if key in shapes:
                return shapes[key]
            if key in p.temp_shapes:
                return p.temp_shapes[key]
        return None

    fwd = p.forward()

    def grad_exprs(adj, dtype, sw):
        res = []
        for nid in wrt_nodes:
            name = g.nodes[nid].name
            if nid in adj and _is_number(adj[nid], sw):
                # the cotangent 1 passed through scalar arithmetic: an array of the input's shape and dtype
                shape = Tuple(tuple(p.dim_expr(d) for d in tg.types[nid].shape))
                res.append((name, Call("np.full", (shape, adj[nid]), (("dtype", dtype),))))
            elif nid in adj:
                res.append((name, adj[nid]))
            else:
                zeros_shape = Tuple(tuple(p.dim_expr(d) for d in tg.types[nid].shape))
                res.append((name, Call("np.zeros", (zeros_shape,), (("dtype", dtype),))))
        return res

    # split backward: dout is the cotangent of the output
    dtype_split = Var("dtype")
    b_stmts, b_adj = p.sweep(Var("dout"), dtype_split)
    b_grads = grad_exprs(b_adj, dtype_split, p.last_sweep)
    grad_vars = [v for _, e in b_grads for v in e.vars()]
    params_b = set(p.var.values()) | set(dims_all) | {"dout", "dtype"}
    b_opt, b_ren = optimize(b_stmts, params_b, grad_vars, kind, shape_of)
    b_grads = [(n, e.rename(_closure(b_ren))) for n, e in b_grads]
    defined_b = {s.target for s in b_opt if s.target}
    free = []
    for s in b_opt:
        for v in s.reads():
            if v not in defined_b and v not in free and v not in ("dout", "dtype"):
                free.append(v)
    for _, e in b_grads:
        for v in e.vars():
            if v not in defined_b and v not in free and v not in ("dout", "dtype"):
                free.append(v)
    # backward checks dout against the output's shape, so it reads the output's dims too
    for d in out_type.shape:
        for sym in d.symbols:
            if p.dim_var[sym] not in free:
                free.append(p.dim_var[sym])
    # cache: forward values (in forward order), then dims
    order = {v: i for i, v in enumerate(list(p.var.values()) + [s.target for s in fwd if s.target])}
    cache_vals = sorted([v for v in free if v not in dims_all], key=lambda v: order.get(v, 10**6))
    cache_dims = [d for d in dims_all if d in free]

    f_opt, f_ren = optimize(fwd, set(inputs) | set(dims_all), [out_var] + cache_vals, kind, shape_of)
    fr = _closure(f_ren)
    fwd_out = fr.get(out_var, out_var)
    cache_exprs = [fr.get(v, v) for v in cache_vals]
    fwd_value = _returned_output(fwd_out, f_opt, set(inputs), cache_exprs)

    # fused value_and_grad: forward then backward with a cotangent of 1
    fused_lines: tuple[Line, ...] = ()
    fused_grads: list = []
    fused_out = out_var
    fused_value: E = Var(out_var)
    if out_type.shape == ():
        dtype_fused = Attr(Var(out_var), "dtype")
        u_stmts, u_adj = p.sweep(Lit("1"), dtype_fused)
        u_grads = grad_exprs(u_adj, dtype_fused, p.last_sweep)
        body = fwd + u_stmts
        gv = [v for _, e in u_grads for v in e.vars()]
        u_opt, u_ren = optimize(body, set(inputs) | set(dims_all), [out_var] + gv, kind, shape_of)
        ur = _closure(u_ren)
        fused_out = ur.get(out_var, out_var)
        fused_grads = [(n, e.rename(ur)) for n, e in u_grads]
        fused_lines = _lines(_drop_empty_notes(u_opt[: _forward_length(u_opt)]), shape_of) + _lines(
            u_opt[_forward_length(u_opt) :]
        )
        # the value is returned like a gradient: never the caller's array, never a gradient's buffer
        owned = _own_returns([(None, Var(fused_out))] + fused_grads, u_opt, set(inputs))
        fused_value, fused_grads = owned[0][1], owned[1:]
    b_grads = _own_returns(b_grads, b_opt, params_b)

    # dims: runtime checks in forward
    checks = []
    for info in g.inputs:
        ds = []
        products = []
        for ax, d in enumerate(info.shape):
            sym = single_symbol(d)
            if d.is_const:
                ds.append((ax, str(d.value), None))
            elif sym is not None:
                ds.append((ax, sym, p.dim_var[sym]))
            else:
                ds.append((ax, str(d), None))
                factors = tuple((s, p.dim_var[s]) for s in d.symbols)
                products.append((ax, str(d), p.dim_expr(d).render(), factors))
        checks.append(DimCheck(info.name, len(info.shape), tuple(ds), tuple(products)))

    domain = domains(tg)
    test_inputs = tuple((i.name, tuple(str(d) for d in i.shape), i.dtype, domain[i.name]) for i in g.inputs)
    wrt_names = tuple(g.nodes[n].name for n in wrt_nodes)
    return Plan(
        name=g.name,
        description=g.description,
        source_path=g.path,
        inputs=tuple((i.name, shape_str(i.shape), i.dtype) for i in g.inputs),
        output=g.nodes[out_node].label,
        output_shape=shape_str(out_type.shape),
        scalar_output=out_type.shape == (),
        wrt=tuple(g.nodes[n].name for n in wrt_nodes),
        dims=tuple(p.dim_var.items()),
        dim_checks=tuple(checks),
        forward=_lines(_drop_empty_notes(f_opt), shape_of),
        forward_out=fwd_value.render(),
        cache_fields=tuple(Var(v).render() for v in cache_vals) + tuple(cache_dims) + ("dtype",),
        cache_values=tuple(Var(v).render() for v in cache_exprs) + tuple(cache_dims),
        backward=_lines(b_opt),
        fused=fused_lines,
        grads=tuple((n, e.render()) for n, e in b_grads),
        fused_grads=tuple((n, e.render()) for n, e in fused_grads),
        fused_out=fused_value.render(),
        test_inputs=test_inputs,
        dim_symbols=tuple(p.dim_var),
        index_checks=tuple(_range_check(p, c) for c in runtime.index_checks(tg, p.live)),
        nonempty_checks=tuple(
            (p.dim_expr(c.dim).render(), f"{c.dim} is 0, but {c.reason}")
            for c in runtime.nonempty_checks(tg, p.live)
        ),
        output_dtype=f"{Var(fwd_out).render()}.dtype",
        dout_shape=Tuple(tuple(p.dim_expr(d) for d in out_type.shape)).render(),
        imports_math=any(
            isinstance(a, Const) and a.num is not None and a.num.functions
            for n in g.nodes
            if n.id in p.live
            for a in n.args
        ),
        ops_used=ops_used(g),
        kinks=kinks(tg, wrt_names, domain),
        edges=edges(tg, domain),
    )


def _forward_length(stmts: list[Stmt]) -> int:
    """Where value_and_grad's backward part starts: at its first section comment."""
    for i, s in enumerate(stmts):
        if s.expr is None and not s.note:
            return i
    return len(stmts)


def _section(e, origin) -> str:
    """The comment that opens a backward section: the entry; for an inlined block, the chain of calls
    (entry: block) and the block's entry with its line (h1: layer -> up: layernorm -> mu = ...)."""
    if not origin:
        return f"{e.name} = {e.text}"
    callers = [e.name] + [frame.entry for frame in origin[:-1]]
    chain = " -> ".join(f"{c}: {frame.block}" for c, frame in zip(callers, origin))
    last = origin[-1]
    return f"{chain} -> {last.entry} = {last.source} (block {last.block}, line {last.place.line})"


def _drop_empty_notes(stmts: list[Stmt]) -> list[Stmt]:
    """Forward comment lines whose statements were all optimized away say nothing: drop them.  Notes
    may stand in a row (a rewrite's note above a block call's); each one heads the code after the row."""
    out = []
    for i, s in enumerate(stmts):
        if s.note:
            after = next((x for x in stmts[i + 1 :] if not x.note), None)
            if after is None or after.expr is None:
                continue
        out.append(s)
    return out


def _closure(renames: dict[str, str]) -> dict[str, str]:
    out = {}
    for k in renames:
        v = k
        seen = set()
        while v in renames and v not in seen:
            seen.add(v)
            v = renames[v]
        out[k] = v
    return out


def _own_returns(grads, stmts, params):
    """Returned gradients must be writable arrays that no caller-visible value shares.

    A gradient that is (a view of) an input, a cache value or dout, or a read-only broadcast view, is
    copied; so is one whose buffer another returned gradient also holds whole (disjoint slices of one
    buffer, as concatenate's split gives, are fine).
    """
    defs = {}
    for s in stmts:
        if s.target and s.op == "=" and s.index is None:
            defs[s.target] = s.expr

    def trace(name):
        """(base buffer, owned, sliced): follow aliases and views back to the array they share."""
        sliced = False
        for _ in range(len(defs) + 1):
            e = defs.get(name)
            if e is None:
                return name, name not in params, sliced
            if e.fresh and not isinstance(e, Lit):
                return name, True, sliced
            if isinstance(e, Call) and e.func == "np.broadcast_to":
                return name, False, sliced
            if isinstance(e, Index):
                sliced = True
            src = e.view_of
            if src is None:
                return name, False, sliced
            name = src
        return name, False, sliced

    traced = [trace(e.name) if isinstance(e, Var) else None for _, e in grads]
    out = []
    for k, (n, e) in enumerate(grads):
        if traced[k] is not None:
            b, owned, sliced = traced[k]
            shared = any(
                t is not None and t[0] == b and not (sliced and t[2]) for j, t in enumerate(traced[:k])
            )
            if not owned or shared:
                e = Method(e, "copy")
        out.append((n, e))
    return out


def _buffer_base(name: str, defs: dict[str, E]) -> str:
    """The variable whose array ``name`` is, or is a view of: follows aliases (``t = v``), views
    (``.T``, ``.reshape``, basic slices) and ufuncs that wrote into an operand (``out=v``)."""
    for _ in range(len(defs) + 1):
        e = defs.get(name)
        if e is None:
            return name  # an input, or a buffer this function made
        out = dict(e.kwargs).get("out") if isinstance(e, Call) else None
        src = out.view_of if out is not None else e.view_of
        if src is None:
            return name
        name = src
    return name


def _returned_output(out: str, stmts: list[Stmt], params: set[str], cached: list[str]) -> E:
    """The expression ``forward`` returns for its output: the output itself, or a copy when its array
    is the caller's (an input or a view of one: ``output: x``, ``x.T``, ``x * 1``) or is shared with a
    value the cache keeps (``z: exp(x)``, whose rule reads z back), so that a caller writing into the
    returned array cannot change what a later ``backward`` computes."""
    defs = {s.target: s.expr for s in stmts if s.target and s.op == "=" and s.index is None}
    base = _buffer_base(out, defs)
    if base in params or base in {_buffer_base(c, defs) for c in cached}:
        return Method(Var(out), "copy")
    return Var(out)


def _range_check(p: _Planner, c: runtime.IndexCheck) -> RangeCheck:
    return RangeCheck(c.input, c.rank, p.dim_expr(c.size).render(), str(c.size), c.role)
