"""Emission of a derivative program (``builder.Program``) as the statements of one generated function.

Every node is written by its op's own ``forward`` emission (``plan.FwdCtx``), exactly as the spec's
``forward`` is, so a derivative program needs no emitter of its own.  What this module adds:

- names: the spec's values keep theirs, a tangent is ``<value>_dot``, a cotangent ``d<value>``;
- an order: each derived value right after the values it needs (forward mode interleaves with the
  forward pass; the reverse sweep follows it), with a comment naming each graph entry;
- inlining of cheap single-use values into the line that reads them (masks, scalars, views, values
  smaller than the result), so lines read like a hand-written pass;
- then the buffer pass of ``gradgen/buffers.py`` (copy propagation, dead code, in-place updates on
  buffers the function owns).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from gradgen.buffers import Line, Stmt, _lines, _own_returns, optimize
from gradgen.builder import Program, is_intermediate
from gradgen.context import FwdCtx, Namer, _section, declared_view, dim_expr
from gradgen.dims import Dim, shape_str
from gradgen.expr import CMP_OPS, WRITES_FIRST, Attr, Bin, Call, E, Index, Lit, Method, Neg, Var
from gradgen.ir import Node, ancestors
from gradgen.ops import ROWS
from gradgen.plan import _Planner


@dataclass(frozen=True)
class Emitted:
    """One function body: its lines, and the expressions it returns (one per program output)."""

    lines: tuple[Line, ...]
    returns: tuple[str, ...]
    params: tuple[str, ...]  # the program's extra arguments (tangents), as named in the body
    uses_dtype: bool


class Emitter:
    """Plays the planner's part for ``FwdCtx``: names, uses, temporaries and dims of one program."""

    def __init__(self, prog: Program, dim_var: dict[str, str], taken: set[str]):
        self.prog = prog
        self.graph = prog.tg.graph
        self.types = prog.types
        self.dim_var = dim_var
        self.namer = Namer(taken | set(dim_var.values()))
        self.outputs = set(prog.outputs)
        self.live = ancestors(prog.nodes, prog.outputs)
        self.uses: dict[int, int] = {}
        for n in prog.nodes:
            if n.id in self.live:
                for a in n.refs:
                    self.uses[a] = self.uses.get(a, 0) + 1
        self.fwd_temps: dict[tuple[int, str], str] = {}
        self.temp_shapes: dict[str, tuple[Dim, ...]] = {}
        self.used_dtype = False
        self.shares_temps = True  # an op's emission may read another's saved temporaries
        self.var: dict[int, str] = {}
        self._name_nodes()
        # a mask (bool) has no shape for the buffer pass: a float result never goes into its buffer
        self.shapes = {
            v: self.types[nid].shape for nid, v in self.var.items() if self.types[nid].dtype != "bool"
        }

    # -- what FwdCtx asks of its planner -------------------------------------------------------------
    def is_output(self, nid: int) -> bool:
        return nid in self.outputs

    def dim_expr(self, d: Dim) -> E:
        return dim_expr(d, self.dim_var)

    def dtype_expr(self) -> E:
        self.used_dtype = True
        return Var("dtype")

    # numbers known at run time (sizes, dims used as numbers) render as the planner renders them
    const_expr = _Planner.const_expr
    run_expr = _Planner.run_expr

    # -- names --------------------------------------------------------------------------------------
    def _stem(self, nid: int) -> str:
        """A node's own name, as the planner gives it: its spec name, or its entry and op."""
        if nid in self.var:
            return self.var[nid]
        n = self.prog.nodes[nid]
        hint = self.prog.hints[nid]
        if hint is not None and hint.base != nid:
            return hint.prefix + self._stem(hint.base) + hint.suffix
        return n.name or n.hint or f"{n.entry}_{n.op}"

    def _name_nodes(self) -> None:
        prog = self.prog
        for k, nid in enumerate(prog.params):
            name = prog.nodes[nid].name
            if k < prog.n_spec:
                self.var[nid] = self.namer.claim(name, "param", "fwd")
                self.namer.taken.add(name)
            else:  # a tangent or a vector v: a fresh name
                self.var[nid] = self.namer.fresh(name, "param", "fwd")
        derived_names: set[str] = set()
        for n in prog.nodes:
            if n.id not in self.live or n.id in self.var:
                continue
            if prog.rules[n.id] is None and n.name and n.op != "input":
                self.var[n.id] = self.namer.claim(n.name, "user", "fwd")
                self.namer.taken.add(n.name)
            elif prog.rules[n.id] is None:
                self.var[n.id] = self.namer.fresh(self._stem(n.id), "temp", "fwd")
            else:  # named after a spec value: a user name, as the planner's cotangents are
                hint = prog.hints[n.id]
                final = (
                    hint is not None and not is_intermediate(hint) and prog.nodes[hint.base].name is not None
                )
                stem = self._stem(n.id)
                clash = stem in self.namer.taken and stem not in derived_names
                if clash and hint is not None and hint.prefix.startswith("d"):
                    stem = "d_" + stem[1:]  # dout, say, for the cotangent of out: d_out reads better
                self.var[n.id] = self.namer.fresh(stem, "user" if final else "temp", "bwd")
                derived_names.add(stem)
        self._version_sums()

    def _version_sums(self) -> None:
        """A cotangent summed over uses (notes section 3) keeps one name: ``dh = dh + c`` is the next
        version of ``dh`` (written ``dh#2`` inside, ``dh`` in the code), when the previous version is
        read by that sum alone."""
        prog = self.prog
        for n in prog.nodes:
            if n.id not in self.live or prog.rules[n.id] is None or n.op not in ("add", "sub"):
                continue
            prev = n.args[0]
            hint, old = prog.hints[n.id], prog.hints[prev] if isinstance(prev, int) else None
            if (
                hint is None
                or old is None
                or not hint.final
                or (hint.base, hint.prefix, hint.suffix)
                != (
                    old.base,
                    old.prefix,
                    old.suffix,
                )
            ):
                continue
            if self.uses.get(prev, 0) != 1 or prev in self.outputs or prev in prog.params:
                continue
            base = self.var[prev].split("#")[0]
            k = int(self.var[prev].split("#")[1]) + 1 if "#" in self.var[prev] else 2
            self.namer.taken.discard(self.var[n.id])
            self.var[n.id] = f"{base}#{k}"
            self.namer.kind[self.var[n.id]] = self.namer.kind.get(base, ("user", "bwd"))

    # -- statements ---------------------------------------------------------------------------------
    def order(self) -> list[int]:
        """The spec's values in their order; each derived value that carries a tangent, a cotangent or a
        basis as soon as what it reads is computed; a derived value of the spec's values alone (a
        factor like 1 - h * h, a mask, zeros) just before its first reader, so that it is not kept alive
        through the rest of the forward pass."""
        prog = self.prog
        spec_inputs = set(prog.params[: prog.n_spec])
        carries: dict[int, bool] = {}
        for n in prog.nodes:  # (operands come before their nodes)
            if n.op == "input":
                carries[n.id] = n.id not in spec_inputs
            else:
                hint = prog.hints[n.id]
                named = hint is not None and prog.rules[n.id] is not None and hint.final
                derivative = named and (hint.prefix.startswith("d") or "_dot" in hint.suffix)
                carries[n.id] = n.op == "basis" or derivative or any(carries[a] for a in n.refs)
        primal = [
            n.id for n in prog.nodes if n.id in self.live and prog.rules[n.id] is None and n.op != "input"
        ]
        # a spec value's slot is the end of its graph entry: derived values follow whole entries
        last = {prog.nodes[nid].entry: k for k, nid in enumerate(primal)}
        slot = {nid: last[prog.nodes[nid].entry] for nid in primal}
        derived = [n for n in prog.nodes if n.id in self.live and prog.rules[n.id] is not None]
        for n in derived:
            # after what it reads and after the spec value whose rule made it (a tangent after its value)
            anchor = prog.anchors[n.id]
            while anchor is not None and prog.anchors[anchor] is not None:
                anchor = prog.anchors[anchor]
            reads = [slot.get(a) for a in n.refs] + [slot.get(anchor) if anchor is not None else None]
            early = n.refs and carries[n.id]
            slot[n.id] = max((k for k in reads if k is not None), default=-1) if early else None
        out, done = [], set(prog.params)

        def emit(nid):
            if nid in done:
                return
            for a in prog.nodes[nid].refs:
                emit(a)
            done.add(nid)
            out.append(nid)

        by_slot: dict[int, list[int]] = {}
        for n in derived:
            if slot[n.id] is not None:
                by_slot.setdefault(slot[n.id], []).append(n.id)
        for nid in by_slot.get(-1, []):
            emit(nid)
        for k, nid in enumerate(primal):
            emit(nid)
            for d in by_slot.get(k, []):
                emit(d)
        for nid in prog.outputs:
            emit(nid)
        return [nid for nid in out if prog.nodes[nid].op != "input"]

    def statements(self) -> list[Stmt]:
        prog = self.prog
        entries = {e.name: e for e in self.graph.entries}
        stmts: list[Stmt] = []
        header = None
        for nid in self.order():
            n = prog.nodes[nid]
            if n.entry is not None and (n.entry, n.origin) != header and n.entry in entries:
                header = (n.entry, n.origin)
                stmts.append(Stmt(None, None, comment=_section(entries[n.entry], n.origin)))
            stmts.extend(self._node(n))
        return stmts

    def _node(self, n: Node) -> list[Stmt]:
        out: list[Stmt] = []
        ctx = FwdCtx(self, n, out)
        e = ROWS[n.op].forward(ctx)
        rule = self.prog.rules[n.id]
        comment = rule if rule is not None else shape_str(self.types[n.id].shape)
        if isinstance(e, Var) and not out and e.name in self.temp_shapes:
            self.var[n.id] = e.name  # a temporary that another op's line saved: the node is that value
            return out
        if e is not None:
            out.append(Stmt(self.var[n.id], e, comment=comment, view_of=declared_view(n, self.var)))
        for s in out:
            if rule is not None:
                s.comment = rule
        return out

    def emit(self) -> Emitted:
        stmts = self.statements()
        returns = [self.var[o] for o in self.prog.outputs]
        params = {self.var[p] for p in self.prog.params} | set(self.dim_var.values())
        stmts = inline(fold_scales(stmts, returns, self.shape_of), returns, params, self.shape_of)
        body, renames = optimize(
            stmts, params, returns, self.kind, self.shape_of, keep_read_names=True, stem=self.namer.stem
        )
        ren = _closure(renames)
        body = fold_into_updates(body, [ren.get(r, r) for r in returns])
        ret = _own_returns([(k, Var(ren.get(r, r))) for k, r in enumerate(returns)], body, params)
        extra = tuple(Var(self.var[p]).render() for p in self.prog.params[self.prog.n_spec :])
        return Emitted(_lines(body, self.shape_of), tuple(e.render() for _, e in ret), extra, self.used_dtype)

    def kind(self, name: str):
        return self.namer.kind.get(name) or self.namer.kind.get(name.split("#")[0]) or ("temp", "fwd")

    def shape_of(self, name: str):
        if name in self.shapes:
            return self.shapes[name]
        return self.temp_shapes.get(name)


