"""The small CNN's generated value_and_grad against hand-written expert NumPy and torch eager (issue 9).

Run from the repository root::

    python -m benchmarks.cnn --threads 1                  # N=64, 3x32x32, float32 and float64
    python -m benchmarks.cnn --tiny --peers none          # what the smoke test runs

The three run in one process on the same inputs: generated and hand-written are interleaved call by
call (paired samples, the ratio is the median of the per-pair ratios); torch runs in alternating
blocks with pauses (benchmarks/README.md says why).  Before timing, every result is checked against
the hand-written one.  The target is generated <= 1.10x hand-written.
"""

# ---------------------------------------------------------------------------------------------------------
# Thread counts are fixed before NumPy (and its BLAS) is loaded.
import os
import sys


def _threads(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


if __name__ == "__main__":
    _t = _threads(sys.argv[1:])
    if _t is not None:
        for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
            os.environ[_v] = _t
    for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(_v, None)

# ---------------------------------------------------------------------------------------------------------
import argparse  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks import reference_cnn as R  # noqa: E402
from benchmarks.run import blocked_peer_ratio, machine_lines, median_ratio, paired  # noqa: E402

SIZES = {
    "tiny": dict(N=4, S=2, C1=3, C2=4, K=5),
    "cifar": dict(N=64, S=8, C1=16, C2=32, K=10),  # 3x32x32 images, two conv layers
}
WRT = ("W1", "b1", "W2", "b2", "W3", "b3")
TARGET = 1.10


def log(*a):
    print(*a, flush=True)


def die(msg):
    print("\nBENCHMARK ABORTED: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def build_module(tmp):
    """Build specs/small_cnn.yaml with this checkout's gradgen into a temporary folder."""
    spec_path = os.path.join(ROOT, "specs", "small_cnn.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "gradgen", "build", spec_path, "--out", tmp],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        die(f"gradgen build failed:\n{proc.stdout}{proc.stderr}")
    spec = importlib.util.spec_from_file_location("_bench_small_cnn", os.path.join(tmp, "small_cnn.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check(gen, ref, dtype):
    """The generated loss and gradients equal the hand-written ones to the dtype's precision."""
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (2e-4, 1e-6)
    (gl, gg), (rl, rg) = gen, ref
    if np.asarray(gl).dtype != dtype or any(getattr(gg, n).dtype != dtype for n in WRT):
        die(f"generated value_and_grad does not keep {np.dtype(dtype).name}")
    if not np.allclose(gl, rl, rtol=rtol, atol=atol):
        die(f"loss differs: generated {gl}, hand-written {rl}")
    for name, r in zip(WRT, rg):
        g = getattr(gg, name)
        scale = float(np.abs(r).max(initial=0.0))
        if g.shape != r.shape or not np.allclose(g, r, rtol=rtol, atol=atol * max(scale, 1.0)):
            die(f"gradient {name} differs between generated and hand-written")


def torch_step(inputs, threads):
    """torch eager: the same network, loss.backward() each call (None when torch does not import)."""
    try:
        import torch
    except ImportError:
        return None
    if threads is not None:
        torch.set_num_threads(int(threads))
    F = torch.nn.functional
    t = {k: torch.tensor(v) for k, v in inputs.items()}
    params = [t[n].requires_grad_() for n in WRT]
    W1, b1, W2, b2, W3, b3 = params

    def step():
        for p in params:
            p.grad = None
        h1 = F.max_pool2d(F.relu(F.conv2d(t["x"], W1, padding=1) + b1), 2)
        h2 = F.max_pool2d(F.relu(F.conv2d(h1, W2, padding=1) + b2), 2)
        loss = F.cross_entropy(h2.flatten(1) @ W3.flatten(0, 2) + b3, t["y"])
        loss.backward()
        return loss

    return step


def run(size, dtypes, repeats, target, peers, pause, threads, tmp):
    mod = build_module(tmp)
    sizes = SIZES[size]
    log(
        f"small CNN, {size}: "
        + ", ".join(f"{k}={v}" for k, v in sizes.items())
        + f" (images 3x{4 * sizes['S']}x{4 * sizes['S']})"
    )
    log("| dtype | generated ms | hand-written ms | gen/hand | torch eager ms | gen/torch |")
    log("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for dt in dtypes:
        inputs = R.make_inputs(sizes, dt)
        args = [inputs[k] for k in ("x", "y", "W1", "b1", "W2", "b2", "W3", "b3")]
        check(mod.value_and_grad(*args), R.small_cnn_value_and_grad(*args), dt)
        (gen_t, ref_t), _ = paired(
            [lambda: mod.value_and_grad(*args), lambda: R.small_cnn_value_and_grad(*args)], repeats, target
        )
        ratio = median_ratio(gen_t, ref_t)
        worst = max(worst, ratio)
        gen_ms, ref_ms = (1e3 * float(np.median(s)) for s in (gen_t, ref_t))
        peer = torch_step(inputs, threads) if "torch" in peers else None
        if peer is not None:
            peer_ratio, peer_s = blocked_peer_ratio(
                lambda: mod.value_and_grad(*args), peer, repeats, target, pause
            )
            torch_cells = f"{1e3 * peer_s:.2f} | {peer_ratio:.2f}x"
        else:
            torch_cells = "not run | -"
        log(f"| {np.dtype(dt).name} | {gen_ms:.2f} | {ref_ms:.2f} | {ratio:.3f}x | {torch_cells} |")
    verdict = "met" if worst <= TARGET else "NOT met"
    log(f"target generated <= {TARGET:.2f}x hand-written: {verdict} (worst {worst:.3f}x)")
    return worst


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes, 3 repeats: checks that it runs")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--min-sample", type=float, default=0.05, help="seconds per timing sample")
    p.add_argument("--peers", default="torch", help="torch, or none")
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--threads", default=None, help="BLAS / torch threads (default: as the machine has)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for line in machine_lines(args.threads or "not pinned"):
        log(line)
    dtypes = [np.dtype(d).type for d in args.dtypes.split(",")]
    repeats = 3 if args.tiny else args.repeats
    target = 0.002 if args.tiny else args.min_sample
    pause = 0.01 if args.tiny else args.pause
    peers = () if args.peers == "none" else tuple(args.peers.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        run("tiny" if args.tiny else "cifar", dtypes, repeats, target, peers, pause, args.threads, tmp)


if __name__ == "__main__":
    main()
