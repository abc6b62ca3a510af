"""Assembly of the module's derivative functions (``derivatives:`` in the spec): jvp, hvp, jacobian and
hessian, each a program from ``gradgen/derive.py`` emitted by ``gradgen/emit.py``, plus what the
templates need for ``objective``.

Checks that need shapes live here too: hvp and hessian need a scalar output, and a kind needs the rules
its program uses on every op row (an op added without, say, a JVP rule is an error at the kind's place
in the spec, not a traceback).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.buffers import Line
from gradgen.builder import Program
from gradgen.context import dim_expr
from gradgen.derive import (
    Unsupported,
    hessian_program,
    hvp_program,
    jacobian_program,
    jvp_program,
    sizes,
)
from gradgen.diagnostics import Place, SpecError, error
from gradgen.dims import Dim, at_least, shape_str
from gradgen.emit import Emitted, Emitter
from gradgen.ir import TypedGraph


@dataclass(frozen=True)
class Function:
    """One generated function: ``def name(args): \"\"\"doc\"\"\" body; return returns``."""

    name: str
    args: str
    doc: str
    body: tuple[Line, ...]  # after the _bind_dims line
    returns: str


@dataclass(frozen=True)
class Derivatives:
    """What the templates need beyond forward / backward / value_and_grad."""

    kinds: tuple[str, ...]  # in the order the spec lists them
    functions: tuple[Function, ...]
    jacobian_mode: str  # "rows", "columns", "run time" or "" (no jacobian)


WHAT = {"pullback": "reverse-mode (pullback)", "jvp": "forward-mode (JVP)", "batch": "batching"}


class _Context:
    def __init__(self, tg: TypedGraph, dim_var: dict[str, str], taken: set[str]):
        g = tg.graph
        self.tg = tg
        self.dim_var = dim_var
        self.taken = taken
        self.inputs = [i.name for i in g.inputs]
        self.args = ", ".join(self.inputs)
        self.wrt = [g.nodes[w].name for w in g.wrt]
        self.out = g.nodes[g.output].label
        self.out_shape = shape_str(tg.types[g.output].shape)
        self.floats = [i.name for i in g.inputs if i.dtype == "float"]

    def emit(self, prog: Program) -> Emitted:
        return Emitter(prog, self.dim_var, self.taken).emit()

    def prelude(self, em: Emitted, what: str | None) -> list[Line]:
        lines = []
        if what is not None:
            names = ", ".join(em.params) + ("," if len(em.params) == 1 else "")
            like = ", ".join(f"{w}={w}" for w in self.wrt)
            lines.append(Line(f'{names} = _per_input("{what}", {what}, {like})'))
        if em.uses_dtype:
            lines.append(Line(f"dtype = np.result_type({', '.join(self.floats)})"))
        return lines

    def per_wrt(self, cls: str, values) -> str:
        return f"{cls}(" + ", ".join(f"{w}={v}" for w, v in zip(self.wrt, values)) + ")"


def derivatives(tg: TypedGraph, dim_var: dict[str, str], taken: set[str]) -> Derivatives:
    """The functions of every kind the spec lists; raises SpecError at the kind's place when it cannot
    be generated for this spec."""
    g = tg.graph
    c = _Context(tg, dim_var, taken)
    diags, functions, mode = [], [], ""
    for kind, place in g.derivatives:
        if kind in ("hvp", "hessian") and tg.types[g.output].shape != ():
            diags.append(
                error(
                    place,
                    f"{kind} needs a scalar output, but {c.out} has shape {c.out_shape}; "
                    "use jacobian for the derivatives of a vector output",
                )
            )
            continue
        try:
            if kind == "jvp":
                functions.append(_jvp(c))
            elif kind == "hvp":
                functions.append(_hvp(c))
            elif kind == "jacobian":
                made, mode = _jacobian(c)
                functions.extend(made)
            elif kind == "hessian":
                functions.append(_hessian(c))
        except Unsupported as exc:
            diags.append(_unsupported(place, kind, exc, tg))
    if diags:
        raise SpecError(diags)
    return Derivatives(tuple(k for k, _ in g.derivatives), tuple(functions), mode)


def _unsupported(place: Place, kind: str, exc: Unsupported, tg: TypedGraph):
    node = exc.node
    where = f"{node.label}, line {node.place.line}"
    return error(
        place,
        f"{kind} is not available for this spec yet: op {exc.op!r} ({where}) has no {WHAT[exc.what]} rule",
    )


def _jvp(c: _Context) -> Function:
    prog = jvp_program(c.tg)
    em = c.emit(prog)
    doc = (
        f"Compute {c.out} {c.out_shape} and its directional derivative along `tangents` (one array per "
        f"wrt input, shaped like it: {', '.join(c.wrt)}) in one forward-mode pass; return "
        f"({c.out}, {c.out}_dot)."
    )
    value, t_out = em.returns
    body = c.prelude(em, "tangents") + list(em.lines)
    return Function("jvp", f"{c.args}, tangents", doc, tuple(body), f"{value}, {t_out}")


