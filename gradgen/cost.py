"""The cost report: FLOPs per graph entry (forward and backward), cache bytes, peak memory.

Counting conventions (what ``RULES`` below encodes, one row per op of ``gradgen/ops.py``):

- one FLOP per elementwise arithmetic operation, comparison or function evaluation (``exp``, ``tanh``
  and ``log`` count 1 each), on every element it touches;
- a reduction over ``m`` elements costs ``m`` (one add, or one max, per element);
- a matrix product ``[M, K] @ [K, N]`` costs ``2*M*K*N`` (a multiply and an add per term); an outer
  product ``M*N``; a batched product multiplies by the batch size;
- moving data (transpose, reshape, take, concatenate, broadcasting, filling) costs nothing;
- operations on scalars (a loss divided by ``N``) are not counted.

The backward cost of an op is the cost of every operand cotangent the generated code computes (none
for operands that lead to no ``wrt`` input), plus the planner's own work: summing a cotangent over the
axes along which its operand was broadcast costs one add per element of the output (notes section 6),
and adding a second use's contribution to a fanned-out value one add per element of the value (notes
section 3).

Memory is measured on the generated module itself: every statement of ``forward``, ``backward`` and
``value_and_grad`` is replayed on sizes, counting each new array from its assignment until its name is
rebound or the function returns (views, ``out=`` and in-place updates allocate nothing); the sizes of
temporaries inside one expression are not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass

from gradgen.dims import Dim, numel
from gradgen.steps import Derivation, Value

ONE = Dim.const(1)
ZERO = Dim.const(0)


def _k(k: int, d: Dim) -> Dim:
    return Dim.const(k) * d


# --------------------------------------------------------------------------------------------------
# per-op counting rules


@dataclass(frozen=True)
class CostCtx:
    value: Value
    operands: tuple  # the operands' Values, None for a number literal

    @property
    def n(self) -> Dim:
        """Elements of the output."""
        return numel(self.value.shape)

    def m(self, i: int = 0) -> Dim:
        """Elements of operand i."""
        return numel(self.operands[i].shape)

    def attr(self, key, default=None):
        for k, v in self.value.attrs:
            if k == key:
                return v
        return default


@dataclass(frozen=True)
class CostRule:
    forward_text: str
    backward_text: str  # per operand that receives a cotangent
    forward: Callable[[CostCtx], Dim]
    backward: Callable[[CostCtx, tuple[int, ...]], Dim]  # positions of one operand


def _rule(fwd_text, bwd_text, fwd, bwd):
    return CostRule(fwd_text, bwd_text, fwd, bwd)


def _per_element(k_fwd: int, k_bwd: int, name: str, bwd_form: str) -> CostRule:
    return _rule(
        f"{k_fwd} per element" + (f" ({name})" if name else ""),
        f"{k_bwd} per element ({bwd_form})" if k_bwd else "none",
        lambda c: _k(k_fwd, c.n),
        lambda c, pos: _k(k_bwd, c.n),
    )


def _rows(c: CostCtx) -> Dim:
    """Elements of the reduced shape of a softmax-like op: one per row along the axis."""
    shape = c.operands[0].shape
    axis = c.attr("axis", -1) % len(shape)
    return numel(shape[:axis] + shape[axis + 1 :])


def _sce_rows(c: CostCtx) -> tuple[Dim, Dim]:
    shape = c.operands[0].shape
    return (shape[0], shape[1]) if len(shape) == 2 else (ONE, shape[0])


def _sce_fwd(c: CostCtx) -> Dim:
    n, k = _sce_rows(c)
    if c.operands[1].dtype == "int":
        return _k(4, n * k) + _k(2, n)
    return _k(8, n * k) + n


def _sce_bwd(c: CostCtx, pos) -> Dim:
    n, k = _sce_rows(c)
    if pos == (0,) and c.operands[1].dtype == "int":
        return n * k + _k(2, n)
    return _k(2, n * k)


def _matmul_inner(c: CostCtx) -> Dim:
    return c.operands[0].shape[-1]


def _matmul_fwd(c: CostCtx) -> Dim:
    return _k(2, c.n * _matmul_inner(c))


def _matmul_bwd(c: CostCtx, pos) -> Dim:
    a, b = c.operands
    if a.shape and b.shape and len(a.shape) <= 2 and len(b.shape) <= 2:
        if len(a.shape) == 1 and len(b.shape) == 1:
            return c.m(pos[0])  # g * b, g * a
        if (len(a.shape) == 2) != (len(b.shape) == 2) and (pos == (0,)) == (len(a.shape) == 2):
            return c.m(pos[0])  # the outer product for the matrix operand
    cost = _matmul_fwd(c)
    operand = c.operands[pos[0]]
    # a batched operand broadcast over batch dims: its product is summed over them afterwards
    batch_out = numel(c.value.shape[:-2]) if len(c.value.shape) > 2 else ONE
    batch_in = numel(operand.shape[:-2]) if len(operand.shape) > 2 else ONE
    if len(operand.shape) > 2 and batch_in != batch_out:
        cost = cost + batch_out * numel(operand.shape[-2:])
    return cost


def _conv_flops(c: CostCtx) -> Dim:
    """2 per term: every output element sums (C/groups) * kernel products."""
    return _k(2, c.n * numel(c.operands[1].shape[1:]))


def _window(c: CostCtx) -> Dim:
    k = c.attr("kernel_size")
    kh, kw = (k, k) if isinstance(k, int) else k
    return Dim.const(kh * kw)


def _einsum_all(c: CostCtx) -> Dim:
    subscripts = c.attr("subscripts").replace(" ", "")
    terms = subscripts.split("->")[0].split(",")
    sizes: dict[str, Dim] = {}
    for term, operand in zip(terms, c.operands):
        for ch, d in zip(term, operand.shape):
            sizes.setdefault(ch, d)
    total = ONE
    for d in sizes.values():
        total = total * d
    return _k(max(len(terms), 1), total)


RULES: dict[str, CostRule] = {
    "add": _rule("1 per element", "none (g passes through)", lambda c: c.n, lambda c, pos: ZERO),
    "sub": _rule(
        "1 per element",
        "none for a, 1 per element for b (-g)",
        lambda c: c.n,
        lambda c, pos: c.n if pos == (1,) else ZERO,
    ),
    "mul": _rule(
        "1 per element",
        "1 per element (g * other); 2 for a * a",
        lambda c: c.n,
        lambda c, pos: _k(len(pos), c.n),
    ),
    "div": _rule(
        "1 per element",
        "1 per element for a (g / b), 3 for b (-g * y / b)",
        lambda c: c.n,
        lambda c, pos: c.n if pos == (0,) else _k(3, c.n),
    ),
    "neg": _per_element(1, 1, "", "-g"),
    "pow": _rule(
        "1 per element",
        "3 per element (k * a ** (k - 1) * g); 2 for k = 2, none for k = 1",
        lambda c: c.n,
        lambda c, pos: {1: ZERO, 2: _k(2, c.n)}.get(c.attr("k"), _k(3, c.n)),
    ),
    "exp": _per_element(1, 1, "", "g * y"),
    "log": _per_element(1, 1, "", "g / a"),
    "sqrt": _per_element(1, 2, "", "g / (2 * y)"),
    "tanh": _per_element(1, 3, "", "g * (1 - y * y)"),
    "sigmoid": _per_element(6, 3, "t = exp(-|a|) / (1 + exp(-|a|)), then |[a >= 0] - t|", "g * t * (1 - t)"),
    "log_sigmoid": _per_element(5, 3, "min(a, 0) - log1p(exp(-|a|))", "-g * expm1(y)"),
    "softplus": _per_element(5, 3, "max(a, 0) + log1p(exp(-|a|))", "-g * expm1(-y)"),
    "relu": _per_element(1, 2, "max", "compare and multiply"),
    "square": _per_element(1, 2, "", "g * 2 * a"),
    "abs": _per_element(1, 2, "", "g * sign(a)"),
    "maximum": _per_element(1, 2, "", "compare and multiply, per operand"),
    "minimum": _per_element(1, 2, "", "compare and multiply, per operand"),
    **dict.fromkeys(
        ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_and", "logical_or"),
        _per_element(1, 0, "", "none (a mask is never differentiated)"),
    ),
    "logical_not": _per_element(1, 0, "", "none (a mask is never differentiated)"),
    "where": _rule(
        "1 per element (a select)",
        "1 per element per operand (np.where(cond, g, 0), or g * mask for a mask input)",
        lambda c: c.n,
        lambda c, pos: _k(len(pos), c.n),
    ),
    "sum": _rule("1 per element of a", "none (g broadcast back)", lambda c: c.m(), lambda c, pos: ZERO),
    "mean": _rule(
        "1 per element of a, plus 1 per element of the result (the division)",
        "1 per element of the result (g / count), then broadcast back",
        lambda c: c.m() + c.n,
        lambda c, pos: c.n,
    ),
    "logsumexp": _rule(
        "4 per element of a (max, shift, exp, sum) plus 2 per element of the result (log, add back)",
        "3 per element of a (shift, exp, multiply)",
        lambda c: _k(4, c.m()) + _k(2, c.n),
        lambda c, pos: _k(3, c.m()),
    ),
    "max": _rule(
        "1 per element of a (one compare)",
        "4 per element of a (the extreme found again, compare, count, scale) plus 1 per element of the "
        "result (g / count)",
        lambda c: c.m(),
        lambda c, pos: _k(4, c.m()) + c.n,
    ),
    "min": _rule(
        "1 per element of a (one compare)",
        "4 per element of a (the extreme found again, compare, count, scale) plus 1 per element of the "
        "result (g / count)",
        lambda c: c.m(),
        lambda c, pos: _k(4, c.m()) + c.n,
    ),
    "var": _rule(
        "4 per element of a (mean, shift, square, sum) plus 1 per element of the result (the division)",
        "3 per element of a (mean and shift found again, scale) plus 1 per element of the result",
        lambda c: _k(4, c.m()) + c.n,
        lambda c, pos: _k(3, c.m()) + c.n,
    ),
    "std": _rule(
        "4 per element of a (mean, shift, square, sum) plus 2 per element of the result (division, root)",
        "3 per element of a (mean and shift found again, scale) plus 2 per element of the result",
        lambda c: _k(4, c.m()) + _k(2, c.n),
        lambda c, pos: _k(3, c.m()) + _k(2, c.n),
    ),
    "argmax": _rule(
        "1 per element of a (one compare)", "none (not differentiated)", lambda c: c.m(), lambda c, pos: ZERO
    ),
    "argmin": _rule(
        "1 per element of a (one compare)", "none (not differentiated)", lambda c: c.m(), lambda c, pos: ZERO
    ),
    "softmax": _rule(
        "5 per element (max, shift, exp, sum, scale) plus 1 per row (the reciprocal)",
        "4 per element (row dot product: 2, subtract, multiply)",
        lambda c: _k(5, c.n) + _rows(c),
        lambda c, pos: _k(4, c.n),
    ),
    "log_softmax": _rule(
        "5 per element (max, shift, exp, sum, subtract) plus 1 per row (the log)",
        "4 per element (exp, sum, multiply, subtract)",
        lambda c: _k(5, c.n) + _rows(c),
        lambda c, pos: _k(4, c.n),
    ),
    "softmax_cross_entropy": _rule(
        "[N, C] logits, int labels: 4*N*C (max, shift, exp, sum) + 2*N (log, label pick); "
        "float labels: 8*N*C + N",
        "logits with int labels: N*C + 2*N (normalise and scale, subtract at the labels); "
        "float labels: 2*N*C per operand",
        _sce_fwd,
        _sce_bwd,
    ),
    "matmul": _rule(
        "2*M*K*N for [M, K] @ [K, N] (times the batch size when batched)",
        "the same per operand (dA = g @ B.T, dB = A.T @ g); M*N for the outer product of a matrix-vector "
        "product's matrix; a batched operand broadcast over batch dims adds one add per element summed",
        _matmul_fwd,
        _matmul_bwd,
    ),
    "transpose": _rule("none (a view)", "none", lambda c: ZERO, lambda c, pos: ZERO),
    "reshape": _rule("none (a view)", "none", lambda c: ZERO, lambda c, pos: ZERO),
    "concatenate": _rule("none (a copy)", "none (slices)", lambda c: ZERO, lambda c, pos: ZERO),
    "take": _rule(
        "none (a gather)", "1 per element of the result (scatter-add)", lambda c: ZERO, lambda c, pos: c.n
    ),
    "take_along_axis": _rule(
        "none (a gather)",
        "1 per element of the result (a scatter: an assignment with one index per slice, else an add)",
        lambda c: ZERO,
        lambda c, pos: c.n,
    ),
    "index": _rule(
        "none (a view)", "none (zeros, the picked entries written)", lambda c: ZERO, lambda c, pos: ZERO
    ),
    "split": _rule("none (a view)", "none (zeros, the piece written)", lambda c: ZERO, lambda c, pos: ZERO),
    "stack": _rule("none (a copy)", "none (views)", lambda c: ZERO, lambda c, pos: ZERO),
    "einsum": _rule(
        "one multiply-add per operand per term: (number of operands) * (product of all index sizes)",
        "the same contraction per operand, with g in the operand's place",
        _einsum_all,
        lambda c, pos: _einsum_all(c),
    ),
    # issue 9's elementwise ops (gradgen/ops_elem.py); erf counts its rational approximation
    "sin": _per_element(1, 2, "", "g * cos(a)"),
    "cos": _per_element(1, 3, "", "g * -sin(a)"),
    "log1p": _per_element(1, 2, "", "g / (1 + a)"),
    "expm1": _per_element(1, 2, "", "g * exp(a)"),
    "erf": _per_element(20, 5, "a rational function of a or |a|, times exp(-a^2)", "g * exp(-a * a) * c"),
    "gelu": _rule(
        "approximate='none': 22 per element (a * erfc(-a / sqrt 2) / 2); 'tanh': 9",
        "approximate='none': 8 per element (g * (Phi + a * phi(a))); 'tanh': 12",
        lambda c: _k(9 if c.attr("approximate") == "tanh" else 22, c.n),
        lambda c, pos: _k(12 if c.attr("approximate") == "tanh" else 8, c.n),
    ),
    "clip": _rule(
        "2 per element (max, min)",
        "3 per element for a (two compares, a multiply), 3 for lo, 2 for hi",
        lambda c: _k(2, c.n),
        lambda c, pos: _k(2 if pos == (2,) else 3, c.n),
    ),
    "power": _rule(
        "1 per element",
        "4 per element for a (g * b * a ** (b - 1)), 3 for b (g * y * log(a))",
        lambda c: c.n,
        lambda c, pos: _k(4 if pos == (0,) else 3, c.n),
    ),
    "conv1d": _rule(
        "2*N*O*(output positions)*(C/groups)*K: a multiply-add per kernel term",
        "the same per operand (a correlation for dx, a contraction for dw)",
        lambda c: _conv_flops(c),
        lambda c, pos: _conv_flops(c),
    ),
    "conv2d": _rule(
        "2*N*O*H'*W'*(C/groups)*KH*KW: a multiply-add per kernel term",
        "the same per operand (a correlation for dx, a contraction for dw)",
        lambda c: _conv_flops(c),
        lambda c, pos: _conv_flops(c),
    ),
    "max_pool2d": _rule(
        "kh*kw per element of the result (a max per window)",
        "kh*kw per element of the result (argmax), plus 2 per result element per kernel offset",
        lambda c: _window(c) * c.n,
        lambda c, pos: _k(3, _window(c) * c.n),
    ),
    "avg_pool2d": _rule(
        "kh*kw per element of the result (a sum per window) plus 1 (the division)",
        "1 per element of the result plus 1 per result element per kernel offset",
        lambda c: (_window(c) + ONE) * c.n,
        lambda c, pos: (_window(c) + ONE) * c.n,
    ),
    "pad": _rule("none (a copy)", "none (a view of g)", lambda c: ZERO, lambda c, pos: ZERO),
}


# --------------------------------------------------------------------------------------------------
# counting a derivation


@dataclass(frozen=True)
class EntryCost:
    name: str
    forward: Dim
    backward: Dim

    @property
    def total(self) -> Dim:
        return self.forward + self.backward


def flops(d: Derivation) -> list[EntryCost]:
    """Forward and backward FLOPs of every graph entry that the output uses, in spec order."""
    fwd: dict[str, Dim] = {}
    bwd: dict[str, Dim] = {}
    for v in d.values:
        if v.op == "input" or not v.live:
            continue
        fwd[v.entry] = fwd.get(v.entry, ZERO) + RULES[v.op].forward(_ctx(d, v))
    for step in d.steps:
        v = d.value(step.node)
        c = _ctx(d, v)
        total = ZERO
        for contrib in step.contributions:
            total = total + RULES[v.op].backward(c, contrib.positions)
            if contrib.reduced_axes:
                total = total + numel(v.shape)  # summed over the broadcast axes (notes section 6)
            if contrib.accumulated:
                total = total + numel(d.value(contrib.operand).shape)  # fan-out (notes section 3)
        bwd[v.entry] = bwd.get(v.entry, ZERO) + total
    return [EntryCost(name, fwd[name], bwd.get(name, ZERO)) for name, _, _ in d.entries if name in fwd]


def _ctx(d: Derivation, v: Value) -> CostCtx:
    return CostCtx(v, tuple(None if not isinstance(a, int) else d.value(a) for a in v.args))


# --------------------------------------------------------------------------------------------------
# memory: replay the generated functions on sizes


@dataclass(frozen=True)
class Memory:
    """Elements (multiply by the item size for bytes) of the generated functions' arrays."""

    cache: tuple[tuple[str, Dim, bool], ...]  # (field, elements, is the caller's input)
    forward_peak: tuple[Dim, ...]  # candidates for the maximum (none dominates another)
    backward_peak: tuple[Dim, ...]  # including the cache it reads
    fused_peak: tuple[Dim, ...]  # value_and_grad; () when the module has none
    unknown: tuple[str, ...]  # names whose shape was not known (should stay empty)


