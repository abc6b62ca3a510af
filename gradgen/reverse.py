"""The reverse sweep of ``backward`` and ``value_and_grad``, from the graph-level rules.

The gradients are a derivative program like every other kind (``derive.pullbacks`` over the spec's
graph, ``gradgen/derive.py``), so each op has one reverse rule, its ``pullback`` (or ``partials``).
The spec's own values are written by the planner's ``forward`` (``gradgen/plan.py``); this module
writes the derived values of the program, the cotangents and what they read, through the emitter of
derivative programs (``gradgen/emit.py``) with the planner's names for the forward values, so that
``backward`` reads the forward values through the cache and ``value_and_grad`` follows the forward
statements in one body.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.buffers import Stmt
from gradgen.builder import Builder, Program, const
from gradgen.context import _section
from gradgen.derive import _out, pullbacks
from gradgen.emit import Emitter, fold_scales, inline
from gradgen.expr import Bin, Call, E, Var
from gradgen.ir import TypedGraph
from gradgen.ops import ROWS


@dataclass
class Sweep:
    """The derived statements of one gradient body and the gradients it returns (in ``wrt`` order)."""

    stmts: list[Stmt]
    grads: list[tuple[str, E]]  # (wrt input name, expression returned)
    emitter: Emitter  # its names' kinds and shapes, for the buffer pass

    def kind(self, name: str):
        return self.emitter.namer.kind.get(name) or self.emitter.namer.kind.get(name.split("#")[0])

    def stem(self, name: str) -> str | None:
        return self.emitter.namer.stem(name)

    def shape_of(self, name: str):
        return self.emitter.shape_of(name)

    def shapes(self) -> dict:
        """Every variable the body may show (as shown) -> its shape."""
        em = self.emitter
        out = {Var(v).render(): em.types[nid].shape for nid, v in em.var.items()}
        out.update({Var(v).render(): s for v, s in em.shapes.items()})
        out.update(em.temp_shapes)
        return out

    def entries(self) -> dict[str, str]:
        """Every derived variable (as shown) -> the graph entry whose rule made it."""
        em = self.emitter
        nodes = em.prog.nodes
        return {Var(v).render(): nodes[nid].entry for nid, v in em.var.items() if nodes[nid].entry}


def grad_program(tg: TypedGraph, seed_name: str | None) -> Program:
    """The spec's graph, then its reverse sweep; outputs: the output, then one gradient per wrt input.
    ``seed_name`` None: the output's cotangent is the number 1 (value_and_grad); else an argument."""
    b = Builder(tg)
    out = tg.graph.output
    seed = const(1) if seed_name is None else b.input(seed_name, b.shape(out), out)
    grads = pullbacks(b, out, seed, list(tg.graph.wrt))
    return b.finish([out] + [_out(b, grads[w], b.shape(w)) for w in tg.graph.wrt])


class _SweepEmitter(Emitter):
    """The emitter of a gradient program's derived values: the spec's values keep the planner's names
    (and the temporaries its forward saved), and each derived value is written under a comment that
    names the graph entry whose rule made it (with the rewrite notes of that entry)."""

    def __init__(self, prog: Program, planner, dtype: E, seed: int | None, seed_name: str | None):
        self.planner = planner
        self.dtype_var = dtype
        self.seed = (seed, seed_name)
        g = prog.tg.graph
        forward_names = set(planner.var.values()) | set(planner.fwd_temps.values())
        super().__init__(prog, planner.dim_var, {n.name for n in g.nodes if n.name} | forward_names)
        self.fwd_temps.update(planner.fwd_temps)
        self.temp_shapes.update(planner.temp_shapes)

    def _name_nodes(self) -> None:
        p = self.planner
        for n in self.prog.nodes[: len(self.graph.nodes) - (self.seed[0] is not None)]:
            if n.id in p.var:
                self.var[n.id] = p.var[n.id]
        super()._name_nodes()
        if self.seed[0] is not None:  # backward's argument, named by the template
            self.var[self.seed[0]] = self.seed[1]

    def dtype_expr(self) -> E:
        self.used_dtype = True
        return self.dtype_var

    def statements(self) -> list[Stmt]:
        prog, p = self.prog, self.planner
        entries = {e.name: e for e in self.graph.entries}
        stmts: list[Stmt] = []
        header = None
        for nid in self.order():
            n = prog.nodes[nid]
            if prog.rules[nid] is None:  # the spec's own value: forward computed it
                continue
            if n.entry is not None and (n.entry, n.origin) != header and n.entry in entries:
                header = (n.entry, n.origin)
                stmts.append(Stmt(None, None, comment=_section(entries[n.entry], n.origin)))
                stmts += [Stmt(None, None, comment=t, note=True) for t in p.notes(n.entry, backward=True)]
            stmts.extend(self._node(n))
        return stmts