def _closure(renames: dict[str, str]) -> dict[str, str]:
    out = {}
    for k in renames:
        v, seen = k, set()
        while v in renames and v not in seen:
            seen.add(v)
            v = renames[v]
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------------
# inlining


INLINE_TEXT = 200  # the most text one inlined line may hold


def inline(stmts: list[Stmt], live_out: list[str], params: set[str], shape_of) -> list[Stmt]:
    """Write a cheap value that one later line reads straight into that line: a mask (``h > 0``), a
    scalar, a view (``W.T``), or a value smaller than the line's result (a row of sums).  A value of the
    result's own size stays a statement of its own, where the buffer pass can update it in place."""
    reads: dict[str, list[int]] = {}
    for i, s in enumerate(stmts):
        for v in s.reads():
            reads.setdefault(v, []).append(i)
    writes = _writes(stmts)
    out: list[Stmt | None] = list(stmts)
    keep_out = set(live_out) | params
    summed = _summed(stmts, reads, writes, keep_out, shape_of)
    for i in range(len(stmts)):
        s = out[i]
        t = s.target
        if t is None or s.op != "=" or s.index is not None or t in keep_out:
            continue
        users = reads.get(t, [])
        if (
            len(users) > 1
            and t not in writes
            and _free_view(s.expr)
            and _inline_everywhere(out, reads, writes, i, users, t)
        ):
            continue
        if len(users) != 1 or t in writes:
            continue
        j = users[0]
        user = out[j]
        if user is None or user.expr is None or user.target == t or user.expr.vars().count(t) != 1:
            continue
        if user.index is not None and t in [v for e in user.index for v in e.vars()]:
            continue
        reduced = t in summed
        if not reduced and not _cheap(s.expr, shape_of(t), shape_of(user.target) if user.target else None):
            continue
        if any(v in writes and any(i < k <= j for k in writes[v]) for v in s.expr.vars()):
            continue
        if len(s.expr.render()) + len(user.expr.render()) > INLINE_TEXT:  # a long chain of cheap
            continue  # values stays a line each: readable, and no expression nests thousands deep
        view = (s.view_of or s.expr.view_of) if user.view_of == t else user.view_of
        out[j] = Stmt(
            user.target, substitute(user.expr, t, s.expr), user.op, user.index, user.comment, view_of=view
        )
        out[i] = None
        for v in s.expr.vars():  # what the value read is now read by its user
            reads[v] = [j if k == i else k for k in reads.get(v, [])]
    return [s for s in out if s is not None]