VIEW_METHODS = {"reshape", "swapaxes", "transpose", "view", "ravel"}
VIEW_FUNCS = {"np.expand_dims", "np.broadcast_to", "np.transpose", "np.squeeze", "np.asarray"}


def _dotted(e: ast.AST) -> str:
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Attribute):
        return _dotted(e.value) + "." + e.attr
    return ""


def _view_base(e: ast.AST) -> str | None:
    """The variable whose buffer an expression shares (a name, .T, a reshape, a basic subscript)."""
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Attribute) and e.attr == "T":
        return _view_base(e.value)
    if isinstance(e, ast.Call):
        if isinstance(e.func, ast.Attribute) and e.func.attr in VIEW_METHODS:
            return _view_base(e.func.value)
        if _dotted(e.func) in VIEW_FUNCS and e.args:
            return _view_base(e.args[0])
        for kw in e.keywords:
            if kw.arg == "out":
                return _view_base(kw.value)
    if isinstance(e, ast.Subscript):
        index = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
        basic = all(
            isinstance(i, (ast.Slice, ast.Constant)) or (isinstance(i, ast.Constant) and i.value is None)
            for i in index
        )
        return _view_base(e.value) if basic else None
    return None


class _Replay:
    def __init__(self, shapes: dict[str, tuple], params: set[str], held: dict[str, Dim] | None = None):
        self.shapes = shapes
        self.params = params
        self.buffers: dict[int, Dim] = {}
        self.refs: dict[int, int] = {}
        self.name_buf: dict[str, int] = {}
        self.next = 0
        self.peaks: list[Dim] = []
        self.unknown: list[str] = []
        for name, size in (held or {}).items():
            self.bind(name, self.alloc(size))
        self.snapshot()

    def alloc(self, size: Dim) -> int:
        self.next += 1
        self.buffers[self.next] = size
        self.refs[self.next] = 0
        return self.next

    def bind(self, name: str, buf: int | None) -> None:
        old = self.name_buf.pop(name, None)
        if buf is not None:
            self.name_buf[name] = buf
            self.refs[buf] += 1
        if old is not None:
            self.refs[old] -= 1
            if self.refs[old] == 0:
                del self.buffers[old]

    def snapshot(self) -> None:
        total = ZERO
        for size in self.buffers.values():
            total = total + size
        self.peaks.append(total)

    def assign(self, target: str, value: ast.AST) -> None:
        base = _view_base(value)
        if base is not None:  # an alias, a view or an out= call: no new array (None for an input's view)
            self.bind(target, self.name_buf.get(base))
            return
        shape = self.shapes.get(target)
        if shape is None:
            self.unknown.append(target)
            self.bind(target, None)
            return
        buf = self.alloc(numel(shape))
        self.snapshot()  # the new array exists while the old value of the name still does
        self.bind(target, buf)

    def run(self, body: list[ast.stmt]) -> list[str]:
        """Replay the statements; returns the names the function returns (directly or in a tuple)."""
        returned: list[str] = []
        for stmt in body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if isinstance(target, ast.Name):
                    self.assign(target.id, stmt.value)
                elif isinstance(target, ast.Tuple):  # x, y, ... = cache / _bind_dims(...)
                    for t in target.elts:
                        if isinstance(t, ast.Name):
                            self.bind(t.id, self.name_buf.get(t.id))
            elif isinstance(stmt, ast.Return) and stmt.value is not None:
                returned = [n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)]
        return returned