def sweep(tg: TypedGraph, planner, dtype: E, seed_name: str | None) -> Sweep:
    """The statements after the forward ones: the reverse sweep with the output's cotangent the
    argument ``seed_name`` (backward's ``dout``) or the number 1 (None: value_and_grad)."""
    prog = grad_program(tg, seed_name)
    seed = prog.params[-1] if seed_name is not None else None
    em = _SweepEmitter(prog, planner, dtype, seed, seed_name)
    stmts = em.statements()
    returns = [em.var[o] for o in prog.outputs[1:]]
    params = set(planner.var.values()) | set(planner.fwd_temps.values()) | set(planner.dim_var.values())
    params |= {"dout", "dtype"}
    for k, (w, g) in enumerate(zip(tg.graph.wrt, prog.outputs[1:])):
        alias = _named_after(prog, em, w, g)
        if alias is not None:  # after the cotangent it names, in the section of the value reading w
            at = max((i for i, s in enumerate(stmts) if s.target == em.var[g]), default=len(stmts) - 1)
            at = next((i for i in range(at + 1, len(stmts)) if stmts[i].comment == alias.note_of), at)
            while at + 1 < len(stmts) and stmts[at + 1].expr is None and stmts[at + 1].note:
                at += 1
            stmts.insert(at + 1, Stmt(alias.target, alias.expr, comment=alias.comment))
            returns[k] = alias.target
    stmts, returns = _pieces_in_place(stmts, returns)
    stmts = inline(fold_scales(stmts, returns, em.shape_of), returns, params, em.shape_of)
    names = [tg.graph.nodes[w].name for w in tg.graph.wrt]
    return Sweep(stmts, [(n, Var(r)) for n, r in zip(names, returns)], em)


def _pieces_in_place(stmts: list[Stmt], returns: list[str]) -> tuple[list[Stmt], list[str]]:
    """The pieces of one value (split, q, k and v sliced from one qkv) each send zeros with their
    cotangent at their slice; summed over uses, ``t = zeros; t[s] = g; u = v + t`` becomes
    ``v[s] += g`` when v is itself such zeros that this function made and nothing else reads: one
    array for all the pieces, no zeros and no sum per piece."""
    reads: dict[str, int] = {}  # statements reading each variable's value (not those writing a slice)
    for st in stmts:
        for v in set(st.expr.vars() if st.expr is not None else []) | {
            v for e in st.index or () for v in e.vars()
        }:
            reads[v] = reads.get(v, 0) + 1
    scatter: set[str] = set()  # variables holding fresh zeros written at slices
    out: list[Stmt] = []
    rename: dict[str, str] = {}
    i = 0
    while i < len(stmts):
        st = stmts[i].rename(rename) if rename else stmts[i]
        nxt = stmts[i + 1].rename(rename) if i + 1 < len(stmts) and rename else None
        nxt = nxt or (stmts[i + 1] if i + 1 < len(stmts) else None)
        zeros = st.op == "=" and st.index is None and isinstance(st.expr, Call) and st.expr.func == "np.zeros"
        if zeros and nxt is not None and nxt.target == st.target and nxt.op == "=" and nxt.index is not None:
            t = st.target
            user = next((k for k in range(i + 2, len(stmts)) if t in stmts[k].reads()), None)
            u = stmts[user].rename(rename) if user is not None else None
            if (
                u is not None
                and reads.get(t) == 1  # the sum alone
                and u.op == "="
                and u.index is None
                and isinstance(u.expr, Bin)
                and u.expr.op == "+"
                and u.expr.b == Var(t)
                and isinstance(u.expr.a, Var)
                and u.expr.a.name in scatter
                and reads.get(u.expr.a.name) == 1
                and not any(stmts[k].target == t for k in range(i + 2, user))  # one slice written
            ):
                v = u.expr.a.name
                comment = nxt.comment.split(":")[0] + ": g added at its slice of the same zeros"
                out.extend(stmts[k].rename(rename) for k in range(i + 2, user))
                out.append(Stmt(v, nxt.expr, "+=", nxt.index, comment))
                rename[u.target] = v
                scatter.add(v)
                returns = [rename.get(r, r) for r in returns]
                i = user + 1
                continue
            scatter.add(t)
        out.append(st)
        i += 1
    return out, returns


def _named_after(prog: Program, em: Emitter, w: int, g: int) -> _Alias | None:
    """``dX = dB`` when X's gradient is the very cotangent of the one value that reads X (X + y, say):
    the gradient is returned under its own name, on a line that cites the rule that passed it on."""
    hint = prog.hints[g]
    if prog.rules[g] is None or hint is None or hint.base == w or g in prog.params:
        return None
    readers = [n for n in prog.tg.graph.nodes if n.id in em.live and prog.rules[n.id] is None and w in n.refs]
    if len(readers) != 1:
        return None
    name = em.namer.fresh(f"d{prog.nodes[w].name}", "user", "bwd")
    em.shapes[name] = prog.types[w].shape
    reader = readers[0]
    entries = {e.name: e for e in prog.tg.graph.entries}
    section = _section(entries[reader.entry], reader.origin) if reader.entry in entries else None
    return _Alias(name, Var(em.var[g]), ROWS[reader.op].rule, section)


@dataclass
class _Alias:
    target: str
    expr: E
    comment: str
    note_of: str | None  # the section comment of the value that reads w


__all__ = ["Sweep", "grad_program", "sweep"]
