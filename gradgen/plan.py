"""Stage 4, plan: the assembly of the module's functions.

``plan`` returns a ``Plan``: statement lists (with expressions already rendered to text) for
``forward``, ``backward`` and the fused ``value_and_grad``, the cache, the runtime dim checks, the test
inputs, and the functions of the spec's ``derivatives:`` (``gradgen/functions.py``), plus the names
the templates need.  The concerns live in their own modules: the forward emission's contexts
(``gradgen/context.py``), the reverse sweep of ``backward`` (``gradgen/reverse.py``), the buffer pass
(``gradgen/buffers.py``), and the derivative layer (``gradgen/derive.py``, ``gradgen/emit.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen import runtime, special
from gradgen.buffers import Line, Stmt, _closure, _lines, _own_returns, optimize
from gradgen.context import FwdCtx, Namer, declared_view, dim_expr
from gradgen.dims import Dim, shape_str, single_symbol
from gradgen.expr import Attr, Bin, Call, E, Lit, Method, Neg, Tuple, Var, num
from gradgen.ir import Const, Domain, Node, TypedGraph, ancestors
from gradgen.numbers import RUN_FUNCS, RunNum
from gradgen.ops import ROWS, TABLE
from gradgen.testplan import KinkSite, constant_inputs, domains, edges, kinks, ops_used


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
    constant: tuple[str, ...]  # the wrt inputs whose gradient is 0 everywhere (testplan.constant_inputs)
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
    test_inputs: tuple[tuple[str, tuple, str, Domain], ...]  # (name, shape (symbolic text), dtype, domain)
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
    helpers: str = ""  # module-level functions the ops' code calls (gradgen/special.py), as source
    order_checks: tuple[tuple[str, str, str], ...] = ()  # (lo, hi, message): raised when lo > hi
    order_dims: tuple[tuple[Dim, Dim], ...] = ()  # the same (lo, hi) as dims: the tests' sizes obey them
    derivatives: object = None  # functions.Derivatives: jvp, hvp, jacobian, hessian (None: vjp only)
    # sizes that windows and ddofs need: (dim expression, least size, message up to the size, message after it)
    minimum_checks: tuple[tuple[str, int, str, str], ...] = ()
    window_dims: tuple[tuple[Dim, Dim], ...] = ()  # (least size, dim): as order_dims, for the tests


# ------------------------------------------------------------------------------------------------
# naming


# ------------------------------------------------------------------------------------------------
# rule contexts


# ------------------------------------------------------------------------------------------------
# the planner


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
        self.live = ancestors(g.nodes, g.output)
        self.uses: dict[int, int] = {}
        for n in g.nodes:
            if n.id in self.live:
                for a in n.refs:
                    self.uses[a] = self.uses.get(a, 0) + 1
        self.fwd_temps: dict[tuple[int, str], str] = {}
        self.temp_shapes: dict[str, tuple[Dim, ...]] = {}
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
                n.op != "input"
                and tg.types[n.id].dtype == "float"  # an int result (argmax) is never differentiated
                and any(self.needs_grad.get(a, False) for a in n.refs)
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

    def is_output(self, nid: int) -> bool:
        return nid == self.graph.output

    def dtype_expr(self) -> E:
        """The computation's dtype, read off the first float input (where(mask, 1.0, 0.0) needs it)."""
        first = next(i for i in self.graph.inputs if i.dtype == "float")
        return Attr(Var(self.var[first.node]), "dtype")

    def dim_expr(self, d: Dim) -> E:
        return dim_expr(d, self.dim_var)

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
                stmts.append(
                    Stmt(
                        self.var[n.id],
                        e,
                        comment=shape_str(self.types[n.id].shape),
                        view_of=declared_view(n, self.var),
                    )
                )
            else:  # the rule assigned the node's variable itself; label its first line
                for s in stmts:
                    if s.target == self.var[n.id] and s.op == "=" and s.comment is None:
                        s.comment = shape_str(self.types[n.id].shape)
                        break
        return stmts


# ------------------------------------------------------------------------------------------------
# the buffer pass: copy propagation, dead code, in-place updates on dead owned buffers


# ------------------------------------------------------------------------------------------------
# putting it together