def _hvp(c: _Context) -> Function:
    prog = hvp_program(c.tg)
    em = c.emit(prog)
    k = len(c.wrt)
    value, grads, hv = em.returns[0], em.returns[1 : 1 + k], em.returns[1 + k :]
    doc = (
        f"Compute {c.out}, its gradients and the Hessian of {c.out} w.r.t. {', '.join(c.wrt)} (jointly) "
        "applied to `v` (one array per wrt input), in one forward-over-reverse pass: forward mode "
        "applied to the reverse sweep.  Return (value, grads, Hv)."
    )
    body = c.prelude(em, "v") + list(em.lines)
    returns = f"{value}, {c.per_wrt('Gradients', grads)}, {c.per_wrt('Gradients', hv)}"
    return Function("hvp", f"{c.args}, v", doc, tuple(body), returns)


def jacobian_mode(tg: TypedGraph) -> str:
    """Rows (reverse mode over m cotangent basis vectors) when the output has no more entries than the
    wrt inputs together, columns (forward mode over n tangent basis vectors) when it has more, decided
    here when the dims prove it and at run time otherwise."""
    m, n = sizes(tg)
    if at_least(n + Dim.const(-1) * m, 0):
        return "rows"
    if at_least(m + Dim.const(-1) * n, 1):
        return "columns"
    return "run time"


def _jacobian(c: _Context) -> tuple[list[Function], str]:
    mode = jacobian_mode(c.tg)
    m, n = sizes(c.tg)
    m_text, n_text = _dim_text(m, c.dim_var), _dim_text(n, c.dim_var)
    doc = (
        f"Compute {c.out} {c.out_shape} and its Jacobian w.r.t. {', '.join(c.wrt)}: "
        f"J.<input>[i..., j...] = d {c.out}[i...] / d <input>[j...], shaped {c.out}.shape + "
        "<input>.shape (notes section 1).  Return (out, J)."
    )
    made = {}
    for which in ("rows", "columns") if mode == "run time" else (mode,):
        prog = jacobian_program(c.tg, which)
        em = c.emit(prog)
        why = (
            f"rows: one reverse sweep for all {m_text} output entries at once (a batch of basis "
            f"cotangents), as {m_text} <= {n_text} input entries"
            if which == "rows"
            else f"columns: one forward-mode pass for all {n_text} input entries at once (a batch of "
            f"basis tangents), as {n_text} < {m_text} output entries"
        )
        body = comment(why) + c.prelude(em, None) + list(em.lines)
        returns = f"{em.returns[0]}, {c.per_wrt('Jacobian', em.returns[1:])}"
        made[which] = (body, returns)
    if mode != "run time":
        body, returns = made[mode]
        return [Function("jacobian", c.args, doc, tuple(body), returns)], mode
    choose = (
        *comment(
            "the dims decide at run time: rows (one reverse sweep for a batch of basis cotangents) when "
            "the output has no more entries than the wrt inputs, else columns (forward mode)"
        ),
        Line(f"if {m_text} <= {n_text}:"),
        Line(f"    return _jacobian_rows({c.args})"),
        Line(f"return _jacobian_columns({c.args})", None),
    )
    helpers = [
        Function(f"_jacobian_{w}", c.args, f"The Jacobian by {w}; see `jacobian`.", tuple(b), r)
        for w, (b, r) in made.items()
    ]
    main = Function("jacobian", c.args, doc, choose, "")
    return [main, *helpers], mode


def comment(text: str) -> list[Line]:
    """A comment wrapped to the line length, as comment-only lines."""
    import textwrap

    return [Line("", part) for part in textwrap.wrap(text, width=92, break_long_words=False)]


def _dim_text(d: Dim, dim_var: dict[str, str]) -> str:
    return dim_expr(d, dim_var).render()


def _hessian(c: _Context) -> Function:
    prog = hessian_program(c.tg)
    em = c.emit(prog)
    k = len(c.wrt)
    value, grads, blocks = em.returns[0], em.returns[1 : 1 + k], em.returns[1 + k :]
    rows = [c.per_wrt("Jacobian", blocks[i * k : (i + 1) * k]) for i in range(k)]
    _, n = sizes(c.tg)
    doc = (
        f"Compute {c.out}, its gradients and its Hessian w.r.t. {', '.join(c.wrt)}: every block "
        f"H.<a>.<b> (also H[i][j]) = d^2 {c.out} / (d a d b), shaped a.shape + b.shape.  Return "
        "(value, grads, H)."
    )
    why = (
        f"all {_dim_text(n, c.dim_var)} Hessian-vector products at once: forward mode over the reverse "
        "sweep, for a batch of basis tangents"
    )
    body = comment(why) + c.prelude(em, None) + list(em.lines)
    returns = f"{value}, {c.per_wrt('Gradients', grads)}, {c.per_wrt('Hessian', rows)}"
    return Function("hessian", c.args, doc, tuple(body), returns)


__all__ = ["Derivatives", "Function", "derivatives", "jacobian_mode"]
