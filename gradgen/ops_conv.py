"""Op rows for padding, convolution and pooling: pad, conv1d, conv2d, max_pool2d, avg_pool2d.

Layouts follow torch: a convolution reads an input [N, C, *spatial] and weights [O, C/groups, *kernel]
(NCW/OIW for conv1d, NCHW/OIHW for conv2d) and computes the cross-correlation
y[n, o, h] = sum_{c, i} x_pad[n, c, h * stride + i * dilation] w[o, c, i] (per group, per spatial axis).
A pool slides a window over the last two axes of a tensor of any rank >= 2.

The forward pass takes a window view (``np.lib.stride_tricks.sliding_window_view``, no copy), copies it
once into contiguous columns [N, *out, C, *kernel] (im2col) and contracts them with the weights
(``np.tensordot``; ``np.einsum`` over the windows when there are groups).  The backward pass is
vectorized too:

- the weight gradient is one contraction of the output's cotangent with the same columns;
- the input gradient is col2im: g times the weights (one contraction) gives, for every output
  position and kernel term, what the input entry that term read receives; the slice of each kernel
  offset is added back at the positions that offset reads (position h * stride + i * dilation), one
  straight line per offset, unrolled here at build time;
- a pool's input gradient is one line per kernel offset (unrolled here, at build time): the cotangent
  of every window added into the input positions that offset reads, max-pool keeping only the window's
  first maximum (found by comparing each offset's entries with the pooled value).  No generated line loops over the batch, the channels or the positions.

Spatial sizes may be symbolic: an output size is (size + 2 * padding - dilation * (kernel - 1) - 1) //
stride + 1, a polynomial in the dims when the stride divides every symbolic term (``4*S`` pooled by 2
is ``2*S``); otherwise it is an error that says how to write the size.  Kernel sizes are literal ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from gradgen.dims import Dim, shape_str
from gradgen.expr import PREC, Bin, E, Index, Lit, Var, call, div, method, num
from gradgen.ir import TensorType
from gradgen.ops import P, Param, op

# --------------------------------------------------------------------------------------------------
# the configuration of a window op, normalized to one int per spatial axis


@dataclass(frozen=True)
class Conf:
    n: int  # spatial axes (the trailing n axes of the input)
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dil: tuple[int, ...]
    groups: int = 1

    @property
    def span(self) -> tuple[int, ...]:
        """How many input positions one window covers along each axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dil))

    def attrs(self) -> dict:
        return dict(stride=self.stride, padding=self.pad, dilation=self.dil, groups=self.groups)


def _ints(s, value, n: int, name: str, low: int) -> tuple[int, ...]:
    vals = value if isinstance(value, tuple) else (value,) * n
    if len(vals) != n:
        s.fail(f"{name} of {s.node.op} takes one int or {n} (one per spatial axis), not {len(vals)}")
    for v in vals:
        if v < low:
            s.fail(f"{name} of {s.node.op} must be at least {low}, got {v}")
    return tuple(vals)


CONV_N = {"conv1d": 1, "conv2d": 2}


def conv_conf(s) -> Conf:
    """A convolution's configuration, from the public op's attributes or an internal op's."""
    n = CONV_N.get(s.node.op) or s.attr("n")
    wshape = s.attr("shape") if s.node.op == "conv_weight_grad" else s.t(1).shape
    kernel = tuple(d.value for d in wshape[2:])
    groups = s.attr("groups")
    if groups < 1:
        s.fail(f"groups of {s.node.op} must be at least 1, got {groups}")
    return Conf(
        n,
        kernel,
        _ints(s, s.attr("stride"), n, "stride", 1),
        _ints(s, s.attr("padding"), n, "padding", 0),
        _ints(s, s.attr("dilation"), n, "dilation", 1),
        groups,
    )


def pool_conf(s) -> Conf:
    kernel = _ints(s, s.attr("kernel_size"), 2, "kernel_size", 1)
    stride = kernel if s.attr("stride") is None else _ints(s, s.attr("stride"), 2, "stride", 1)
    pad = _ints(s, s.attr("padding"), 2, "padding", 0)
    for p, k in zip(pad, kernel):
        if 2 * p > k:
            s.fail(f"padding of {s.node.op} must be at most half the kernel size ({k}), got {p}")
    return Conf(2, kernel, stride, pad, (1, 1))