def _pareto(candidates: list[Dim]) -> tuple[Dim, ...]:
    """The candidates that no other candidate is provably at least as large as (for positive dims)."""
    unique = list(dict.fromkeys(candidates))
    keep = []
    for i, a in enumerate(unique):
        if not any(j != i and _at_least(b, a) for j, b in enumerate(unique)):
            keep.append(a)
    return tuple(keep)


def _at_least(b: Dim, a: Dim) -> bool:
    """b >= a for every choice of dims >= 1: each negative term of b - a is paid for by positive terms
    whose monomials it divides (``4*N*D*H - N*H >= 0`` since ``N*D*H >= N*H``).  Sufficient, not
    necessary: an unproven pair is reported as undecided."""
    diff = b + _k(-1, a)
    credit = {m: c for m, c in diff.terms if c > 0}
    for mono, coeff in sorted(((m, -c) for m, c in diff.terms if c < 0), key=lambda t: -len(t[0])):
        for m in sorted(credit, key=len):
            if coeff == 0:
                break
            if _divides(mono, m) and credit[m] > 0:
                used = min(coeff, credit[m])
                credit[m] -= used
                coeff -= used
        if coeff > 0:
            return False
    return True


def _divides(small: tuple[str, ...], big: tuple[str, ...]) -> bool:
    rest = list(big)
    for s in small:
        if s not in rest:
            return False
        rest.remove(s)
    return True


