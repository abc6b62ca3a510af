"""Benchmarks of the derivative kinds (issue 8): generated jvp / hvp against hand-written expert NumPy,
and generated jacobian / hessian against jax.jit(jax.jacrev / jacfwd / hessian) and torch.func.

Run from the repository root::

    python -m benchmarks.derivatives --threads 1                     # everything, small and medium
    python -m benchmarks.derivatives --threads 1 --part jvp-hvp --sizes medium
    python -m benchmarks.derivatives --tiny --peers none             # what the smoke test runs

See benchmarks/README.md ("Derivative kinds") for what each number means and the recorded run.
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
        if _t == "1":
            os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(_v, None)

# ---------------------------------------------------------------------------------------------------------
import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks import reference as R  # noqa: E402
from benchmarks import reference_derivatives as RD  # noqa: E402
from benchmarks.run import blocked_peer_ratio, calibrate, machine_lines, median_ratio, paired  # noqa: E402

# jvp / hvp workloads: (generated module, base workload of benchmarks/reference.py for the inputs)
JVP_SIZES = {
    "tiny": {"mlp_tanh": dict(N=5, D=7, H=6, C=3), "attention_hvp": dict(B=2, T=3, D=5, K=4)},
    "small": {"mlp_tanh": dict(N=32, D=64, H=128, C=10), "attention_hvp": dict(B=4, T=16, D=64, K=64)},
    "medium": {"mlp_tanh": dict(N=256, D=784, H=512, C=10), "attention_hvp": dict(B=16, T=64, D=256, K=64)},
}
# jacobian / hessian cases: (kind, generated module, sizes)
PEER_SIZES = {
    "tiny": {
        "logreg_l2": dict(N=6, D=4, C=3),
        "mlp_small_hessian": dict(N=6, D=4, H=5, C=3),
        "dense_layer": dict(D=6, H=4),
    },
    "small": {
        "logreg_l2": dict(N=32, D=64, C=10),
        "mlp_small_hessian": dict(N=32, D=16, H=32, C=10),
        "dense_layer": dict(D=128, H=64),
    },
    "medium": {
        "logreg_l2": dict(N=256, D=128, C=10),
        "mlp_small_hessian": dict(N=128, D=32, H=64, C=10),
        "dense_layer": dict(D=512, H=128),
    },
}
SPEC_FILES = {
    "mlp_tanh": "specs/mlp_tanh.yaml",
    "attention_hvp": "benchmarks/specs/attention_hvp.yaml",
    "logreg_l2": "specs/logreg_l2.yaml",
    "mlp_small_hessian": "benchmarks/specs/mlp_small_hessian.yaml",
    "dense_layer": "specs/dense_layer.yaml",
}


def log(*a):
    print(*a, flush=True)


def die(msg):
    print("\nBENCHMARK ABORTED: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def build_modules(names, tmp):
    """Build the specs into a temporary folder (so the benchmark always runs this checkout's gradgen)."""
    specs = [os.path.join(ROOT, SPEC_FILES[n]) for n in names]
    cmd = [sys.executable, "-m", "gradgen", "build", *specs, "--out", tmp]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"gradgen build failed:\n{proc.stdout}{proc.stderr}")
    mods = {}
    for n in names:
        spec = importlib.util.spec_from_file_location(f"_bench_{n}", os.path.join(tmp, f"{n}.py"))
        mods[n] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[n])
    return mods


def _close(a, b, dtype, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rtol, atol = (1e-7, 1e-10) if dtype == np.float64 else (3e-3, 3e-4)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol * scale):
        die(f"{what}: generated and reference differ (shapes {a.shape}, {b.shape})")


# ---------------------------------------------------------------------------------------------------------
# part 1: jvp and hvp against hand-written NumPy


