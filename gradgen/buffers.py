"""The buffer pass: statements of a generated function, and their rewriting into an expert's body.

``optimize`` runs three linear passes over a function body (copy propagation, dead code, in-place
updates on buffers the function owns, never on inputs, cache values or views); ``_own_returns`` makes
sure no returned array aliases a caller's one or another returned array; ``_lines`` renders statements
with their comments.  Used for ``forward``, ``backward`` and ``value_and_grad`` (``gradgen/plan.py``)
and for every derivative program (``gradgen/emit.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.dims import shape_str
from gradgen.expr import (
    AUG_OPS,
    CMP_OPS,
    UFUNC_OF,
    WRITES_FIRST,
    Attr,
    Bin,
    Call,
    E,
    Index,
    Lit,
    Method,
    Neg,
    Var,
)


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
    view_of: str | None = None  # the op declared its result a view of this variable (never owned)

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
            m.get(self.view_of, self.view_of) if self.view_of else None,
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


def optimize(
    stmts: list[Stmt],
    params: set[str],
    live_out: list[str],
    kind,
    shape_of,
    keep_read_names: bool = False,
    stem=lambda name: None,
) -> tuple[list[Stmt], dict[str, str]]:
    """Rewrite a function body; returns it and the renames applied (old -> new internal names).

    With ``keep_read_names`` a temporary that earlier lines read keeps its name when a later value is
    computed into its buffer (``t = np.add(v, g, out=v)``), so those earlier lines still say what they
    read.  ``stem(name)`` is the name asked for when ``name`` was handed out (``dx`` for ``dx_2``): a
    value computed into the buffer of a value asked under the same name (the sum over uses of a
    cotangent, notes section 3, into its first term) is written ``v op= ...`` and keeps v's name.

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
            if s.target is None and s.expr.func in WRITES_FIRST and s.expr.args:
                mutated.update(s.expr.args[0].vars())
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
    first_read: dict[str, int] = {}
    for k, x in enumerate(stmts):
        for name in x.reads():
            first_read.setdefault(name, k)
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
        for v, pos in _inplace_candidates(e) if s.view_of is None else ():
            if v not in owned or v in params or base.get(v, v) != v or not buf_dead_after(v, i):
                continue
            st, sv = shape_of(t), shape_of(v)
            if st is None or st != sv or len(st) == 0:
                continue
            kv, kt = kind(v), kind(t)
            show_t, show_v = Var(t).render(), Var(v).render()
            other_reads = {Var(x).render() for x in e.vars() if x != v}
            if show_t == Var(v).render():
                mode = "rename"  # the next version of one accumulating cotangent
            elif (
                kv[0] == "temp"
                and kv[1] == kt[1]
                and len(versions.get(show_t, ())) == 1
                and not (keep_read_names and first_read.get(v, i) < i)
            ):
                mode = "rename"  # an anonymous temporary takes the name of what it becomes
            elif isinstance(e, Method) and len(versions.get(show_t, ())) == 1:
                mode = "rename"  # a copy of a dead buffer: the buffer itself, under the copy's name
            elif _same_value(stem, t, v) and _augments(e, pos) and show_v not in other_reads:
                mode = "into"  # v op= other: the next value of what v holds, under v's name
            else:
                mode = "out"  # t = np.ufunc(..., out=v): in v's buffer, under t's own name
            new = _rewrite(e, v, pos, t if mode == "rename" else v)
            if new is None:
                continue
            if mode == "into":
                renames[t] = v  # t is v from here on: the lines below read v
                uses[v] = max(uses.get(v, -1), uses.get(t, -1))
                out.append(Stmt(*new, comment=s.comment))
                done = True
                break
            if mode == "rename":
                renames[v] = t  # v's buffer carries t's name from its definition on
                uses[t] = max(uses.get(t, -1), uses.get(v, -1))
                if new[2] != "noop":  # (a copy of a dead buffer needs no statement at all)
                    out.append(Stmt(*new, comment=s.comment))
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
        if s.view_of is not None:  # the op says its result views an operand: never owned
            set_base(t, base.get(s.view_of, s.view_of))
        elif isinstance(e, Bin) and e.op in CMP_OPS:
            set_base(t, t)  # a mask: its buffer holds bools, never numbers, so it is not reused
        elif e.fresh and not isinstance(e, Lit):
            owned.add(t)
            set_base(t, t)
        elif e.view_of is not None:
            set_base(t, base.get(e.view_of, e.view_of))
        out.append(s)
    out = [rn(x) for x in out]
    return out, {k: resolve(k) for k in list(renames)}


def _same_value(stem, t: str, v: str) -> bool:
    """t and v were handed out for one name asked twice (``dx_2`` after ``dx``): two values of one
    quantity, such as the partial sums of one cotangent."""
    asked = stem(t)
    return asked is not None and asked == stem(v)


def _augments(e: E, pos: int) -> bool:
    """``t = v op other`` can be written ``v op= other`` (v on the left, or op commutes)."""
    return isinstance(e, Bin) and e.op in AUG_OPS and (pos == 0 or e.op in ("+", "*"))


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
    defs, declared = {}, {}
    for s in stmts:
        if s.target and s.op == "=" and s.index is None:
            defs[s.target] = s.expr
            if s.view_of is not None:  # the op says its result views this variable
                declared[s.target] = s.view_of

    def trace(name):
        """(base buffer, owned, sliced): follow aliases and views back to the array they share."""
        sliced = False
        for _ in range(len(defs) + 1):
            e = defs.get(name)
            if e is None:
                return name, name not in params, sliced
            if name in declared:
                sliced = sliced or _slices(e)
                name = declared[name]
                continue
            if e.fresh and not isinstance(e, Lit):
                return name, True, sliced
            if isinstance(e, Call) and e.func == "np.broadcast_to":
                return name, False, sliced
            sliced = sliced or _slices(e)
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


def _slices(e: E) -> bool:
    """A view that takes a slice somewhere along its chain of views (``g[:n].reshape(...)``)."""
    while True:
        if isinstance(e, Index):
            return not e.fancy
        if isinstance(e, (Method, Attr)):
            e = e.obj
        elif isinstance(e, Call) and e.args and not e.fresh:
            e = e.args[0]
        else:
            return False