def memory(d: Derivation, module_text: str) -> Memory:
    tree = ast.parse(module_text)
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    inputs = {d.value(i).var for i in d.inputs}
    shapes = dict(d.shapes)
    fwd = _Replay(shapes, inputs)
    fwd.run(funcs["forward"].body)
    cache_call = _cache_call(funcs["forward"])
    fields = [a.id for a in cache_call.args if isinstance(a, ast.Name)]
    cache = []
    held = {}
    for name in fields:
        if name in d.dim_vars:
            continue  # an int size
        size = numel(shapes[name])
        cache.append((name, size, name in inputs))
        if name not in inputs:
            held[name] = size
    shapes["dout"] = d.value(d.output).shape  # backward's first line checks dout against it
    bwd = _Replay(shapes, inputs | {"dout", "dtype", "cache"}, held)
    bwd.run(funcs["backward"].body)
    fused: tuple[Dim, ...] = ()
    unknown = fwd.unknown + bwd.unknown
    if "value_and_grad" in funcs:
        vg = _Replay(shapes, inputs)
        vg.run(funcs["value_and_grad"].body)
        fused = _pareto(vg.peaks)
        unknown += vg.unknown
    return Memory(tuple(cache), _pareto(fwd.peaks), _pareto(bwd.peaks), fused, tuple(dict.fromkeys(unknown)))