def jvp_hvp(mods, sizes_names, dtypes, repeats, target):
    log("\n## jvp and hvp: generated vs hand-written NumPy (paired, interleaved; median of per-round ratios)")
    head = f"{'workload':15} {'size':>6} {'dtype':>8} {'jvp ms':>8} {'gen/ref':>8} {'jvp/fwd':>8} "
    head += f"{'hvp ms':>8} {'gen/ref':>8} {'hvp/vag':>8} {'ref hvp/vag':>11}"
    log(head)
    for size in sizes_names:
        for w in ("mlp_tanh", "attention_hvp"):
            for dt in dtypes:
                spec = RD.WORKLOADS[w]
                inputs = R.make_inputs(spec["base"], JVP_SIZES[size][w], dt, seed=7)
                v = RD.directions(w, inputs, seed=8)
                m = mods[w]
                _, ld = m.jvp(*inputs, v)
                _, rld = spec["jvp"](*inputs, v)
                _close(ld, rld, dt, f"{w} {size} {np.dtype(dt)} jvp")
                _, grads, hv = m.hvp(*inputs, v)
                _, rgrads, rhv = spec["hvp"](*inputs, v)
                for name, a, b in zip(spec["wrt"], (*grads, *hv), (*rgrads, *rhv)):
                    if np.asarray(a).dtype != np.dtype(dt):
                        die(f"{w}: {name} has dtype {np.asarray(a).dtype}")
                    _close(a, b, dt, f"{w} {size} {np.dtype(dt)} hvp {name}")
                fns = [
                    lambda: m.jvp(*inputs, v),
                    lambda: spec["jvp"](*inputs, v),
                    lambda: m.forward(*inputs),
                    lambda: m.hvp(*inputs, v),
                    lambda: spec["hvp"](*inputs, v),
                    lambda: m.value_and_grad(*inputs),
                    lambda: R.WORKLOADS[spec["base"]]["value_and_grad"](*inputs),
                ]
                s, _ = paired(fns, repeats, target)
                row = f"{w:15} {size:>6} {np.dtype(dt).name:>8} {1e3 * statistics.median(s[0]):8.3f} "
                row += f"{median_ratio(s[0], s[1]):8.3f} {median_ratio(s[0], s[2]):8.2f} "
                row += f"{1e3 * statistics.median(s[3]):8.3f} {median_ratio(s[3], s[4]):8.3f} "
                row += f"{median_ratio(s[3], s[5]):8.2f} {median_ratio(s[4], s[6]):11.2f}"
                log(row)


# ---------------------------------------------------------------------------------------------------------
# part 2: jacobian and hessian against JAX and PyTorch


def _case_inputs(case, sizes, dt, seed=9):
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dt)

    if case == "logreg_l2":
        N, D, C = sizes["N"], sizes["D"], sizes["C"]
        return [normal(N, D), rng.integers(0, C, N), normal(D, C, scale=D**-0.5), normal(C, scale=0.1)]
    if case == "mlp_small_hessian":
        N, D, H, C = (sizes[k] for k in "NDHC")
        return [
            normal(N, D),
            rng.integers(0, C, N),
            normal(D, H, scale=D**-0.5),
            normal(H, scale=0.1),
            normal(H, C, scale=H**-0.5),
            normal(C, scale=0.1),
        ]
    D, H = sizes["D"], sizes["H"]
    return [normal(D), normal(H, D, scale=D**-0.5), normal(H, scale=0.1)]


def _generated_derivative(case, m):
    if case == "dense_layer":
        return lambda *a: m.jacobian(*a)[1]
    return lambda *a: m.hessian(*a)[2]


def _jax_fn(case, inputs, mode):
    import jax
    import jax.numpy as jnp

    def sce(logits, y):
        z = logits - jax.lax.stop_gradient(logits.max(axis=1, keepdims=True))
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - z[jnp.arange(z.shape[0]), y])

    if case == "logreg_l2":
        X, y = jnp.asarray(inputs[0]), jnp.asarray(inputs[1])

        def f(W, b):
            return sce(X @ W + b, y) + 0.05 * (jnp.sum(W * W) + jnp.sum(b * b))

        params = tuple(jnp.asarray(a) for a in inputs[2:])
        fn = jax.jit(jax.hessian(f, argnums=(0, 1)))
    elif case == "mlp_small_hessian":
        x, y = jnp.asarray(inputs[0]), jnp.asarray(inputs[1])

        def f(W1, b1, W2, b2):
            return sce(jnp.tanh(x @ W1 + b1) @ W2 + b2, y)

        params = tuple(jnp.asarray(a) for a in inputs[2:])
        fn = jax.jit(jax.hessian(f, argnums=(0, 1, 2, 3)))
    else:
        b = jnp.asarray(inputs[2])

        def f(x, W):
            return jax.nn.sigmoid(W @ x + b)

        params = tuple(jnp.asarray(a) for a in inputs[:2])
        jac = jax.jacrev if mode == "rev" else jax.jacfwd
        fn = jax.jit(jac(f, argnums=(0, 1)))
    step = lambda: jax.block_until_ready(fn(*params))
    return step


def _torch_fn(case, inputs, mode):
    import torch
    from torch.func import hessian, jacfwd, jacrev

    def sce(logits, y):
        return torch.nn.functional.cross_entropy(logits, y)

    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    if case == "logreg_l2":
        X, y = t[0], t[1]

        def f(W, b):
            return sce(X @ W + b, y) + 0.05 * ((W * W).sum() + (b * b).sum())

        fn, params = hessian(f, argnums=(0, 1)), t[2:]
    elif case == "mlp_small_hessian":
        x, y = t[0], t[1]

        def f(W1, b1, W2, b2):
            return sce(torch.tanh(x @ W1 + b1) @ W2 + b2, y)

        fn, params = hessian(f, argnums=(0, 1, 2, 3)), t[2:]
    else:
        b = t[2]

        def f(x, W):
            return torch.sigmoid(W @ x + b)

        fn, params = (jacrev if mode == "rev" else jacfwd)(f, argnums=(0, 1)), t[:2]

    def step():
        with torch.no_grad():
            return fn(*params)

    return step


