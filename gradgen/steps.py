"""The derivation as data: every value of the graph and every backward step, for ``explain`` and the
cost report.

``derivation`` is the one place that reads the planner's internals; everything downstream works on
the small records below.  The backward steps are taken in the planner's own order (nodes in reverse,
only those on a path to a ``wrt`` input), and each step asks the op's own reverse rule (the one the
generated code is made from) which operands receive a cotangent and which rule it cites, so the
explanation says what the generated code does.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen import reverse
from gradgen.builder import Builder
from gradgen.derive import Rule
from gradgen.derive import _pullback as pullback
from gradgen.dims import Dim
from gradgen.expr import Var
from gradgen.ir import Const, TypedGraph
from gradgen.ops import ROWS
from gradgen.plan import _Planner


@dataclass(frozen=True)
class Value:
    """An input or one node of the graph (a graph entry, or a part of an entry's expression)."""

    id: int
    op: str  # "input" or an op name
    name: str | None  # the spec's name, for inputs and graph entries
    label: str  # the source text
    var: str  # the variable that holds it in the generated code
    shape: tuple[Dim, ...]
    dtype: str
    entry: str | None  # the graph entry it belongs to (None for inputs)
    args: tuple  # node ids and Const operands
    attrs: tuple
    live: bool  # computed (the output depends on it)
    needs_grad: bool  # on a path from the output to a wrt input


@dataclass(frozen=True)
class Contribution:
    """One cotangent contribution that a backward step sends to an operand."""

    operand: int  # node id of the operand
    positions: tuple[int, ...]  # its argument positions (a * a: both)
    rule: str  # the rule as the generated code cites it
    reduced_axes: tuple[int, ...]  # output axes summed because the operand was broadcast (notes section 6)
    accumulated: bool  # added to a contribution from a later use (fan-out, notes section 3)
    cotangent: str  # the code name of the operand's cotangent


@dataclass(frozen=True)
class Step:
    node: int
    cotangent: str  # code name of the incoming cotangent, d<var>
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True)
class Derivation:
    name: str
    path: str
    values: tuple[Value, ...]  # indexed by node id
    entries: tuple[tuple[str, int, str], ...]  # (name, node id, source), in spec order
    inputs: tuple[int, ...]
    output: int
    wrt: tuple[int, ...]
    steps: tuple[Step, ...]  # in the order the backward pass runs them
    shapes: dict[str, tuple[Dim, ...]]  # every variable of the generated code -> its shape
    dim_order: tuple[str, ...]  # dim symbols in order of first appearance
    dim_vars: tuple[str, ...]  # the variables that hold them in the generated code
    var_entry: dict[str, str]  # every variable of the generated code -> the graph entry it belongs to

    def value(self, i: int) -> Value:
        return self.values[i]


def _reduced_axes(out: tuple[Dim, ...], operand: tuple[Dim, ...]) -> tuple[int, ...]:
    lead = len(out) - len(operand)
    axes = list(range(lead))
    axes += [lead + k for k, d in enumerate(operand) if d.is_one() and not out[lead + k].is_one()]
    return tuple(axes)


def derivation(tg: TypedGraph) -> Derivation:
    g = tg.graph
    # planner A reproduces the names (and so the shapes) of the generated code
    names = _Planner(tg)
    names.forward()
    shapes = {v: tg.types[n].shape for n, v in names.var.items()}
    shapes.update({v: tg.types[n].shape for n, v in names.adj_name.items()})
    shapes.update(names.temp_shapes)
    sweeps = [reverse.sweep(tg, names, Var("dtype"), "dout")]
    if tg.types[g.output].shape == ():
        sweeps.append(reverse.sweep(tg, names, Var("dtype"), None))
    for sw in sweeps:  # the names of backward and value_and_grad (their derived values)
        shapes.update(sw.shapes())
    shapes.update(dict.fromkeys(names.dim_var.values(), ()))

    values = tuple(
        Value(
            n.id,
            n.op,
            n.name,
            n.label,
            names.var.get(n.id, n.label),
            tg.types[n.id].shape,
            tg.types[n.id].dtype,
            n.entry,
            n.args,
            n.attrs,
            n.id in names.live,
            bool(names.needs_grad.get(n.id)) and n.id in names.live,
        )
        for n in g.nodes
    )

    steps = _steps(tg, names)
    return Derivation(
        name=g.name,
        path=g.path,
        values=values,
        entries=tuple((e.name, e.node, e.source) for e in g.entries),
        inputs=tuple(i.node for i in g.inputs),
        output=g.output,
        wrt=tuple(g.wrt),
        steps=tuple(steps),
        shapes=shapes,
        dim_order=tuple(d for d, _, _ in g.dim_origin),
        dim_vars=tuple(names.dim_var.values()),
        var_entry={**_var_entries(names), **{v: e for sw in sweeps for v, e in sw.entries().items()}},
    )


def _var_entries(p: _Planner) -> dict[str, str]:
    nodes = p.graph.nodes
    out = {}
    for nid, v in list(p.var.items()) + list(p.adj_name.items()):
        if nodes[nid].entry is not None:
            out[v] = nodes[nid].entry
    for (nid, _hint), v in p.fwd_temps.items():
        if nodes[nid].entry is not None:
            out[v] = nodes[nid].entry
    return out


def _steps(tg: TypedGraph, p: _Planner) -> list[Step]:
    """The backward steps in the sweep's order: each op's reverse rule (``pullback`` or ``partials``),
    applied to a stand-in cotangent, says which operands receive a cotangent and which rule it cites."""
    g = tg.graph
    b = Builder(tg)
    has_cotangent = {g.output}
    steps = []
    for n in reversed(g.nodes):
        if n.op == "input" or n.id not in p.live or not p.needs_grad[n.id] or n.id not in has_cotangent:
            continue
        row = ROWS[n.op]
        stand_in = b.input(f"d{n.id}", tg.types[n.id].shape, n.id, param=False)
        with b.applying(n.id, None, None):
            cots = pullback(row, Rule(b, n, g=stand_in))
            cited = b.rule or row.rule  # a rule may name a more specific one (matrix-vector)
        receivers: dict[int, None] = {}  # one contribution per operand node, as the sweep makes
        for i, c in enumerate(cots):
            a = n.args[i]
            if c is not None and not isinstance(a, Const) and p.needs_grad[a]:
                receivers[a] = None
        contributions = []
        for a in receivers:
            rule, axes = cited, ()
            if row.elementwise and tg.types[a].shape != tg.types[n.id].shape:
                axes = _reduced_axes(tg.types[n.id].shape, tg.types[a].shape)
                rule = row.broadcast_rule or rule
            uses = tuple(k for k, arg in enumerate(n.args) if arg == a)  # a * a: both positions at once
            contributions.append(Contribution(a, uses, rule, axes, a in has_cotangent, p.adj_name[a]))
            has_cotangent.add(a)
        steps.append(Step(n.id, p.adj_name[n.id], tuple(contributions)))
    return steps