def fold_scales(stmts: list[Stmt], live_out: list[str], shape_of) -> list[Stmt]:
    """``t = A / b`` read once, by ``u = t * s`` with a single value s, becomes ``u = A * (s / b)``: one
    pass over A instead of two (softmax cross-entropy's probabilities times its scale)."""
    reads: dict[str, list[int]] = {}
    for i, s in enumerate(stmts):
        for v in s.reads():
            reads.setdefault(v, []).append(i)
    writes = _writes(stmts)
    out: list[Stmt | None] = list(stmts)
    for i, s in enumerate(stmts):
        e = s.expr
        if not (isinstance(e, Bin) and e.op == "/" and s.op == "=" and s.index is None and s.target):
            continue
        t = s.target
        users = reads.get(t, [])
        if t in live_out or t in writes or len(users) != 1:
            continue
        j = users[0]
        u = out[j]
        if u is None or u.index is not None or u.op != "=" or not isinstance(u.expr, Bin) or u.expr.op != "*":
            continue
        a, b = u.expr.a, u.expr.b
        scale = b if a == Var(t) else a if b == Var(t) else None
        if scale is None or scale == Var(t) or not _single(scale, shape_of) or _single(e.a, shape_of):
            continue
        if any(v in writes and any(i < k <= j for k in writes[v]) for v in e.vars()):
            continue
        new = Bin("*", e.a, Bin("/", scale, e.b))
        out[j] = Stmt(u.target, new, u.op, None, u.comment, view_of=u.view_of)
        out[i] = None
    return [s for s in out if s is not None]