def _cache_call(func: ast.FunctionDef) -> ast.Call:
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and _dotted(node.func) == "_Cache":
            return node
    raise ValueError("forward builds no _Cache")


# --------------------------------------------------------------------------------------------------
# showing dims


def evaluate(d: Dim, sizes: dict[str, int]) -> Dim:
    """Substitute the given sizes; symbols without a size stay symbolic."""
    out = ZERO
    for mono, coeff in d.terms:
        term = Dim.const(coeff)
        for s in mono:
            term = term * (Dim.const(sizes[s]) if s in sizes else Dim.sym(s))
        out = out + term
    return out


def show(d: Dim, order: tuple[str, ...] = (), sep: str = "*") -> str:
    """``2*N*D*H``: symbols in spec order (order of first appearance), higher degree terms first."""
    if not d.terms:
        return "0"
    rank = {s: i for i, s in enumerate(order)}

    def mono_key(item):
        mono, _ = item
        return (
            -len(mono),
            [rank.get(s, len(rank)) for s in sorted(mono, key=lambda s: rank.get(s, len(rank)))],
        )

    parts = []
    for mono, coeff in sorted(d.terms, key=mono_key):
        factors = sorted(mono, key=lambda s: (rank.get(s, len(rank)), s))
        # powers: N*N -> N^2
        shown = []
        for s in dict.fromkeys(factors):
            k = factors.count(s)
            shown.append(s if k == 1 else f"{s}^{k}")
        if coeff != 1 or not shown:
            shown.insert(0, f"{coeff:,}".replace(",", "_") if abs(coeff) >= 10**4 else str(coeff))
        parts.append(sep.join(shown))
    return " + ".join(parts).replace("+ -", "- ")


def human(value: int, unit: str) -> str:
    """``205.5 M`` FLOP, ``1.5 MiB``."""
    if unit == "B":
        for name, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{value} B"
    for name, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= size:
            return f"{value / size:.1f} {name}{unit}"
    return f"{value} {unit}"
