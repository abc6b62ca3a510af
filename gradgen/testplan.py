"""What the generated tests need to know about a spec, read off the op table's facts (gradgen.ops).

Three questions, each answered from properties of the ops a spec uses, never from lists of op names:

- how to draw each input (``domains``): class labels, take indices, probability rows, positive values
  (an operand of log or sqrt, a divisor) or any real value;
- which inputs the large-magnitude test may push to an extreme (``edges``): a float input is scaled by
  100 unless a path from it reaches an op that ``explodes`` (exp) without passing an op whose output is
  ``bounded`` (tanh, sigmoid, softmax), since exp(100 x) overflows in exact arithmetic too; positive
  inputs are pushed towards 0 under the same rule; probability rows become one-hot rows;
- where a kink can be forced exactly (``kinks``): an op with a ``kink`` fact (relu, abs, maximum,
  minimum) is at its kink when all its operands are exactly 0.  An operand can be made exactly 0 by
  zeroing some inputs (the ``zeros`` fact says how zeros propagate), and it is *controlled* by a
  differentiated input when it is that input moved by +-1 (the ``shift`` fact: sums, differences,
  negation, transposes, reshapes) with every other term zeroed.  The test then compares the gradient
  of the control with the one-sided derivative the op's convention names (``kink``: from above, from
  below, or their mean).  A control that reaches another kink op is used only when that op is
  provably off its kink there (one operand exactly 0, another a nonzero number): two kinks at one
  point would make the expected one-sided derivative ambiguous.  A mask (a comparison) counts as such
  an op: at a tie it flips, and the side a ``where`` then picks decides the derivative.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.dims import Dim
from gradgen.ir import ANY, POSITIVE, PROBS, Const, Domain, Graph, TypedGraph, ancestors
from gradgen.ops import TABLE


@dataclass(frozen=True)
class KinkSite:
    op: str  # the kink op's name
    entry: str  # the graph entry the op belongs to (an identifier)
    rule: str  # the rule text its backward line cites, e.g. "relu rule (relu'(0) = 0)"
    control: str  # the differentiated input whose gradient shows the convention
    zeroed: tuple[str, ...]  # inputs set to 0 (with the control) so that the op sits on its kink
    side: int  # the rule's derivative in the control's direction: +1 from above, -1 from below, 0 the mean


def domains(tg: TypedGraph) -> dict[str, Domain]:
    """Input name -> how the test draws it: the first ``domain`` fact of an op that reads it, else ANY.
    Labels with a bound (softmax cross-entropy's classes) come before labels without one (an int that
    is also compared), which take theirs from the numbers they are compared with."""
    g = tg.graph
    out = {}
    for info in g.inputs:
        facts = []
        for n in g.nodes:
            rule = TABLE[n.op].domain if n.op in TABLE else None
            hits = [k for k, a in enumerate(n.args) if a == info.node] if rule else []
            facts += [(d, n) for k in hits if (d := rule(k, n.attr, [_type(tg, a) for a in n.args]))]
        bounded = [d for d, _ in facts if d.kind != "labels" or d.bound is not None]
        out[info.name] = bounded[0] if bounded else _over(facts[0][1]) if facts else ANY
    return out


def _over(n) -> Domain:
    """Int labels with no bound of their own (an int input that is only compared, y == 0): drawn over
    0 .. b - 1, every value present, b one more than the largest whole number among the node's
    operands (at least 3), so that each comparison sees both outcomes."""
    whole = [
        int(a.value)
        for a in n.args
        if isinstance(a, Const) and isinstance(a.value, (int, float)) and float(a.value).is_integer()
    ]
    return Domain("labels", Dim.const(max([2] + [v for v in whole if 0 <= v < 1000]) + 1))


def edges(tg: TypedGraph, domain: dict[str, Domain]) -> tuple[tuple[str, str], ...]:
    """(input, how) for the large-magnitude test: "scale" (x 100), "shrink" (x 1e-3) or "onehot"."""
    g = tg.graph
    users = _users(g)
    out = []
    for info in g.inputs:
        d = domain[info.name]
        if d == PROBS:
            out.append((info.name, "onehot"))
        elif info.dtype == "float" and not _reaches_explosion(g, users, info.node):
            out.append((info.name, "shrink" if d == POSITIVE else "scale"))
    return tuple(out)


def kinks(tg: TypedGraph, wrt: tuple[str, ...], domain: dict[str, Domain]) -> tuple[KinkSite, ...]:
    g = tg.graph
    users = _users(g)
    live = ancestors(g.nodes, g.output)
    out = []
    for nid in sorted(live):
        n = g.nodes[nid]
        if n.op == "input" or not TABLE[n.op].kink:
            continue
        zeros = [_zeroing(tg, a, domain) for a in n.args]
        for k, a in enumerate(n.args):
            others = [z for j, z in enumerate(zeros) if j != k]
            if any(z is None for z in others):
                continue
            for control, sign, zeroed in _controls(tg, a, domain):
                forced = frozenset(zeroed).union(*others) | {control}
                reached = _descendants(users, _input_node(g, control))
                if control not in wrt or any(
                    _switches(tg, i) and i != nid and not _off_kink(tg, i, forced, domain) for i in reached
                ):
                    continue
                side = TABLE[n.op].kink[k] * sign
                zeroed_all = forced - {control}
                out.append(
                    KinkSite(n.op, n.entry or "", TABLE[n.op].rule, control, tuple(sorted(zeroed_all)), side)
                )
                break
            else:
                continue
            break  # one site per kink op is enough
    return tuple(out)


def ops_used(g: Graph) -> tuple[str, ...]:
    """The ops the output depends on, in graph order."""
    live = ancestors(g.nodes, g.output)
    seen: list[str] = []
    for nid in sorted(live):
        op = g.nodes[nid].op
        if op != "input" and op not in seen:
            seen.append(op)
    return tuple(seen)


# ------------------------------------------------------------------------------------------------


def constant_inputs(tg: TypedGraph) -> tuple[str, ...]:
    """The wrt inputs whose gradient is 0 everywhere: every path from them to the output passes through
    a value that is not a float (a mask from a comparison, an int from argmax), which carries no
    cotangent.  Their generated tests check for exact zeros instead of finite differences."""
    g = tg.graph
    floats = {i for i, t in enumerate(tg.types) if t.dtype == "float"}
    reach: set[int] = set()
    stack = [g.output] if g.output in floats else []
    while stack:
        i = stack.pop()
        if i not in reach:
            reach.add(i)
            stack.extend(r for r in g.nodes[i].refs if r in floats)
    return tuple(i.name for i in g.inputs if i.node in g.wrt and i.node not in reach)


def _type(tg, a):
    return tg.types[a] if isinstance(a, int) else None


def _zeros_fact(n):
    z = TABLE[n.op].zeros
    if callable(z):
        z = z(n.attr)
    if z is None and TABLE[n.op].shift:
        z = "all"  # a sum of operands with unit coefficients is 0 when they all are
    return z


def _zeroing(tg: TypedGraph, a, domain) -> frozenset[str] | None:
    """Inputs whose zeroing makes operand ``a`` exactly 0 (an empty set: it is a literal 0), or None."""
    g = tg.graph
    if isinstance(a, Const):
        return frozenset() if a.value == 0 else None
    n = g.nodes[a]
    if n.op == "input":
        ok = tg.types[a].dtype == "float" and domain[n.name] == ANY
        return frozenset({n.name}) if ok else None
    floats = [b for b in n.args if isinstance(b, Const) or tg.types[b].dtype == "float"]
    parts = [_zeroing(tg, b, domain) for b in floats]
    how = _zeros_fact(n)
    if how == "all" and all(p is not None for p in parts):
        return frozenset().union(*parts)
    if how == "first" and parts and parts[0] is not None:
        return parts[0]
    if how == "any":
        found = [p for p in parts if p is not None]
        return min(found, key=lambda p: (len(p), sorted(p))) if found else None
    return None


def _controls(tg: TypedGraph, a, domain):
    """(input, sign, inputs to zero) such that operand ``a`` equals sign * input once those are 0."""
    g = tg.graph
    if isinstance(a, Const):
        return []
    n = g.nodes[a]
    if n.op == "input":
        return [(n.name, 1, frozenset())] if domain[n.name] == ANY and tg.types[a].dtype == "float" else []
    shift = TABLE[n.op].shift
    out = []
    for k, b in enumerate(n.args[: len(shift)]):
        rest = [_zeroing(tg, c, domain) for j, c in enumerate(n.args) if j != k]
        if any(r is None for r in rest):
            continue
        for control, sign, zeroed in _controls(tg, b, domain):
            out.append((control, sign * shift[k], zeroed.union(*rest)))
    return out


def _users(g: Graph) -> dict[int, list[int]]:
    users: dict[int, list[int]] = {n.id: [] for n in g.nodes}
    for n in g.nodes:
        for a in n.refs:
            users[a].append(n.id)
    return users


def _descendants(users, nid: int, stop=lambda i: False) -> set[int]:
    seen, stack = set(), list(users[nid])
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            if not stop(i):
                stack.extend(users[i])
    return seen


def _reaches_explosion(g: Graph, users, nid: int) -> bool:
    bounded = lambda i: TABLE[g.nodes[i].op].magnitude == "bounded"
    return any(TABLE[g.nodes[i].op].magnitude == "explodes" for i in _descendants(users, nid, bounded))


def _switches(tg: TypedGraph, nid: int) -> bool:
    """A kink op, or a mask (a comparison, & | ~): at a tie a mask flips, and the side a where then
    picks decides the derivative, so a forced point there has no one-sided derivative to expect."""
    return bool(TABLE[tg.graph.nodes[nid].op].kink) or tg.types[nid].dtype == "bool"


def _off_kink(tg: TypedGraph, nid: int, forced: frozenset, domain) -> bool:
    """At the forced point, kink op nid has an operand that is exactly 0 and one that is a nonzero number."""
    args = tg.graph.nodes[nid].args
    zero = [(z := _zeroing(tg, a, domain)) is not None and z <= forced for a in args]
    return any(zero) and any(isinstance(a, Const) and a.value not in (None, 0) for a in args)


def _input_node(g: Graph, name: str) -> int:
    return next(i.node for i in g.inputs if i.name == name)