def _flat_peer(case, result):
    """A peer's nested result as the generated layout (blocks in wrt order, rows then columns)."""

    def arr(a):
        return np.asarray(a.detach().numpy() if hasattr(a, "detach") else a)

    if case == "dense_layer":
        return [arr(result[0]), arr(result[1])]
    return [arr(result[i][j]) for i in range(len(result)) for j in range(len(result))]


def jacobian_hessian(mods, sizes_names, dtypes, peers, repeats, target, pause, threads):
    log("\n## jacobian and hessian: generated vs jax.jit(jacrev / jacfwd / hessian) and torch.func")
    log("   (time ratio gen/peer from alternating blocks; < 1 means the generated function is faster)")
    have = {}
    for p in peers:
        try:
            if p == "jax":
                import jax

                jax.config.update("jax_enable_x64", True)
                have[p] = True
            else:
                import torch

                torch.set_num_threads(int(threads) if threads else os.cpu_count() or 1)
                have[p] = True
        except Exception as exc:  # pragma: no cover - optional peers
            log(f"   {p}: not available ({type(exc).__name__}: {exc})")
    head = f"{'case':34} {'size':>6} {'dtype':>8} {'gen ms':>9}"
    cols = [(p, mode) for p in have for mode in ("rev", "fwd")]
    for p, mode in cols:
        head += f" {p + ('/' + mode if mode else ''):>14}"
    log(head)
    for size in sizes_names:
        for case in ("logreg_l2", "mlp_small_hessian", "dense_layer"):
            for dt in dtypes:
                sizes = PEER_SIZES[size][case]
                inputs = _case_inputs(case, sizes, dt)
                gen = _generated_derivative(case, mods[case])
                blocks = [
                    np.asarray(b) for row in gen(*inputs) for b in (row if case != "dense_layer" else [row])
                ]
                what = "jacobian (rows)" if case == "dense_layer" else "hessian"
                label = f"{case} {what}"
                step_gen = lambda gen=gen, inputs=inputs: gen(*inputs)
                n_gen = calibrate(step_gen, target)
                t_gen = statistics.median(_sample_many(step_gen, n_gen, 5))
                row = f"{label:34} {size:>6} {np.dtype(dt).name:>8} {1e3 * t_gen:9.3f}"
                for p, mode in cols:
                    if case != "dense_layer" and mode == "fwd":
                        row += f" {'-':>14}"
                        continue
                    if mode == "fwd" and _entries(inputs[:2]) > FWD_LIMIT:
                        row += f" {'(skipped)':>14}"  # n basis tangents of n entries each: n^2 memory
                        continue
                    try:
                        step = (_jax_fn if p == "jax" else _torch_fn)(case, inputs, mode)
                        peer_blocks = _flat_peer(case, step())
                        for k, (a, b) in enumerate(zip(blocks, peer_blocks)):
                            _close(a, b, dt, f"{label} vs {p}/{mode} block {k}")
                        ratio, _ = blocked_peer_ratio(step_gen, step, repeats, target, pause)
                        row += f" {ratio:14.2f}"
                    except SystemExit:
                        raise
                    except Exception as exc:  # pragma: no cover - a peer that fails is reported, not fatal
                        row += f" {'err':>14}"
                        log(f"   {p}/{mode} on {label}: {type(exc).__name__}: {exc}")
                log(row)


FWD_LIMIT = 20000  # forward mode for the Jacobian builds n basis vectors of n entries


def _entries(arrays):
    return sum(int(np.size(a)) for a in arrays)


def _sample_many(fn, n, k):
    out = []
    for _ in range(k):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n)
    return out


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.derivatives", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small,medium", help="size rows: tiny, small, medium")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--part", choices=["all", "jvp-hvp", "jacobian-hessian"], default="all")
    p.add_argument("--peers", default="jax,torch", help="jax,torch or none")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--threads", default=None, help="BLAS / XLA / PyTorch threads (set before NumPy loads)")
    p.add_argument("--min-sample", type=float, default=0.002)
    p.add_argument("--pause", type=float, default=0.3)
    p.add_argument("--tiny", action="store_true", help="tiny sizes, 3 repeats: checks that everything runs")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = ["tiny"] if args.tiny else [s for s in args.sizes.split(",") if s]
    repeats = 3 if args.tiny else args.repeats
    dtypes = [np.dtype(d).type for d in args.dtypes.split(",") if d]
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    for line in machine_lines(args.threads or "all"):
        log(line)
    with tempfile.TemporaryDirectory() as tmp:
        mods = build_modules(list(SPEC_FILES), tmp)
        if args.part in ("all", "jvp-hvp"):
            jvp_hvp(mods, sizes, dtypes, repeats, args.min_sample)
        if args.part in ("all", "jacobian-hessian"):
            jacobian_hessian(mods, sizes, dtypes, peers, repeats, args.min_sample, args.pause, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