def _single(e: E, shape_of) -> bool:
    """One value: a literal, a variable of shape (), or arithmetic on them."""
    if isinstance(e, Lit):
        return True
    if isinstance(e, Var):
        shape = shape_of(e.name)
        return shape is not None and len(shape) == 0
    if isinstance(e, Bin) and e.op != "@":
        return _single(e.a, shape_of) and _single(e.b, shape_of)
    return False


# a value that only a reduction reads is written into it: no buffer could be reused either way
REDUCTIONS = ("sum", "mean", "max", "min")


def _operand_of_rule(s: Stmt, user: Stmt, t: str, shape_of) -> bool:
    """``u = v op t`` where t is an elementwise value of the same rule (``1 - y * y`` of tanh's rule):
    t is written into that line (``dh *= 1 - h * h``), which may still update v in place.  Not when v
    is an array smaller than u (a forward value against a batch of tangents): then v cannot hold u, t
    can, and t keeps its own line to be updated in place (a number v, a scalar cotangent, still reads
    best as one line)."""
    e = user.expr
    if not (isinstance(e, Bin) and e.b == Var(t) and isinstance(e.a, Var) and e.a != Var(t)):
        return False
    v_shape, u_shape = shape_of(e.a.name), shape_of(user.target) if user.target else None
    if v_shape and u_shape is not None and tuple(v_shape) != tuple(u_shape):
        return False
    if not (s.comment and user.comment and user.comment.startswith(s.comment)):
        return False
    return isinstance(s.expr, (Bin, Neg)) or (isinstance(s.expr, Call) and s.expr.is_ufunc)