def plan(tg: TypedGraph) -> Plan:
    p = _Planner(tg)
    g = p.graph
    out_node = g.output
    out_var = p.var[out_node]
    out_type = tg.types[out_node]
    inputs = [i.name for i in g.inputs]
    wrt_nodes = list(g.wrt)
    dims_all = list(p.dim_var.values())

    from gradgen import reverse  # (emit.py imports this module)

    sweeps: list[reverse.Sweep] = []  # the derived values' names and shapes

    def kind(name):
        base_name = name.split("#")[0]
        for sw in sweeps:
            if sw.kind(name):
                return sw.kind(name)
        return p.namer.kind.get(name) or p.namer.kind.get(base_name) or ("temp", "fwd")

    def stem_in(sweep):
        """The names asked for, in one body: the forward's, and its sweep's (each sweep names its own)."""
        return lambda name: (sweep.stem(name) if sweep is not None else None) or p.namer.stem(name)

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
        for sw in sweeps:
            if sw.shape_of(name) is not None:
                return sw.shape_of(name)
        return None

    fwd = p.forward()

    # split backward: dout is the cotangent of the output
    dtype_split = Var("dtype")
    b_sweep = reverse.sweep(tg, p, dtype_split, "dout")
    sweeps.append(b_sweep)
    b_stmts, b_grads = b_sweep.stmts, b_sweep.grads
    grad_vars = [v for _, e in b_grads for v in e.vars()]
    params_b = set(p.var.values()) | set(dims_all) | {"dout", "dtype"}
    b_opt, b_ren = optimize(b_stmts, params_b, grad_vars, kind, shape_of, stem=stem_in(b_sweep))
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

    f_opt, f_ren = optimize(
        fwd, set(inputs) | set(dims_all), [out_var] + cache_vals, kind, shape_of, stem=stem_in(None)
    )
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
        u_sweep = reverse.sweep(tg, p, dtype_fused, None)
        sweeps.append(u_sweep)
        u_stmts, u_grads = u_sweep.stmts, u_sweep.grads
        body = fwd + u_stmts
        gv = [v for _, e in u_grads for v in e.vars()]
        u_opt, u_ren = optimize(
            body, set(inputs) | set(dims_all), [out_var] + gv, kind, shape_of, stem=stem_in(u_sweep)
        )
        ur = _closure(u_ren)
        fused_out = ur.get(out_var, out_var)
        fused_grads = [(n, e.rename(ur)) for n, e in u_grads]
        fused_lines = _lines(_drop_empty_notes(u_opt[: _forward_length(u_opt)]), shape_of) + _lines(
            _drop_empty_sections(u_opt[_forward_length(u_opt) :])
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
    derivs = None
    if g.derivatives:
        from gradgen.functions import derivatives

        derivs = derivatives(tg, p.dim_var, {n.name for n in g.nodes if n.name})
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
        backward=_lines(_drop_empty_sections(b_opt)),
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
        order_checks=tuple(
            (p.dim_expr(c.lo).render(), p.dim_expr(c.hi).render(), runtime.order_message(c))
            for c in runtime.order_checks(tg, p.live)
        ),
        order_dims=tuple((c.lo, c.hi) for c in runtime.order_checks(tg, p.live)),
        minimum_checks=tuple(
            (p.dim_expr(c.dim).render(), c.minimum, f"{c.dim} is ", f", but {c.reason}")
            for c in runtime.minimum_checks(tg, p.live)
        ),
        window_dims=tuple((Dim.const(c.minimum), c.dim) for c in runtime.minimum_checks(tg, p.live)),
        output_dtype=f"{Var(fwd_out).render()}.dtype",
        dout_shape=Tuple(tuple(p.dim_expr(d) for d in out_type.shape)).render(),
        imports_math=any(
            isinstance(a, Const) and a.num is not None and a.num.functions
            for n in g.nodes
            if n.id in p.live
            for a in n.args
        ),
        helpers=special.source(h for n in g.nodes if n.op in ROWS for h in _helpers(n)),
        ops_used=ops_used(g),
        constant=constant_inputs(tg),
        kinks=kinks(tg, wrt_names, domain),
        edges=edges(tg, domain),
        derivatives=derivs,
    )


def _helpers(n: Node) -> tuple[str, ...]:
    """The module-level functions node n's code calls (gradgen/special.py), by its op row."""
    helpers = ROWS[n.op].helpers
    return helpers(n.attr) if callable(helpers) else helpers


def _forward_length(stmts: list[Stmt]) -> int:
    """Where value_and_grad's backward part starts: at its first section comment."""
    for i, s in enumerate(stmts):
        if s.expr is None and not s.note:
            return i
    return len(stmts)


def _drop_empty_sections(stmts: list[Stmt]) -> list[Stmt]:
    """A backward section comment (with its notes) whose statements were all inlined or removed says
    nothing: drop it."""
    out: list[Stmt] = []
    for i, s in enumerate(stmts):
        if s.expr is None:
            after = next((x for x in stmts[i + 1 :] if x.expr is not None or not x.note), None)
            if after is None or (after.expr is None and not after.note):
                continue
        out.append(s)
    return out


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
