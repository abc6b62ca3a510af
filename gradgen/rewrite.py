"""Stage 3b, rewrite: a log of a value that may already have rounded to 0 becomes the stable op it spells.

Runs on the typed graph, after shape inference (so every error is still reported on what the spec
wrote) and before planning; pure: a TypedGraph in, a new TypedGraph out.  Each rule replaces a ``log``
node:

    log(sigmoid(z))                    -> log_sigmoid(z)
    log(1 - sigmoid(z))                -> log_sigmoid(-z)
    log(1 + exp(z)), log(exp(z) + 1)   -> softplus(z)
    log(softmax(x, axis))              -> log_softmax(x, axis)
    log(sum(exp(x), axis, keepdims))   -> logsumexp(x, axis, keepdims)

Written out, each loses the answer at the edges: sigmoid(z) is 0 in float32 below z = -103 (and
1 - sigmoid(z) is 0 above z = 17), exp(z) overflows above z = 88, a softmax entry underflows to 0 as
soon as its logit trails the largest by 104, and the log of any of these is -inf or inf, its gradient
nan.  The stable ops never form the value that rounds.

The replacement takes the log node's name, label, place and graph entry, and carries a ``note`` that the
planner prints once above the lines of that graph entry, in forward and in backward.  The intermediate
(the sigmoid, the exp, the softmax) stays in the graph: when nothing else reads it, the planner does not
compute it; when something does (the sigmoid is also the output, say), it is computed for that use and
the log is rewritten all the same.  Computing the stable op beside the shared value costs its own passes
over the data, where the log of the shared value would cost one; but the log of a value that has already
rounded to 0 or 1 cannot be repaired afterwards, and no cheaper form keeps the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gradgen.ir import Const, Graph, Node, TensorType, TypedGraph

LOG_SIGMOID = "log(sigmoid(z)) rewritten as log_sigmoid(z): stable for large |z|"
LOG_ONE_MINUS_SIGMOID = "log(1 - sigmoid(z)) rewritten as log_sigmoid(-z): stable for large |z|"
SOFTPLUS = "log(1 + exp(z)) rewritten as softplus(z): no overflow for large z"
LOG_SOFTMAX = "log(softmax(x)) rewritten as log_softmax(x): no log of an underflowed 0"
LOGSUMEXP = "log(sum(exp(x))) rewritten as logsumexp(x): max-shifted, no overflow"


@dataclass(frozen=True)
class Match:
    """What a log node becomes: ``op`` applied to ``operand`` (negated first if ``negate``)."""

    op: str
    operand: int  # a node id of the graph being rewritten
    attrs: tuple
    negate: bool
    note: str


def match(g: Graph, node: Node) -> Match | None:
    """The stable form of ``node`` if it is a log of one of the compositions above, else None."""
    if node.op != "log" or not isinstance(node.args[0], int):
        return None
    inner = g.node(node.args[0])
    if inner.op == "sigmoid":
        return Match("log_sigmoid", inner.args[0], (), False, LOG_SIGMOID)
    if inner.op == "sub" and _is_one(inner.args[0]) and _op_of(g, inner.args[1]) == "sigmoid":
        return Match("log_sigmoid", g.node(inner.args[1]).args[0], (), True, LOG_ONE_MINUS_SIGMOID)
    if inner.op == "add":
        for one, other in (inner.args, inner.args[::-1]):
            if _is_one(one) and _op_of(g, other) == "exp":
                return Match("softplus", g.node(other).args[0], (), False, SOFTPLUS)
    if inner.op == "softmax":
        return Match("log_softmax", inner.args[0], (("axis", inner.attr("axis")),), False, LOG_SOFTMAX)
    if inner.op == "sum" and _op_of(g, inner.args[0]) == "exp":
        attrs = (("axis", inner.attr("axis")), ("keepdims", inner.attr("keepdims")))
        return Match("logsumexp", g.node(inner.args[0]).args[0], attrs, False, LOGSUMEXP)
    return None


def _is_one(a) -> bool:
    return isinstance(a, Const) and a.value == 1


def _op_of(g: Graph, a) -> str | None:
    return g.node(a).op if isinstance(a, int) else None


class _Builder:
    """The new node list, in the old order, with ids renumbered and a CSE table for added nodes."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.types: list[TensorType] = []
        self.cse: dict[tuple, int] = {}

    def put(self, node: Node, t: TensorType) -> int:
        nid = len(self.nodes)
        self.nodes.append(replace(node, id=nid))
        self.types.append(t)
        if node.op != "input":
            self.cse.setdefault((node.op, node.args, node.attrs), nid)
        return nid

    def negated(self, a: int, place, near: Node) -> int:
        """-a: an existing node if the graph already has one, else a new one in ``near``'s entry (and
        block call, if it was inlined)."""
        key = ("neg", (a,), ())
        if key in self.cse:
            return self.cse[key]
        label = self.nodes[a].label
        label = f"-{label}" if label.isidentifier() else f"-({label})"
        node = Node(0, "neg", (a,), (), None, label, place, near.entry, origin=near.origin)
        return self.put(node, self.types[a])


def rewrite(tg: TypedGraph) -> TypedGraph:
    """Replace every log of a composition above by its stable op; everything else is copied."""
    g = tg.graph
    b = _Builder()
    new_id: dict[int, int] = {}
    for node in g.nodes:
        m = match(g, node)
        if m is None:
            args = tuple(new_id[a] if isinstance(a, int) else a for a in node.args)
            new_id[node.id] = b.put(replace(node, args=args), tg.types[node.id])
            continue
        operand = new_id[m.operand]
        if m.negate:
            operand = b.negated(operand, g.node(node.args[0]).place, node)
        stable = replace(node, op=m.op, args=(operand,), attrs=m.attrs, note=m.note)
        new_id[node.id] = b.put(stable, tg.types[node.id])
    graph = replace(
        g,
        nodes=tuple(b.nodes),
        inputs=tuple(replace(i, node=new_id[i.node]) for i in g.inputs),
        entries=tuple(replace(e, node=new_id[e.node]) for e in g.entries),
        output=new_id[g.output],
        wrt=tuple(new_id[w] for w in g.wrt),
    )
    return TypedGraph(graph, tuple(b.types))
