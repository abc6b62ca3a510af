"""Hand-written expert NumPy forward mode (jvp) and Hessian-vector products (hvp) for the derivative
benchmarks (issue 8): the tanh MLP with softmax cross-entropy (``specs/mlp_tanh.yaml``) and the attention
block (``benchmarks/specs/attention_hvp.yaml``, ``specs/attention.yaml`` with its values named ``val``).

Written independently of the generator (nothing here reads gradgen's code or output) and checked against
central differences of the plain forward pass in ``tests/test_benchmark_derivatives.py``.  Expert habits:
batch dims folded into 2-D products; every temporary a buffer of this function, updated in place; row dot
products by einsum (no [.., C] temporary); float32 kept (only Python scalars mixed in).

``jvp(*inputs, tangents) -> (loss, loss_dot)``; ``hvp(*inputs, v) -> (loss, grads, hv)``, grads and hv in
``wrt`` order.
"""

from __future__ import annotations

import numpy as np


def _rowdot(a, b):
    """sum(a * b, axis=-1, keepdims=True) without an [.., C] temporary."""
    return np.einsum("...j,...j->...", a, b)[..., None]


# ---------------------------------------------------------------------------------------------------------
# tanh MLP: h = tanh(x @ W1 + b1); logits = h @ W2 + b2; loss = mean sce(logits, y); wrt W1, b1, W2, b2


def _mlp_forward(x, y, W1, b1, W2, b2, dW1, db1, dW2, db2):
    """The forward pass and its tangent: h, 1 - h^2, h_dot, probabilities, logits_dot, loss."""
    n = x.shape[0]
    rows = np.arange(n)
    h = x @ W1
    h += b1
    np.tanh(h, out=h)
    hd = x @ dW1
    hd += db1
    slope = h * h  # 1 - h^2, the tanh derivative, kept for the backward pass
    np.subtract(1.0, slope, out=slope)
    hd *= slope
    p = h @ W2
    p += b2
    ld = hd @ W2
    ld += h @ dW2
    ld += db2
    p -= p.max(axis=1, keepdims=True)
    picked = p[rows, y].sum()
    np.exp(p, out=p)
    sums = p.sum(axis=1, keepdims=True)
    loss = (np.log(sums).sum() - picked) / n
    p /= sums  # softmax
    return n, rows, h, slope, hd, p, ld, loss


def mlp_tanh_jvp(x, y, W1, b1, W2, b2, tangents):
    n, rows, _, _, _, p, ld, loss = _mlp_forward(x, y, W1, b1, W2, b2, *tangents)
    # d loss = (<softmax, d logits> - sum of d logits at the labels) / N
    loss_dot = (np.vdot(p, ld) - ld[rows, y].sum()) / n
    return loss, loss_dot


def mlp_tanh_hvp(x, y, W1, b1, W2, b2, v):
    dW1, db1, dW2, db2 = v
    n, rows, h, slope, hd, p, ld, loss = _mlp_forward(x, y, W1, b1, W2, b2, dW1, db1, dW2, db2)
    # tangent of the softmax: p * (ld - <p, ld>_row), then both scaled by 1/N
    pd = ld - _rowdot(ld, p)
    pd *= p
    pd *= 1.0 / n
    g = p  # dlogits = (softmax - onehot) / N, in p's buffer
    g *= 1.0 / n
    g[rows, y] -= 1.0 / n
    gW2 = h.T @ g
    gb2 = g.sum(axis=0)
    dh = g @ W2.T
    hW2 = hd.T @ g
    hW2 += h.T @ pd
    hb2 = pd.sum(axis=0)
    dhd = pd @ W2.T
    dhd += g @ dW2.T
    # dz = dh * (1 - h^2); its tangent dh_dot * (1 - h^2) - 2 h h_dot dh
    dhd *= slope
    hd *= h
    hd *= dh
    hd *= 2.0
    dhd -= hd
    dh *= slope
    gW1 = x.T @ dh
    gb1 = dh.sum(axis=0)
    hW1 = x.T @ dhd
    hb1 = dhd.sum(axis=0)
    return loss, (gW1, gb1, gW2, gb2), (hW1, hb1, hW2, hb2)


# ---------------------------------------------------------------------------------------------------------
# attention: q, k, v = x @ W{q,k,v}; attn = softmax(q k^T / 8); out = (attn v) @ Wo; loss = mean((out - x)^2)

SCALE = 1.0 / 8.0