def _exact_div(d: Dim, k: int) -> Dim | None:
    """d / k when k divides every coefficient of d (so the quotient is a dim for every size)."""
    if any(c % k for _, c in d.terms):
        return None
    return Dim._make({m: c // k for m, c in d.terms})


def out_size(s, size: Dim, k: int, stride: int, pad: int, dil: int, who: int) -> Dim:
    """(size + 2 pad - dil (k - 1) - 1) // stride + 1 as a dim, or a shape error that says why not."""
    room = size + Dim.const(2 * pad - dil * (k - 1) - 1)
    if room.is_const:
        if room.value < 0:
            s.fail(
                f"{s.node.op}: a window of {dil * (k - 1) + 1} does not fit into size {size} "
                f"(padded by {pad} on each side) of {s.where(who)}"
            )
        return Dim.const(room.value // stride + 1)
    const = dict(room.terms).get((), 0)
    symbolic = Dim._make({m: c for m, c in room.terms if m})
    quotient = _exact_div(symbolic, stride)
    if quotient is None:
        s.fail(
            f"{s.node.op} with stride {stride} cannot size its output from {size} ({s.where(who)}): "
            f"the stride must divide the symbolic part of size + 2*padding - {dil * (k - 1) + 1}; "
            f"write the size as a multiple of {stride} (like {stride}*H) or as a number"
        )
    return quotient + Dim.const(const // stride + 1)


def remainder(size: Dim, out: Dim, c: Conf, i: int) -> int:
    """Padded positions after the last window along spatial axis i (never read): always a number."""
    left = size + Dim.const(2 * c.pad[i] - c.span[i]) + Dim.const(-c.stride[i]) * (out + Dim.const(-1))
    assert left.is_const, left
    return left.value


# --------------------------------------------------------------------------------------------------
# emission helpers: ``c`` is any emission context (forward, backward or a derivative program's)


def tuple_lit(items) -> Lit:
    texts = [str(i) for i in items]
    return Lit("(" + ", ".join(texts) + ("," if len(texts) == 1 else "") + ")")


def pad_expr(src: E, lead: int, pads, value: E | None = None) -> E:
    """np.pad of the trailing axes by (before, after) pairs, the leading ``lead`` axes untouched."""
    widths = tuple_lit([(0, 0)] * lead + [tuple(p) for p in pads])
    if value is None:
        return call("np.pad", src, widths)
    return call("np.pad", src, widths, constant_values=value)


def windows_expr(src: E, rank: int, span, stride, dil) -> E:
    """The sliding windows of src's trailing axes: [*lead, *out, *window], strided and dilated."""
    n = len(span)
    axes = tuple(range(rank - n, rank))
    win = call(
        "np.lib.stride_tricks.sliding_window_view",
        src,
        tuple_lit(span),
        axis=tuple_lit(axes) if n > 1 else num(axes[0]),
    )
    steps = [":"] * (rank - n) + [f"::{s}" if s > 1 else ":" for s in stride]
    steps += [f"::{d}" if d > 1 else ":" for d in dil]
    while steps and steps[-1] == ":":
        steps.pop()
    return Index(win, tuple(Lit(t) for t in steps), False) if steps else win


def _crop(e: E, lead: int, pads) -> E:
    """e without the padding on its trailing axes (a view)."""
    if not any(pads):
        return e
    index = [Lit(":")] * lead + [Lit(f"{p}:{-p}" if p else ":") for p in pads]
    while index[-1].text == ":":
        index.pop()
    return Index(e, tuple(index), False)


def _group_dims(x_shape, w_shape, conf: Conf) -> tuple[Dim, Dim, Dim, Dim]:
    """The batch, the groups, and the output and input channels per group."""
    return x_shape[0], Dim.const(conf.groups), _exact_div(w_shape[0], conf.groups), w_shape[1]


LETTERS = "hwd"  # spatial output axes in einsum subscripts
KLETTERS = "ijk"  # kernel axes


def contract_conv(c, win: E, w: E, conf: Conf, x_shape, w_shape, out_shape) -> E:
    """y from the input's columns [N, *out, C, *kernel] (groups: its windows [N, C, *out, *kernel])
    and the weights [O, C/G, *kernel]."""
    n = conf.n
    if conf.groups == 1:
        axes_w = tuple(range(1, 2 + n))
        y = call("np.tensordot", win, w, axes=tuple_lit((tuple(range(1 + n, 2 + 2 * n)), axes_w)))
        return method(y, "transpose", *[num(a) for a in (0, n + 1) + tuple(range(1, n + 1))])
    o, k = LETTERS[:n], KLETTERS[:n]
    N, G, Og, Cg = _group_dims(x_shape, w_shape, conf)
    xs = method(win, "reshape", c.shape_tuple((N, G, Cg) + out_shape[2:] + w_shape[2:]))
    ws = method(w, "reshape", c.shape_tuple((G, Og, Cg) + w_shape[2:]))
    y = call("np.einsum", Lit(f'"ngc{o}{k},goc{k}->ngo{o}"'), xs, ws, optimize=Lit("True"))
    return method(y, "reshape", c.shape_tuple(out_shape))


def weight_grad(c, win: E, g: E, conf: Conf, x_shape, w_shape, out_shape) -> E:
    """dw = sum over the batch and the output positions of g times the input's windows."""
    n = conf.n
    if conf.groups == 1:  # the columns [N, *out, C, *kernel]: their leading axes are contracted
        axes = (0,) + tuple(range(2, 2 + n))
        return call("np.tensordot", g, win, axes=tuple_lit((axes, tuple(range(1 + n)))))
    o, k = LETTERS[:n], KLETTERS[:n]
    N, G, Og, Cg = _group_dims(x_shape, w_shape, conf)
    gs = method(g, "reshape", c.shape_tuple((N, G, Og) + out_shape[2:]))
    xs = method(win, "reshape", c.shape_tuple((N, G, Cg) + out_shape[2:] + w_shape[2:]))
    dw = call("np.einsum", Lit(f'"ngo{o},ngc{o}{k}->goc{k}"'), gs, xs, optimize=Lit("True"))
    return method(dw, "reshape", c.shape_tuple(w_shape))


def input_grad(c, g: E, w: E, conf: Conf, x_shape, w_shape, out_shape) -> E:
    """dx: g contracted with the weights gives, for every output position, the cotangent of each input
    entry its window read (columns [N, *out, C, *kernel]); each kernel offset's slice of them is added
    back where that offset reads, with the stride's step (one unrolled line per offset, col2im); the
    padding is cropped off.  The channels stay last until the end, so every line adds contiguous rows."""
    n = conf.n
    N = x_shape[0]
    padded = tuple(x_shape[2 + i] + Dim.const(2 * conf.pad[i]) for i in range(n))
    cols_shape = (N,) + out_shape[2:] + (x_shape[1],) + w_shape[2:]
    if conf.groups == 1:
        dcols = call("np.tensordot", g, w, axes=Lit("(1, 0)"))
    else:
        o, k = LETTERS[:n], KLETTERS[:n]
        _, G, Og, Cg = _group_dims(x_shape, w_shape, conf)
        gs = method(g, "reshape", c.shape_tuple((N, G, Og) + out_shape[2:]))
        ws = method(w, "reshape", c.shape_tuple((G, Og, Cg) + w_shape[2:]))
        dcols = call("np.einsum", Lit(f'"ngo{o},goc{k}->n{o}gc{k}"'), gs, ws, optimize=Lit("True"))
        dcols = method(dcols, "reshape", c.shape_tuple(cols_shape))
    dcols = c.temp("cols", dcols, cols_shape)
    grid_shape = (N,) + padded + (x_shape[1],)
    grid = c.temp("grid", call("np.zeros", c.shape_tuple(grid_shape), dtype=c.dtype()), grid_shape)
    rest = [remainder(x_shape[2 + i], out_shape[2 + i], conf, i) for i in range(n)]
    for offsets in product(*(range(k) for k in conf.kernel)):
        index = [Lit(":")]
        for i, at in enumerate(offsets):
            start, stop = at * conf.dil[i], -(conf.span[i] - 1 - at * conf.dil[i] + rest[i])
            step = f":{conf.stride[i]}" if conf.stride[i] > 1 else ""
            index.append(Lit(f"{start or ''}:{stop or ''}{step}"))
        first = not any(offsets)  # the first offset's positions are still zeros: written, not added
        term = Index(dcols, (Lit("..."),) + tuple(num(at) for at in offsets), False)
        c.stmt(grid, term, op="=" if first else "+=", index=tuple(index))
    inside = Index(grid, (Lit(":"),) + tuple(Lit(f"{p}:{-p}" if p else ":") for p in conf.pad), False)
    dx = inside if any(conf.pad) else grid
    return method(dx, "transpose", *[num(a) for a in (0, n + 1) + tuple(range(1, n + 1))])


# --------------------------------------------------------------------------------------------------
# convolutions


def _conv_shape(s) -> TensorType:
    x, w = s.types
    n = CONV_N[s.node.op]
    layout = "[N, C, W]" if n == 1 else "[N, C, H, W]"
    for i, t in enumerate((x, w)):
        if t.dtype != "float":
            s.fail(f"{s.node.op} needs float tensors, but {s.where(i)} is an {t.dtype} tensor")
    if x.rank != n + 2:
        s.fail(f"{s.node.op} needs an input {layout}, but {s.where(0)} has shape {shape_str(x.shape)}")
    if w.rank != n + 2:
        s.fail(
            f"{s.node.op} needs weights [O, C/groups{', K' * n}], but {s.where(1)} has shape {shape_str(w.shape)}"
        )
    for k, d in enumerate(w.shape[2:]):
        if not d.is_const:
            s.fail(f"{s.node.op} needs literal kernel sizes, but dim {k + 2} of {s.where(1)} is {d}")
    conf = conv_conf(s)
    if Dim.const(conf.groups) * w.shape[1] != x.shape[1]:
        s.fail(
            f"{s.node.op}: the input's channels {x.shape[1]} ({s.where(0)}) must be groups * the weights' "
            f"dim 1 = {conf.groups}*{w.shape[1]} ({s.where(1)})"
        )
    if _exact_div(w.shape[0], conf.groups) is None:
        s.fail(
            f"{s.node.op}: groups {conf.groups} must divide the output channels {w.shape[0]} ({s.where(1)})"
        )
    sizes = tuple(
        out_size(s, x.shape[2 + i], conf.kernel[i], conf.stride[i], conf.pad[i], conf.dil[i], 0)
        for i in range(n)
    )
    return TensorType((x.shape[0], w.shape[0]) + sizes, "float")


def _windows_of(c, x: E, x_shape, conf: Conf) -> Var:
    """The input's windows, padded with zeros first when the op pads (saved for the weight gradient)."""
    src = x
    if any(conf.pad):
        padded = x_shape[:2] + tuple(x_shape[2 + i] + Dim.const(2 * p) for i, p in enumerate(conf.pad))
        src = c.temp("pad", pad_expr(x, 2, [(p, p) for p in conf.pad]), padded)
    return windows_expr(src, 2 + conf.n, conf.span, conf.stride, conf.dil)


def columns(c, x: E, x_shape, w_shape, out_shape, conf: Conf) -> Var:
    """The input's windows, copied once into contiguous columns [N, *out, C, *kernel] (im2col): the
    forward product and the weight gradient then read them without another copy.  With groups, the
    windows themselves [N, C, *out, *kernel] (the grouped einsum reads them as they are)."""
    win = c.temp("win", _windows_of(c, x, x_shape, conf), x_shape[:2] + out_shape[2:] + w_shape[2:])
    if conf.groups > 1:
        return win
    n = conf.n
    order = (0,) + tuple(range(2, 2 + n)) + (1,) + tuple(range(2 + n, 2 + 2 * n))
    cols = call("np.ascontiguousarray", method(win, "transpose", *[num(a) for a in order]))
    return c.temp("cols", cols, x_shape[:1] + out_shape[2:] + x_shape[1:2] + w_shape[2:])


def _conv_forward(f):
    conf = conv_conf(f)
    x_shape, w_shape = f.t(0).shape, f.t(1).shape
    cols = columns(f, f.a(0), x_shape, w_shape, f.out.shape, conf)
    return contract_conv(f, cols, f.a(1), conf, x_shape, w_shape, f.out.shape)


def _conv_vjp(b):
    conf = conv_conf(b)
    x_shape, w_shape = b.t(0).shape, b.t(1).shape
    dx = dw = None
    if b.needs(0):
        b.note(f"{b.node.op} rule, dx: g times the weights, added back per kernel offset")
        dx = input_grad(b, b.g, b.x(1), conf, x_shape, w_shape, b.out.shape)
    if b.needs(1):
        b.note(f"{b.node.op} rule, dw: g contracted with the input's columns")
        cols = b.saved("cols" if conf.groups == 1 else "win")
        dw = weight_grad(b, cols, b.g, conf, x_shape, w_shape, b.out.shape)
    return (dx, dw)


def _internal(r, conf: Conf) -> dict:
    return dict(n=conf.n, **conf.attrs())


def _conv_jvp(r):
    tx, tw = r.tangents
    attrs = conv_conf(r).attrs()
    a = r.op(r.node.op, tx, r.x(1), **attrs) if tx is not None else None
    b = r.op(r.node.op, r.x(0), tw, **attrs) if tw is not None else None
    return r.add(a, b)


def _conv_pullback(r):
    conf = conv_conf(r)
    at = _internal(r, conf)
    dx = r.op("conv_input_grad", r.g, r.x(1), shape=r.t(0).shape, **at)
    dw = r.op("conv_weight_grad", r.x(0), r.g, shape=r.t(1).shape, **at)
    return (dx, dw)


_CONV_PARAMS = (
    P("x"),
    P("w"),
    Param("stride", "ints", 1),
    Param("padding", "ints", 0),
    Param("dilation", "ints", 1),
    Param("groups", "int", 1),
)
_CONV_DERIVATION = """
y = B(x, w) is bilinear (a cross-correlation: notes section 5's product, with x's windows in the place
of a matrix), so dy = B(dx, w) + B(x, dw), and with T(x, w, g) = <g, B(x, w)> the cotangents are T's
gradients: dw[o, c, i] = sum_{n, h} g[n, o, h] x_pad[n, c, h s + i d], one contraction of g with the
input's columns (its windows, copied once in the forward pass), and dx_pad[n, c, p] = sum over the
(h, i) with p = h s + i d of g[n, o, h] w[o, c, i]: the product of g with the weights, each kernel
offset's slice added back where that offset reads (col2im), the padding cropped off.  The internal ops
conv_input_grad and conv_weight_grad are the other two gradients of T, so the pullbacks of all three
are made of the three.  Accuracy: a sum of C k terms per output, rounding as a matrix product of that
inner size."""


def _conv_row(name: str):
    @op(
        name,
        _CONV_PARAMS,
        rule=f"{name} rule: g times the weights added back per kernel offset; g times the columns",
        jvp_rule=f"{name} JVP rule: bilinear, one term per operand",
        zeros="any",
        fresh=True,
        derivation=_CONV_DERIVATION,
    )
    class Conv:
        shape = staticmethod(_conv_shape)
        forward = staticmethod(_conv_forward)
        vjp = staticmethod(_conv_vjp)
        jvp = staticmethod(_conv_jvp)
        pullback = staticmethod(_conv_pullback)
        batch = staticmethod(lambda r: conv_batch(r))

    return Conv


_conv_row("conv1d")
_conv_row("conv2d")


def _public_conv(r, conf: Conf) -> str:
    return "conv1d" if conf.n == 1 else "conv2d"


_INTERNAL_CONV = (
    Param("n", "int"),
    Param("stride", "ints"),
    Param("padding", "ints"),
    Param("dilation", "ints"),
    Param("groups", "int"),
    Param("shape", "dims"),
)


@op(
    "conv_input_grad",
    (P("g"), P("w")) + _INTERNAL_CONV,
    rule="convolution rule, dx: g times the weights, added back per kernel offset",
    internal=True,
    fresh=True,
    derivation="""
y = the input cotangent of a convolution, for the output cotangent g and weights w: bilinear in (g, w).
Its own cotangent c (input-shaped) gives g the convolution of c with w and w the weight cotangent of
(c, g), the other two gradients of T(x, w, g) = <g, conv(x, w)>.""",
)
class ConvInputGrad:
    shape = staticmethod(lambda s: TensorType(tuple(s.attr("shape")), "float"))
    batch = staticmethod(lambda r: conv_batch(r))

    @staticmethod
    def forward(f):
        conf = conv_conf(f)
        return input_grad(f, f.a(0), f.a(1), conf, tuple(f.attr("shape")), f.t(1).shape, f.t(0).shape)

    @staticmethod
    def jvp(r):
        tg, tw = r.tangents
        at = dict(shape=r.attr("shape"), **_internal(r, conv_conf(r)))
        a = r.op("conv_input_grad", tg, r.x(1), **at) if tg is not None else None
        b = r.op("conv_input_grad", r.x(0), tw, **at) if tw is not None else None
        return r.add(a, b)

    @staticmethod
    def pullback(r):
        conf = conv_conf(r)
        dg = r.op(_public_conv(r, conf), r.g, r.x(1), **conf.attrs())
        dw = r.op("conv_weight_grad", r.g, r.x(0), shape=r.t(1).shape, **_internal(r, conf))
        return (dg, dw)


@op(
    "conv_weight_grad",
    (P("x"), P("g")) + _INTERNAL_CONV,
    rule="convolution rule, dw: g contracted with the input's columns",
    internal=True,
    fresh=True,
    derivation="""
y = the weight cotangent of a convolution of x, for the output cotangent g: bilinear in (x, g).  Its
own cotangent c (weight-shaped) gives x the input cotangent of (g, c) and g the convolution of x with c.""",
)
class ConvWeightGrad:
    shape = staticmethod(lambda s: TensorType(tuple(s.attr("shape")), "float"))
    batch = staticmethod(lambda r: conv_batch(r))

    @staticmethod
    def forward(f):
        conf = conv_conf(f)
        x_shape, w_shape = f.t(0).shape, tuple(f.attr("shape"))
        cols = columns(f, f.a(0), x_shape, w_shape, f.t(1).shape, conf)
        return weight_grad(f, cols, f.a(1), conf, x_shape, w_shape, f.t(1).shape)

    @staticmethod
    def jvp(r):
        tx, tg = r.tangents
        at = dict(shape=r.attr("shape"), **_internal(r, conv_conf(r)))
        a = r.op("conv_weight_grad", tx, r.x(1), **at) if tx is not None else None
        b = r.op("conv_weight_grad", r.x(0), tg, **at) if tg is not None else None
        return r.add(a, b)

    @staticmethod
    def pullback(r):
        conf = conv_conf(r)
        dx = r.op("conv_input_grad", r.x(1), r.g, shape=r.t(0).shape, **_internal(r, conf))
        dg = r.op(_public_conv(r, conf), r.x(0), r.g, **conf.attrs())
        return (dx, dg)


# --------------------------------------------------------------------------------------------------
# pooling over the last two axes


def _pool_shape(s) -> TensorType:
    x = s.types[0]
    if x.dtype != "float":
        s.fail(f"{s.node.op} needs a float tensor, but {s.where(0)} is an {x.dtype} tensor")
    if x.rank < 2:
        s.fail(f"{s.node.op} pools the last two axes, but {s.where(0)} has shape {shape_str(x.shape)}")
    conf = pool_conf(s)
    lead = x.rank - 2
    sizes = tuple(
        out_size(s, x.shape[lead + i], conf.kernel[i], conf.stride[i], conf.pad[i], 1, 0) for i in range(2)
    )
    return TensorType(x.shape[:lead] + sizes, "float")


def _pool_windows(c, x: E, x_shape, conf: Conf, fill: E) -> E:
    lead = len(x_shape) - 2
    src = x
    if any(conf.pad):
        padded = x_shape[:lead] + tuple(x_shape[lead + i] + Dim.const(2 * p) for i, p in enumerate(conf.pad))
        src = c.temp("pad", pad_expr(x, lead, [(p, p) for p in conf.pad], fill), padded)
    return windows_expr(src, len(x_shape), conf.kernel, conf.stride, conf.dil)


def _argmax(c, win: E, out_shape, conf: Conf) -> Var:
    """Each window's first maximum, as a flat offset i * kw + j into the window (torch's choice)."""
    flat = method(
        win, "reshape", c.shape_tuple(tuple(out_shape) + (Dim.const(conf.kernel[0] * conf.kernel[1]),))
    )
    return c.temp("arg", method(flat, "argmax", axis=Lit("-1")), out_shape)


def scatter_windows(c, g: E, x_shape, out_shape, conf: Conf, part, like: E | None = None) -> E:
    """x's cotangent from one term per kernel offset (i, j), unrolled: ``part(i, j, index)`` is what
    every window sends to the input position it reads at that offset (``index`` selects those positions
    of the padded input, with the stride's step); it is added in there."""
    lead = len(x_shape) - 2
    padded = x_shape[:lead] + tuple(x_shape[lead + i] + Dim.const(2 * p) for i, p in enumerate(conf.pad))
    # zeros laid out in memory like the (padded) input when there is one: the lines that follow, and
    # whatever reads the gradient next, then walk both in the same order
    zeros = (
        call("np.zeros_like", like)
        if like is not None
        else call("np.zeros", c.shape_tuple(padded), dtype=c.dtype())
    )
    dx = c.temp("grid", zeros, padded)
    rest = [remainder(x_shape[lead + a], out_shape[lead + a], conf, a) for a in range(2)]
    kh, kw = conf.kernel
    for i in range(kh):
        for j in range(kw):
            index = [Lit("...")]
            for offset, k, s, r in ((i, kh, conf.stride[0], rest[0]), (j, kw, conf.stride[1], rest[1])):
                stop = -(k - 1 - offset + r)
                step = f":{s}" if s > 1 else ""
                index.append(Lit(f"{offset or ''}:{stop if stop else ''}{step}"))
            op_ = "=" if i == j == 0 else "+="  # the first offset writes into zeros
            c.stmt(dx, part(i, j, tuple(index)), op=op_, index=tuple(index))
    return _crop(dx, lead, conf.pad)


@dataclass(frozen=True)
class Invert(E):
    """``~a``: a boolean mask's complement."""

    a: E
    prec = PREC["neg"]

    def render(self):
        inner = self.a.render()
        return "~" + (f"({inner})" if self.a.prec < self.prec else inner)

    def vars(self):
        return self.a.vars()

    def rename(self, m):
        return Invert(self.a.rename(m))


def route_max(c, g: E, xp: E, y: E, x_shape, out_shape, conf: Conf) -> E:
    """g added at each window's first maximum: the offsets are visited in row-major order, and an
    offset whose entry equals the window's maximum takes g unless an earlier offset took it (``free``
    says which windows have not found theirs yet)."""
    last = (conf.kernel[0] - 1, conf.kernel[1] - 1)
    state = {}

    def part(i, j, index):
        hit = Bin("==", Index(xp, index, False), y)
        if "free" in state:
            hit = call("np.logical_and", hit, state["free"])
        hit = c.temp("hit", hit, out_shape)
        if (i, j) != last:
            if "free" in state:
                c.stmt(state["free"], Invert(hit), op="&=")
            else:
                state["free"] = c.temp("free", Invert(hit), out_shape)
        return Bin("*", g, hit)

    return scatter_windows(c, g, x_shape, out_shape, conf, part, like=xp)


def pick_max(c, t: E, arg: E, x_shape, out_shape, conf: Conf) -> E:
    """t at each window's maximum (of x): the tangent of a max-pool."""
    twin = _pool_windows(c, t, x_shape, conf, None)
    kk = Dim.const(conf.kernel[0] * conf.kernel[1])
    flat = method(twin, "reshape", c.shape_tuple(tuple(out_shape) + (kk,)))
    picked = call("np.take_along_axis", flat, Index(arg, (Lit("..."), Lit("None")), False), axis=Lit("-1"))
    return Index(picked, (Lit("..."), Lit("0")), False)


_POOL_PARAMS = (
    P("x"),
    Param("kernel_size", "ints", required=True),
    Param("stride", "ints", None),
    Param("padding", "ints", 0),
)


@op(
    "max_pool2d",
    _POOL_PARAMS,
    rule="max-pool rule: g to each window's first maximum",
    jvp_rule="max-pool JVP rule: the tangent at each window's maximum",
    zeros="all",
    fresh=True,
    derivation="""
y = the maximum of each window (padding counts as -inf, so it is never picked).  Where a window's
maximum is unique y is locally that entry, so dy = dx at the window's argmax and x's cotangent collects
g from every window whose maximum it is (a position in several overlapping windows adds them).  At
ties the whole cotangent goes to the first maximum in row-major window order, as torch's max_pool2d
does (a one-sided derivative, not the even split of the max reduction).  Exact: the forward picks
entries, the backward adds at most k*k window cotangents per position.""",
)
class MaxPool2d:
    shape = staticmethod(_pool_shape)

    @staticmethod
    def forward(f):
        conf = pool_conf(f)
        win = f.temp(
            "win",
            _pool_windows(f, f.a(0), f.t(0).shape, conf, Lit("-np.inf")),
            f.out.shape + (Dim.const(conf.kernel[0]), Dim.const(conf.kernel[1])),
        )
        return method(win, "max", axis=Lit("(-2, -1)"))

    @staticmethod
    def vjp(b):
        conf = pool_conf(b)
        xp = b.saved("pad") if any(conf.pad) else b.x(0)
        return (route_max(b, b.g, xp, b.y, b.t(0).shape, b.out.shape, conf),)

    @staticmethod
    def jvp(r):
        return r.op("pool_pick", r.tangents[0], r.x(0), **_pool_attrs(r))

    @staticmethod
    def pullback(r):
        return (r.op("pool_route", r.g, r.x(0), **_pool_attrs(r)),)

    batch = staticmethod(lambda r: r.node_like(r.batched[0]))


def _pool_attrs(r) -> dict:
    conf = pool_conf(r)
    return dict(kernel_size=conf.kernel, stride=conf.stride, padding=conf.pad)


def _pair_batch(r):
    """An internal pool op of (a tangent or cotangent, x) with a leading batch axis on either."""
    parts = [
        xb if xb is not None else r.broadcast(r.x(k), (r.size_dim,) + r.t(k).shape)
        for k, xb in enumerate(r.batched)
    ]
    return r.op(r.node.op, *parts, **_pool_attrs(r))


class _PoolPair:
    """pool_pick(t, x) and pool_route(g, x): linear in operand 0, x only says where the maxima are."""

    @staticmethod
    def _arg(f):
        conf = pool_conf(f)
        x_shape = f.t(1).shape
        out_shape = f.out.shape if f.node.op == "pool_pick" else f.t(0).shape
        win = _pool_windows(f, f.a(1), x_shape, conf, Lit("-np.inf"))
        return conf, x_shape, out_shape, _argmax(f, win, out_shape, conf)

    @staticmethod
    def _max(f):
        """x padded with -inf (or x) and its windows' maxima, for pool_route."""
        conf = pool_conf(f)
        x_shape, out_shape = f.t(1).shape, f.t(0).shape
        win = _pool_windows(f, f.a(1), x_shape, conf, Lit("-np.inf"))
        xp = f.p.fwd_temps.get((f.node.id, "pad"))
        y = f.temp("max", method(win, "max", axis=Lit("(-2, -1)")), out_shape)
        return conf, x_shape, out_shape, Var(xp) if xp else f.a(1), y

    batch = staticmethod(_pair_batch)


@op(
    "pool_pick",
    (P("t"), P("x"), Param("kernel_size", "ints"), Param("stride", "ints"), Param("padding", "ints")),
    rule="max-pool JVP rule: the tangent at each window's maximum",
    internal=True,
    fresh=True,
    linear=True,
    derivation="y = t at each window's first maximum of x: linear in t; its transpose is pool_route.",
)
class PoolPick(_PoolPair):
    @staticmethod
    def shape(s):
        return _pool_shape_of(s, s.types[1])

    @staticmethod
    def forward(f):
        conf, x_shape, out_shape, arg = _PoolPair._arg(f)
        return pick_max(f, f.a(0), arg, x_shape, out_shape, conf)

    pullback = staticmethod(lambda r: (r.op("pool_route", r.g, r.x(1), **_pool_attrs(r)), None))


@op(
    "pool_route",
    (P("g"), P("x"), Param("kernel_size", "ints"), Param("stride", "ints"), Param("padding", "ints")),
    rule="max-pool rule: g to each window's first maximum",
    internal=True,
    fresh=True,
    linear=True,
    derivation="y = g added at each window's first maximum of x, zeros elsewhere: linear in g.",
)
class PoolRoute(_PoolPair):
    shape = staticmethod(lambda s: TensorType(s.types[1].shape, "float"))

    @staticmethod
    def forward(f):
        conf, x_shape, out_shape, xp, y = _PoolPair._max(f)
        return route_max(f, f.a(0), xp, y, x_shape, out_shape, conf)

    pullback = staticmethod(lambda r: (r.op("pool_pick", r.g, r.x(1), **_pool_attrs(r)), None))


def _pool_shape_of(s, x: TensorType) -> TensorType:
    conf = pool_conf(s)
    lead = x.rank - 2
    sizes = tuple(
        out_size(s, x.shape[lead + i], conf.kernel[i], conf.stride[i], conf.pad[i], 1, 1) for i in range(2)
    )
    return TensorType(x.shape[:lead] + sizes, "float")


@op(
    "avg_pool2d",
    _POOL_PARAMS,
    rule="average-pool rule: each window's cotangent shared evenly",
    zeros="all",
    fresh=True,
    linear=True,
    derivation="""
y = the mean of each window, padding counted as zeros in the k*k (torch's count_include_pad=True).
Linear, so every position of a window receives g / (k*k) of that window, summed over the windows that
read it (one unrolled line per kernel offset).  Accuracy: a mean of k*k terms.""",
)
class AvgPool2d:
    shape = staticmethod(_pool_shape)

    @staticmethod
    def forward(f):
        conf = pool_conf(f)
        win = _pool_windows(f, f.a(0), f.t(0).shape, conf, None)
        return method(win, "mean", axis=Lit("(-2, -1)"))

    @staticmethod
    def vjp(b):
        conf = pool_conf(b)
        share = b.temp("share", div(b.g, num(conf.kernel[0] * conf.kernel[1])), b.out.shape)
        return (scatter_windows(b, share, b.t(0).shape, b.out.shape, conf, lambda i, j, at: share),)

    @staticmethod
    def pullback(r):
        return (r.op("avg_pool_t", r.g, shape=r.t(0).shape, **_pool_attrs(r)),)

    batch = staticmethod(lambda r: r.node_like(r.batched[0]))


@op(
    "avg_pool_t",
    (
        P("g"),
        Param("kernel_size", "ints"),
        Param("stride", "ints"),
        Param("padding", "ints"),
        Param("shape", "dims"),
    ),
    rule="average-pool rule: each window's cotangent shared evenly",
    internal=True,
    fresh=True,
    linear=True,
    derivation="y = the transpose of avg_pool2d: g / (k*k) of each window added at every position it reads.",
)
class AvgPoolT:
    shape = staticmethod(lambda s: TensorType(tuple(s.attr("shape")), "float"))

    @staticmethod
    def forward(f):
        conf = pool_conf(f)
        share = f.temp("share", div(f.a(0), num(conf.kernel[0] * conf.kernel[1])), f.t(0).shape)
        return scatter_windows(f, share, tuple(f.attr("shape")), f.t(0).shape, conf, lambda i, j, at: share)

    pullback = staticmethod(lambda r: (r.op("avg_pool2d", r.g, **_pool_attrs(r)),))
    batch = staticmethod(lambda r: r.node_like(r.batched[0], shape=(r.size_dim,) + tuple(r.attr("shape"))))


# --------------------------------------------------------------------------------------------------
# pad


def pad_widths(s) -> tuple[tuple[int, int], ...]:
    """pad's widths as one (before, after) pair per axis: an int pads every axis on both sides."""
    t = s.types[0]
    widths = s.attr("widths")
    if isinstance(widths, int):
        widths = ((widths, widths),) * t.rank
    if len(widths) != t.rank:
        s.fail(
            f"pad needs one (before, after) pair per axis: {s.where(0)} has rank {t.rank} "
            f"(shape {shape_str(t.shape)}), got {len(widths)} pair{'s' if len(widths) != 1 else ''}"
        )
    for pair in widths:
        if min(pair) < 0:
            s.fail(f"pad widths must not be negative, got {pair}")
    return tuple(widths)


@op(
    "pad",
    (P("a"), Param("widths", "widths", required=True), Param("value", "number", 0)),
    rule="pad rule: crop the padding off",
    jvp_rule="pad JVP rule: the tangent padded with zeros",
    fresh=True,
    derivation="""
y = a with constant borders (np.pad): the borders do not depend on a, the inside is a, so a's
cotangent is g without its borders (a view of g), and the tangent is a's tangent padded with zeros
(whatever the fill value).  Exact.""",
)
class Pad:
    @staticmethod
    def shape(s):
        t = s.types[0]
        if t.dtype != "float":
            s.fail(f"pad needs a float tensor, but {s.where(0)} is an {t.dtype} tensor")
        widths = pad_widths(s)
        return TensorType(tuple(d + Dim.const(lo + hi) for d, (lo, hi) in zip(t.shape, widths)), "float")

    @staticmethod
    def forward(f):
        value = f.attr("value")
        return pad_expr(f.a(0), 0, pad_widths(f), num(value) if value else None)

    @staticmethod
    def vjp(b):
        widths = pad_widths(b)
        index = [Lit(f"{lo or ''}:{-hi if hi else ''}") for lo, hi in widths]
        while index and index[-1].text == ":":
            index.pop()
        return (Index(b.g, tuple(index), False) if index else b.g,)

    @staticmethod
    def jvp(r):
        return r.op("pad", r.tangents[0], widths=pad_widths(r), value=0)

    @staticmethod
    def pullback(r):
        g = r.g
        for ax, (lo, hi) in enumerate(pad_widths(r)):
            if lo or hi:
                size = r.t(0).shape[ax]
                g = r.op("slice_axis", g, axis=ax, start=Dim.const(lo), stop=Dim.const(lo) + size)
        return (g,)

    @staticmethod
    def batch(r):
        return r.node_like(r.batched[0], widths=((0, 0),) + pad_widths(r))


# --------------------------------------------------------------------------------------------------
# batching the convolutions (a leading axis of size B on one operand: jacobian, hessian)

# which operands (and the result) hold samples [N, channels, *spatial] ("n") or weights [O, C/G, *k]
CONV_ROLES = {
    "conv1d": ("n", "w", "n"),
    "conv2d": ("n", "w", "n"),
    "conv_input_grad": ("n", "w", "n"),
    "conv_weight_grad": ("n", "n", "w"),
}


def _conv_again(r, a, b, shape=None):
    """This node's op on new operands (an internal op with the result shape it is given)."""
    attrs = dict(r.node.attrs)
    if shape is not None:
        attrs["shape"] = tuple(shape)
    return r.op(r.node.op, a, b, **attrs)


def conv_batch(r):
    """The batch axis B goes where the op already has a free axis, so the same op computes all B:
    into the samples (B*N) when the batched operand holds samples and so does the result; otherwise
    into a channel axis, laid out [groups, B, channels per group] so that every group still reads
    its own channels and every b only its own slice (the inverse split takes B out of the result).
    Both operands batched is not supported: jacobian and hessian batch one operand of each bilinear
    term, the other being a value of the forward pass."""
    from gradgen.derive import Unsupported, _source

    roles = CONV_ROLES[r.node.op]
    k = [i for i, xb in enumerate(r.batched) if xb is not None]
    if len(k) != 1:
        raise Unsupported(r.node.op, _source(r), "batch")
    i = k[0]
    B, xb, ts, out = r.size_dim, r.batched[i], r.t(i).shape, r.out.shape
    internal = r.node.op.startswith("conv_")
    args = [r.x(0), r.x(1)]
    if roles[i] == roles[2] == "n":  # samples: fold B into N
        args[i] = r.reshape(xb, (B * ts[0],) + ts[1:])
        y = _conv_again(r, *args, shape=(B * out[0],) + out[1:] if internal else None)
        return r.reshape(y, (B,) + out)
    G = r.attr("groups")
    # (operand axis that takes B, its groups; result axis that gives B back, its groups)
    merge_ax, merge_g, split_ax, split_g = {
        ("conv1d", 1): (0, G, 1, G),
        ("conv2d", 1): (0, G, 1, G),
        ("conv_input_grad", 1): (1, 1, 1, G),
        ("conv_weight_grad", 0): (1, G, 1, 1),
        ("conv_weight_grad", 1): (1, G, 0, G),
    }[(r.node.op, i)]
    args[i] = _merge_batch(r, xb, ts, merge_ax, merge_g)
    grown = out[:split_ax] + (B * out[split_ax],) + out[split_ax + 1 :]
    y = _conv_again(r, *args, shape=grown if internal else None)
    return _split_batch(r, y, out, split_ax, split_g)


def _merge_batch(r, xb, shape, ax: int, groups: int):
    """[B, *shape] -> shape with axis ax (groups * X long) grown to groups * B * X, b after the group."""
    B, X = r.size_dim, _exact_div(shape[ax], groups)
    G = Dim.const(groups)
    t = r.reshape(xb, (B,) + shape[:ax] + (G, X) + shape[ax + 1 :])
    perm = tuple(range(1, ax + 2)) + (0,) + tuple(range(ax + 2, len(shape) + 2))
    return r.reshape(r.transpose(t, perm), shape[:ax] + (G * B * X,) + shape[ax + 1 :])


def _split_batch(r, y, shape, ax: int, groups: int):
    """The inverse of _merge_batch on a result: axis ax (groups * B * X long) -> [B, *shape]."""
    B, X = r.size_dim, _exact_div(shape[ax], groups)
    G = Dim.const(groups)
    t = r.reshape(y, shape[:ax] + (G, B, X) + shape[ax + 1 :])
    perm = (ax + 1,) + tuple(range(ax + 1)) + tuple(range(ax + 2, len(shape) + 2))
    return r.reshape(r.transpose(t, perm), (B,) + shape)


def window_needs(tg, node) -> list[tuple[Dim, int, str]]:
    """(input size, least size, what) per spatial axis of a convolution or pool node."""

    class _At:  # the shape rules' view of the node, for conv_conf and pool_conf
        def __init__(self):
            self.node, self.types = node, [tg.types[a] if isinstance(a, int) else None for a in node.args]

        def attr(self, key, default=None):
            return node.attr(key, default)

        def t(self, i):
            return self.types[i]

    at = _At()
    conf = pool_conf(at) if node.op.endswith("pool2d") else conv_conf(at)
    x = at.types[0]
    out = []
    for i in range(conf.n):
        need = conf.span[i] - 2 * conf.pad[i]
        out.append((x.shape[x.rank - conf.n + i], need, f"a window of {conf.span[i]}"))
    return out