def _summed(stmts: list[Stmt], reads, writes, keep_out, shape_of) -> set[str]:
    """The values written into the one line that reads them because both apply one rule: a value a
    reduction of the same rule reads (``(g * a).sum(axis=0)``: no buffer could be reused in it either
    way), the right operand of an update of that rule (``dh *= 1 - h * h``), and the elementwise values
    of that rule that only such a value reads (``-(g * a / s)``), so that the rule reads as one
    expression."""
    out: set[str] = set()
    for i in range(len(stmts) - 1, -1, -1):
        s = stmts[i]
        t = s.target
        if t is None or s.op != "=" or s.index is not None or t in keep_out or t in writes:
            continue
        users = reads.get(t, [])
        if len(users) != 1 or users[0] <= i:
            continue
        u = stmts[users[0]]
        if u.index is not None or u.op != "=" or u.expr.vars().count(t) != 1:
            continue
        if isinstance(u.expr, Method) and u.expr.name in REDUCTIONS and u.expr.obj == Var(t):
            if _one_rule(s.comment, u.comment):
                out.add(t)
        elif _operand_of_rule(s, u, t, shape_of) or (
            u.target in out and s.comment == u.comment and isinstance(u.expr, (Bin, Neg))
        ):
            out.add(t)
    return out


def _one_rule(value: str | None, user: str | None) -> bool:
    """Two lines apply one rule: the same, or an elementwise rule and its sum over broadcast axes
    (notes sections 6 and 7), so that one line citing the latter says what both do."""
    if value is None or user is None:
        return False
    return value == user or any(r.rule == value and r.broadcast_rule == user for r in ROWS.values())


def _free_view(e: E) -> bool:
    """A view of a variable that costs nothing to write again at each use: ``W.T``, a swap of axes,
    a reshape (``x.reshape(-1, D).T``)."""
    if isinstance(e, Attr) and e.name == "T":
        return isinstance(e.obj, Var) or _free_view(e.obj)
    if isinstance(e, Method) and e.name in ("swapaxes", "reshape"):
        return isinstance(e.obj, Var)
    return isinstance(e, Call) and e.func == "np.transpose" and isinstance(e.args[0], Var)


def _inline_everywhere(out, reads, writes, i, users, t) -> bool:
    s = out[i]
    if any(out[j] is None or out[j].target == t for j in users):
        return False
    if any(v in writes and any(i < k <= max(users) for k in writes[v]) for v in s.expr.vars()):
        return False
    for j in sorted(set(users)):
        u = out[j]
        index = tuple(substitute(e, t, s.expr) for e in u.index) if u.index is not None else None
        view = (s.view_of or s.expr.view_of) if u.view_of == t else u.view_of
        out[j] = Stmt(u.target, substitute(u.expr, t, s.expr), u.op, index, u.comment, view_of=view)
    out[i] = None
    for v in s.expr.vars():
        reads[v] = [k for k in reads.get(v, []) if k != i] + sorted(set(users))
    return True