def _attention_forward(x, Wq, Wk, Wv, Wo, dWq, dWk, dWv, dWo):
    B, T, D = x.shape
    K = Wq.shape[1]
    x2 = x.reshape(B * T, D)
    q = (x2 @ Wq).reshape(B, T, K)
    k = (x2 @ Wk).reshape(B, T, K)
    v = (x2 @ Wv).reshape(B, T, K)
    qd = (x2 @ dWq).reshape(B, T, K)
    kd = (x2 @ dWk).reshape(B, T, K)
    vd = (x2 @ dWv).reshape(B, T, K)
    kT = k.transpose(0, 2, 1)
    a = q @ kT
    a *= SCALE
    a -= a.max(axis=-1, keepdims=True)
    np.exp(a, out=a)
    a /= a.sum(axis=-1, keepdims=True)  # attn
    sd = qd @ kT
    sd += q @ kd.transpose(0, 2, 1)
    sd *= SCALE
    ad = sd  # attn_dot = attn * (s_dot - <s_dot, attn>_row), in s_dot's buffer
    ad -= _rowdot(sd, a)
    ad *= a
    ctx = (a @ v).reshape(B * T, K)
    cd = (ad @ v).reshape(B * T, K)
    cd += (a @ vd).reshape(B * T, K)
    r = ctx @ Wo
    r -= x2
    od = cd @ Wo
    od += ctx @ dWo
    loss = np.vdot(r, r) / r.size
    return (B, T, D, K), x2, q, k, v, qd, kd, vd, a, ad, ctx, cd, r, od, loss


def attention_jvp(x, Wq, Wk, Wv, Wo, tangents):
    *_, r, od, loss = _attention_forward(x, Wq, Wk, Wv, Wo, *tangents)
    return loss, 2.0 * np.vdot(r, od) / r.size


def attention_hvp(x, Wq, Wk, Wv, Wo, v_):
    dWq, dWk, dWv, dWo = v_
    (B, T, _, K), x2, q, k, v, qd, kd, vd, a, ad, ctx, cd, r, od, loss = _attention_forward(
        x, Wq, Wk, Wv, Wo, dWq, dWk, dWv, dWo
    )
    g = r  # dout = 2 r / size, in r's buffer; its tangent 2 od / size
    g *= 2.0 / r.size
    gd = od
    gd *= 2.0 / od.size
    gWo = ctx.T @ g
    hWo = cd.T @ g
    hWo += ctx.T @ gd
    dctx = (g @ Wo.T).reshape(B, T, K)
    dctxd = (gd @ Wo.T).reshape(B, T, K)
    dctxd += (g @ dWo.T).reshape(B, T, K)
    vT, aT = v.transpose(0, 2, 1), a.transpose(0, 2, 1)
    dv = aT @ dctx
    dvd = ad.transpose(0, 2, 1) @ dctx
    dvd += aT @ dctxd
    da = dctx @ vT
    dad = dctxd @ vT
    dad += dctx @ vd.transpose(0, 2, 1)
    # ds = a * (da - <da, a>); its tangent ad * (da - <da, a>) + a * (dad - <dad, a> - <da, ad>)
    rd = _rowdot(dad, a)
    rd += _rowdot(da, ad)
    da -= _rowdot(da, a)
    dsd = ad * da
    dad -= rd
    dad *= a
    dsd += dad
    da *= a  # ds
    da *= SCALE
    dsd *= SCALE
    dq = (da @ k).reshape(B * T, K)
    dqd = (dsd @ k).reshape(B * T, K)
    dqd += (da @ kd).reshape(B * T, K)
    daT = da.transpose(0, 2, 1)
    dk = (daT @ q).reshape(B * T, K)
    dkd = (dsd.transpose(0, 2, 1) @ q).reshape(B * T, K)
    dkd += (daT @ qd).reshape(B * T, K)
    xT = x2.T
    grads = (xT @ dq, xT @ dk, xT @ dv.reshape(B * T, K), gWo)
    hv = (xT @ dqd, xT @ dkd, xT @ dvd.reshape(B * T, K), hWo)
    return loss, grads, hv


WORKLOADS = {
    "mlp_tanh": {
        "jvp": mlp_tanh_jvp,
        "hvp": mlp_tanh_hvp,
        "inputs": ["x", "y", "W1", "b1", "W2", "b2"],
        "wrt": ["W1", "b1", "W2", "b2"],
        "base": "mlp",  # the value_and_grad workload with the same inputs (benchmarks/reference.py)
    },
    "attention_hvp": {
        "jvp": attention_jvp,
        "hvp": attention_hvp,
        "inputs": ["x", "Wq", "Wk", "Wv", "Wo"],
        "wrt": ["Wq", "Wk", "Wv", "Wo"],
        "base": "attention",
    },
}


def directions(workload, inputs, seed=1):
    """One random tangent per wrt input, shaped and typed like it."""
    rng = np.random.default_rng(seed)
    spec = WORKLOADS[workload]
    out = []
    for name in spec["wrt"]:
        a = inputs[spec["inputs"].index(name)]
        out.append(rng.standard_normal(a.shape).astype(a.dtype))
    return out
