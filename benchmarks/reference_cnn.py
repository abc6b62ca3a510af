"""Hand-written expert NumPy for the small CNN of specs/small_cnn.yaml (what benchmarks/cnn.py times).

The usual im2col formulation, written as one would by hand: the 3x3 "same" convolution takes the input's
windows with stride tricks and copies them once into a contiguous [N*H*W, C*9] column matrix, which the
forward product and the weight gradient both use (the copy is kept for the backward pass); the input
gradient is col2im, the output gradient times the weight matrix with its nine kernel slices added into a
padded channels-last buffer; the 2x2 max-pool reshapes the feature map into [N, C, H/2, 2, W/2, 2]
blocks and routes the gradient with a mask of each block's maximum (every tie gets it: after a ReLU the
only ties are zeros, whose gradient the ReLU drops).
"""

from __future__ import annotations

import numpy as np

_windows = np.lib.stride_tricks.sliding_window_view


def conv3x3_forward(x, w):
    """'same' 3x3 convolution, NCHW in, NCHW out; also returns the column matrix for the backward pass."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.ascontiguousarray(_windows(xp, (3, 3), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5))
    cols = cols.reshape(n * h * wd, c * 9)
    y = cols @ w.reshape(w.shape[0], -1).T  # [N*H*W, O]
    return y.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def conv3x3_backward(dy, w, cols, need_dx=True):
    n, o, h, wd = dy.shape
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(n * h * wd, o)
    dw = (dy_rows.T @ cols).reshape(w.shape)
    if not need_dx:
        return None, dw
    c = w.shape[1]
    dcols = (dy_rows @ w.reshape(o, c * 9)).reshape(n, h, wd, c, 3, 3)
    dxp = np.zeros((n, h + 2, wd + 2, c), dy.dtype)  # col2im, channels last
    for i in range(3):
        for j in range(3):
            dxp[:, i : i + h, j : j + wd] += dcols[:, :, :, :, i, j]
    return dxp[:, 1:-1, 1:-1].transpose(0, 3, 1, 2), dw


def pool2_forward(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    y = blocks.max(axis=(3, 5))
    return y, blocks == y[:, :, :, None, :, None]


def pool2_backward(dy, mask):
    n, c, h2, _, w2, _ = mask.shape
    return (mask * dy[:, :, :, None, :, None]).reshape(n, c, 2 * h2, 2 * w2)


def small_cnn_value_and_grad(x, y, W1, b1, W2, b2, W3, b3):
    n = x.shape[0]
    k = W3.shape[-1]
    z1, cols1 = conv3x3_forward(x, W1)
    r1 = np.maximum(z1 + b1, 0)
    p1, m1 = pool2_forward(r1)
    z2, cols2 = conv3x3_forward(p1, W2)
    r2 = np.maximum(z2 + b2, 0)
    p2, m2 = pool2_forward(r2)
    feats = p2.reshape(n, -1)
    w3 = W3.reshape(-1, k)
    logits = feats @ w3 + b3
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    sums = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = (np.log(sums).sum() - shifted[rows, y].sum()) / n
    dlogits = e / (sums * n)
    dlogits[rows, y] -= 1 / n
    db3 = dlogits.sum(axis=0)
    dW3 = (feats.T @ dlogits).reshape(W3.shape)
    dp2 = (dlogits @ w3.T).reshape(p2.shape)
    dr2 = pool2_backward(dp2, m2)
    dr2 *= r2 > 0
    db2 = dr2.sum(axis=(0, 2, 3)).reshape(b2.shape)
    dp1, dW2 = conv3x3_backward(dr2, W2, cols2)
    dr1 = pool2_backward(dp1, m1)
    dr1 *= r1 > 0
    db1 = dr1.sum(axis=(0, 2, 3)).reshape(b1.shape)
    _, dW1 = conv3x3_backward(dr1, W1, cols1, need_dx=False)
    return loss.astype(x.dtype), (dW1, db1, dW2, db2, dW3, db3)


def make_inputs(sizes: dict, dtype, seed=0):
    """Inputs of specs/small_cnn.yaml at the given sizes (N, S, C1, C2, K), He-scaled weights."""
    rng = np.random.default_rng(seed)
    n, s, c1, c2, k = (sizes[d] for d in ("N", "S", "C1", "C2", "K"))

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)

    return {
        "x": rng.standard_normal((n, 3, 4 * s, 4 * s)).astype(dtype),
        "y": rng.integers(0, k, size=n),
        "W1": he((c1, 3, 3, 3), 27),
        "b1": (0.1 * rng.standard_normal((c1, 1, 1))).astype(dtype),
        "W2": he((c2, c1, 3, 3), 9 * c1),
        "b2": (0.1 * rng.standard_normal((c2, 1, 1))).astype(dtype),
        "W3": he((c2, s, s, k), c2 * s * s),
        "b3": np.zeros(k, dtype),
    }
