"""Hand-written expert NumPy references for the benchmark workloads (issue 4).

Written independently of the generator: nothing here reads gradgen's code or output.
Each workload has

* ``value_and_grad(*inputs) -> (loss, grads)``: inputs in the order of the spec's ``inputs``,
  ``grads`` a tuple in the spec's ``wrt`` order;
* ``floor_setup(*inputs) -> tuple`` and ``floor(*arrays)``: the matrix products of one
  forward + backward step alone, on arrays of the same shapes and dtype (the "matrix products only"
  floor that no implementation of the step can beat).

Expert habits applied throughout:

* float32 stays float32: only Python scalars are mixed into arrays (NumPy 2 / NEP 50 keeps the array
  dtype for those), never NumPy float64 scalars;
* every temporary is a buffer this function owns, updated in place (``+=``, ``*=``, ``out=``), never the
  caller's arrays; ``.T`` / ``transpose`` are views; batch dims are folded into 2-D products;
* softmax cross-entropy with int labels: max shift, exp, normalise and subtract 1 (scaled by 1/N) at the
  label index in one buffer, with fancy indexing, no one-hot; the log only of the N row sums;
* relu's forward is done in place (``max(z, 0)``), and its saved output doubles as the mask (``h > 0``
  iff ``z > 0``); its backward multiplies by the mask (measured fastest on this machine, see README).
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# shared pieces


def _sce_int_mean_(logits, y):
    """Mean softmax cross-entropy with int labels; overwrites ``logits`` with dloss/dlogits.

    ``logits`` [N, C] must be a buffer owned by the caller's step. Returns ``(loss, logits)``.
    """
    n = logits.shape[0]
    rows = np.arange(n)
    logits -= logits.max(axis=1, keepdims=True)  # max shift (stability)
    picked = logits[rows, y]  # shifted logit at the label, [N] copy
    np.exp(logits, out=logits)
    s = logits.sum(axis=1, keepdims=True)  # [N, 1]
    loss = (np.log(s).sum() - picked.sum()) / n  # sum_i log(sum_c e) - theta_y, / N
    logits *= (1.0 / n) / s  # softmax / N: one [N, 1] division, then one multiply of the buffer
    logits[rows, y] -= 1.0 / n  # minus one-hot / N, no one-hot matrix
    return loss, logits


# ---------------------------------------------------------------------------------------------------------
# mlp: z1 = x @ W1 + b1; h = relu(z1); logits = h @ W2 + b2; loss = sce(logits, y); wrt W1, b1, W2, b2


def mlp_value_and_grad(x, y, W1, b1, W2, b2):
    h = x @ W1  # [N, H], own buffer
    h += b1
    np.maximum(h, 0, out=h)  # relu in place; h > 0 exactly where z1 > 0
    d = h @ W2  # logits [N, C]
    d += b2
    loss, d = _sce_int_mean_(d, y)  # d = dlogits
    dW2 = h.T @ d
    db2 = d.sum(axis=0)
    dh = d @ W2.T  # [N, H]
    dh *= h > 0  # relu backward: mask multiply
    dW1 = x.T @ dh
    db1 = dh.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def mlp_value_and_grad_where(x, y, W1, b1, W2, b2):
    """Variant: relu backward via np.where (kept for the README measurement)."""
    h = x @ W1
    h += b1
    np.maximum(h, 0, out=h)
    d = h @ W2
    d += b2
    loss, d = _sce_int_mean_(d, y)
    dW2 = h.T @ d
    db2 = d.sum(axis=0)
    dh = np.where(h > 0, d @ W2.T, 0)
    dW1 = x.T @ dh
    db1 = dh.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def mlp_floor_setup(x, y, W1, b1, W2, b2):
    rng = np.random.default_rng(1)
    n, h, c = x.shape[0], W1.shape[1], W2.shape[1]
    hh = rng.standard_normal((n, h)).astype(x.dtype)
    dd = rng.standard_normal((n, c)).astype(x.dtype)
    dh = rng.standard_normal((n, h)).astype(x.dtype)
    return (x, W1, W2, hh, dd, dh)


def mlp_floor(x, W1, W2, h, d, dh):
    x @ W1
    h @ W2
    h.T @ d
    d @ W2.T
    x.T @ dh


# ---------------------------------------------------------------------------------------------------------
# logistic_regression: logits = x @ W + b; loss = sce(logits, y); wrt W, b


def logistic_regression_value_and_grad(x, y, W, b):
    d = x @ W  # logits [N, C], own buffer
    d += b
    loss, d = _sce_int_mean_(d, y)
    dW = x.T @ d
    db = d.sum(axis=0)
    return loss, (dW, db)


def logistic_regression_floor_setup(x, y, W, b):
    rng = np.random.default_rng(1)
    d = rng.standard_normal((x.shape[0], W.shape[1])).astype(x.dtype)
    return (x, W, d)


def logistic_regression_floor(x, W, d):
    x @ W
    x.T @ d


# ---------------------------------------------------------------------------------------------------------
# attention: q,k,v = x @ W{q,k,v}; scores = q @ k^T / 8; attn = softmax(scores); ctx = attn @ v;
#            out = ctx @ Wo; loss = mean((out - x)^2); wrt Wq, Wk, Wv, Wo

ATTENTION_SCALE = 1.0 / 8.0  # the spec's "/ 8.0"


def attention_value_and_grad(x, Wq, Wk, Wv, Wo):
    B, T, D = x.shape
    K = Wq.shape[1]
    M = B * T
    x2 = x.reshape(M, D)  # batch dims folded: one 2-D product per projection
    qs = (x2 @ (Wq * ATTENTION_SCALE)).reshape(B, T, K)  # scale folded into Wq ([D, K], cheap)
    k = (x2 @ Wk).reshape(B, T, K)
    v = (x2 @ Wv).reshape(B, T, K)
    a = qs @ k.transpose(0, 2, 1)  # scores [B, T, T], own buffer
    a -= a.max(axis=-1, keepdims=True)  # softmax in place
    np.exp(a, out=a)
    s = a.sum(axis=-1, keepdims=True)
    np.reciprocal(s, out=s)
    a *= s  # a = attn
    ctx2 = (a @ v).reshape(M, K)
    diff = ctx2 @ Wo  # [M, D]
    diff -= x2
    loss = np.vdot(diff, diff) / diff.size  # mean square via one BLAS dot
    diff *= 2.0 / diff.size  # dout
    dWo = ctx2.T @ diff
    dctx = (diff @ Wo.T).reshape(B, T, K)
    dv = a.transpose(0, 2, 1) @ dctx
    da = dctx @ v.transpose(0, 2, 1)  # [B, T, T]
    # softmax backward in place: ds = a * (da - sum(da * a, -1))
    r = np.einsum("btj,btj->bt", da, a)
    da -= r[..., None]
    da *= a
    dqs = da @ k
    dk = da.transpose(0, 2, 1) @ qs
    dWq = x2.T @ dqs.reshape(M, K)
    dWq *= ATTENTION_SCALE
    dWk = x2.T @ dk.reshape(M, K)
    dWv = x2.T @ dv.reshape(M, K)
    return loss, (dWq, dWk, dWv, dWo)


def attention_floor_setup(x, Wq, Wk, Wv, Wo):
    rng = np.random.default_rng(1)
    B, T, D = x.shape
    K = Wq.shape[1]
    dt = x.dtype

    def r(*shape):
        return rng.standard_normal(shape).astype(dt)

    return (
        x.reshape(B * T, D),
        Wq,
        Wk,
        Wv,
        Wo,
        r(B, T, K),
        r(B, T, K),
        r(B, T, K),
        r(B, T, T),
        r(B * T, K),
        r(B * T, D),
        r(B, T, K),
        r(B, T, T),
    )


def attention_floor(x2, Wq, Wk, Wv, Wo, q, k, v, a, ctx2, dout, dctx, ds):
    # forward
    x2 @ Wq
    x2 @ Wk
    x2 @ Wv
    q @ k.transpose(0, 2, 1)
    a @ v
    ctx2 @ Wo
    # backward
    ctx2.T @ dout
    dout @ Wo.T
    a.transpose(0, 2, 1) @ dctx
    dctx @ v.transpose(0, 2, 1)
    ds @ k
    ds.transpose(0, 2, 1) @ q
    K = q.shape[2]
    x2.T @ q.reshape(-1, K)  # dWq, dWk, dWv: three [D, M] @ [M, K]
    x2.T @ k.reshape(-1, K)
    x2.T @ dctx.reshape(-1, K)


# ---------------------------------------------------------------------------------------------------------
# registry used by run.py

WORKLOADS = {
    "mlp": {
        "value_and_grad": mlp_value_and_grad,
        "floor_setup": mlp_floor_setup,
        "floor": mlp_floor,
        "inputs": ["x", "y", "W1", "b1", "W2", "b2"],
        "wrt": ["W1", "b1", "W2", "b2"],
    },
    "logistic_regression": {
        "value_and_grad": logistic_regression_value_and_grad,
        "floor_setup": logistic_regression_floor_setup,
        "floor": logistic_regression_floor,
        "inputs": ["x", "y", "W", "b"],
        "wrt": ["W", "b"],
    },
    "attention": {
        "value_and_grad": attention_value_and_grad,
        "floor_setup": attention_floor_setup,
        "floor": attention_floor,
        "inputs": ["x", "Wq", "Wk", "Wv", "Wo"],
        "wrt": ["Wq", "Wk", "Wv", "Wo"],
    },
}


def make_inputs(workload, sizes, dtype, seed=0):
    """Random inputs for ``workload`` in spec order. ``sizes``: dict of dim name -> int."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dt)

    if workload == "mlp":
        N, D, H, C = (sizes[k] for k in "NDHC")
        return (
            normal(N, D),
            rng.integers(0, C, size=N),
            normal(D, H, scale=D**-0.5),
            normal(H, scale=0.1),
            normal(H, C, scale=H**-0.5),
            normal(C, scale=0.1),
        )
    if workload == "logistic_regression":
        N, D, C = (sizes[k] for k in "NDC")
        return (normal(N, D), rng.integers(0, C, size=N), normal(D, C, scale=D**-0.5), normal(C, scale=0.1))
    if workload == "attention":
        B, T, D, K = (sizes[k] for k in "BTDK")
        return (
            normal(B, T, D),
            normal(D, K, scale=D**-0.5),
            normal(D, K, scale=D**-0.5),
            normal(D, K, scale=D**-0.5),
            normal(K, D, scale=K**-0.5),
        )
    raise KeyError(workload)