def fold_into_updates(stmts: list[Stmt], live_out: list[str]) -> list[Stmt]:
    """``t = X @ Y`` right before ``u += t`` (t read nowhere else) becomes ``u += X @ Y``: the product's
    buffer exists either way, so one line says it."""
    reads: dict[str, int] = {}
    for s in stmts:
        for v in s.reads():
            reads[v] = reads.get(v, 0) + 1
    out: list[Stmt] = []
    skip = False
    for i, s in enumerate(stmts):
        if skip:
            skip = False
            continue
        nxt = stmts[i + 1] if i + 1 < len(stmts) else None
        if (
            nxt is not None
            and s.target is not None
            and s.op == "="
            and s.index is None
            and s.target not in live_out
            and reads.get(s.target, 0) == 1
            and nxt.op in ("+=", "-=")
            and nxt.index is None
            and isinstance(nxt.expr, Var)
            and nxt.expr.name == s.target
            and nxt.target != s.target
        ):
            out.append(Stmt(nxt.target, s.expr, nxt.op, None, nxt.comment, view_of=nxt.view_of))
            skip = True
            continue
        out.append(s)
    return out


def _writes(stmts: list[Stmt]) -> dict[str, list[int]]:
    """Where each variable's buffer is written after its definition (augmented, indexed or out=)."""
    out: dict[str, list[int]] = {}
    for i, s in enumerate(stmts):
        if s.target and (s.op != "=" or s.index is not None):
            out.setdefault(s.target, []).append(i)
        if isinstance(s.expr, Call):
            for k, v in s.expr.kwargs:
                if k == "out":
                    for name in v.vars():
                        out.setdefault(name, []).append(i)
        if s.target is None and isinstance(s.expr, Call) and s.expr.func in WRITES_FIRST and s.expr.args:
            for name in s.expr.args[0].vars():
                out.setdefault(name, []).append(i)
    return out


def _cheap(e: E, shape, user_shape) -> bool:
    if isinstance(e, Bin) and e.op in CMP_OPS:
        return True
    if shape is not None and len(shape) == 0:
        return True
    if isinstance(e, Attr) and e.name == "T":
        return True
    if isinstance(e, Method) and e.name in ("swapaxes", "reshape", "transpose") and isinstance(e.obj, Var):
        return True
    if isinstance(e, Call) and e.func in ("np.transpose", "np.expand_dims", "np.broadcast_to"):
        return True
    if isinstance(e, Index) and not e.fancy:
        return True
    if shape is not None and user_shape is not None and tuple(shape) != tuple(user_shape):
        return len(shape) <= len(user_shape) and _smaller(shape, user_shape)
    return False


def _smaller(shape, user_shape) -> bool:
    """Every dim of ``shape`` (aligned right) is 1 or the user's dim, and some is 1 or missing."""
    lead = len(user_shape) - len(shape)
    return all(d.is_one() or d == u for d, u in zip(shape, user_shape[lead:]))


def substitute(e: E, name: str, repl: E) -> E:
    """``e`` with the variable ``name`` replaced by the expression ``repl``."""
    if isinstance(e, Var):
        return repl if e.name == name else e
    if not hasattr(e, "__dataclass_fields__"):
        return e
    changes = {}
    for f in fields(e):
        v = getattr(e, f.name)
        if isinstance(v, E):
            changes[f.name] = substitute(v, name, repl)
        elif isinstance(v, tuple):
            changes[f.name] = tuple(_sub_item(x, name, repl) for x in v)
    return type(e)(**{f.name: changes.get(f.name, getattr(e, f.name)) for f in fields(e)})


def _sub_item(x, name, repl):
    if isinstance(x, E):
        return substitute(x, name, repl)
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], E):  # a keyword argument
        return (x[0], substitute(x[1], name, repl))
    return x
