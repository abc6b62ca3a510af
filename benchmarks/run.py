"""Benchmark runner for issue 4: generated modules vs hand-written expert NumPy, peers and the matmul floor.

Run from the repository root::

    python -m benchmarks.run                      # small and medium, float32 and float64, all peers
    python -m benchmarks.run --sizes large --dtypes float32
    python -m benchmarks.run --tiny --no-build-scaling --peers none   # the smoke test

See benchmarks/README.md for what each number means.
"""

# ---------------------------------------------------------------------------------------------------------
# Environment hygiene. This block runs before NumPy is imported (OpenBLAS reads its environment when the
# library is loaded, so nothing after that point can change the kernel or the thread count).
import os
import sys

_SLOW_KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_REEXEC_MARK = "GRADGEN_BENCH_REEXECED"


def _requested_threads(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return os.cpu_count() or 1


def _clean_env(argv):
    """Drop the slow-kernel variables and pin thread counts; re-exec when NumPy is already loaded."""
    threads = str(_requested_threads(argv))
    wanted = dict.fromkeys(_THREAD_VARS, threads)
    if threads == "1":
        wanted["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
            "intra_op_parallelism_threads=1"
        ).strip()
    dirty = any(v in os.environ for v in _SLOW_KERNEL_VARS)
    numpy_loaded = "numpy" in sys.modules
    stale_threads = any(os.environ.get(k) != v for k, v in wanted.items())
    if (dirty or (numpy_loaded and stale_threads)) and os.environ.get(_REEXEC_MARK) != "1":
        env = {k: v for k, v in os.environ.items() if k not in _SLOW_KERNEL_VARS}
        env.update(wanted)
        env[_REEXEC_MARK] = "1"
        script = os.path.abspath(__file__)
        os.execve(sys.executable, [sys.executable, script] + list(argv), env)
    for v in _SLOW_KERNEL_VARS:
        os.environ.pop(v, None)
    os.environ.update(wanted)


if __name__ == "__main__":
    _clean_env(sys.argv[1:])

# ---------------------------------------------------------------------------------------------------------
import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks import reference as R  # noqa: E402

try:
    import threadpoolctl
except ImportError:  # optional
    threadpoolctl = None

WORKLOADS = ("mlp", "logistic_regression", "attention")

SIZES = {
    "tiny": {
        "mlp": dict(N=5, D=7, H=6, C=3),
        "logistic_regression": dict(N=5, D=7, C=3),
        "attention": dict(B=2, T=3, D=5, K=4),
    },
    "small": {
        "mlp": dict(N=32, D=64, H=128, C=10),
        "logistic_regression": dict(N=32, D=64, C=10),
        "attention": dict(B=4, T=16, D=64, K=64),
    },
    "medium": {
        "mlp": dict(N=256, D=784, H=512, C=10),
        "logistic_regression": dict(N=256, D=784, C=10),
        "attention": dict(B=16, T=64, D=256, K=64),
    },
    "large": {
        "mlp": dict(N=1024, D=1024, H=1024, C=10),
        "logistic_regression": dict(N=1024, D=1024, C=10),
        "attention": dict(B=32, T=128, D=512, K=64),
    },
}

PEERS = ("torch", "jax", "autograd")
CHAIN_LENGTHS = (50, 100, 200, 400, 800)


def log(*a):
    print(*a, flush=True)


def die(msg):
    print("\nBENCHMARK ABORTED: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------------------
# machine line


def machine_lines(threads):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or cpu
    lines = [
        f"machine: {platform.platform()} | CPU: {cpu} | cores: {os.cpu_count()} | "
        f"python {platform.python_version()} | numpy {np.__version__} | threads pinned: {threads}"
        + (" | load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "")
    ]
    if threadpoolctl is not None:
        for info in threadpoolctl.threadpool_info():
            lines.append(
                "blas: {} {} kernel={} threads={} layer={} ({})".format(
                    info.get("internal_api"),
                    info.get("version"),
                    info.get("architecture", "?"),
                    info.get("num_threads"),
                    info.get("threading_layer", "?"),
                    os.path.basename(info.get("filepath", "")),
                )
            )
    else:
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            lines.append(f"blas: {blas.get('name')} {blas.get('version')} (threadpoolctl not installed)")
        except Exception:  # pragma: no cover - old numpy
            lines.append("blas: unknown (threadpoolctl not installed)")
    lines.append(
        "env: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for this run; "
        + " ".join(f"{v}={os.environ.get(v)}" for v in _THREAD_VARS[:3])
    )
    return lines


# ---------------------------------------------------------------------------------------------------------
# generated modules


def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_generated(workloads, gen_dir, rebuild, tmp_root):
    missing = [w for w in workloads if not os.path.isfile(os.path.join(gen_dir, f"{w}.py"))]
    if rebuild or missing:
        out = os.path.join(tmp_root, "generated")
        specs = [os.path.join(ROOT, "specs", f"{w}.yaml") for w in workloads]
        cmd = [sys.executable, "-m", "gradgen", "build", *specs, "--out", out]
        why = "--rebuild" if rebuild else f"missing in {gen_dir}: {', '.join(missing)}"
        log(f"building generated modules ({why}): {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            die(f"gradgen build failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        gen_dir = out
    mods = {}
    for w in workloads:
        path = os.path.join(gen_dir, f"{w}.py")
        if not os.path.isfile(path):
            die(f"generated module not found: {path}")
        mods[w] = _load_module(path, f"_gradgen_bench_generated_{w}")
    return mods, gen_dir


def gen_step(mod):
    vag = mod.value_and_grad

    def step(*inputs):
        loss, grads = vag(*inputs)
        return loss, tuple(grads)

    return step


# ---------------------------------------------------------------------------------------------------------
# correctness


def check_against_reference(workload, mod, sizes, dtype):
    """Abort loudly unless the generated value_and_grad matches the reference."""
    inputs = R.make_inputs(workload, sizes, dtype, seed=12345)
    saved = [a.copy() for a in inputs]
    wrt = R.WORKLOADS[workload]["wrt"]
    loss_g, grads_g = mod.value_and_grad(*inputs)
    for name, a, b in zip(R.WORKLOADS[workload]["inputs"], inputs, saved):
        if not np.array_equal(a, b):
            die(f"{workload}: generated value_and_grad modified its input {name!r}")
    fields = getattr(grads_g, "_fields", None)
    if fields is not None and tuple(fields) != tuple(wrt):
        die(f"{workload}: Gradients fields {fields} != wrt {wrt}")
    loss_r, grads_r = R.WORKLOADS[workload]["value_and_grad"](*inputs)
    grads_g = tuple(grads_g)
    if len(grads_g) != len(grads_r):
        die(f"{workload}: {len(grads_g)} gradients, reference has {len(grads_r)}")
    dt = np.dtype(dtype)
    rtol, atol_rel = (1e-7, 1e-10) if dt == np.float64 else (2e-3, 2e-4)
    if not np.allclose(float(loss_g), float(loss_r), rtol=rtol, atol=atol_rel):
        die(f"{workload} {dt}: loss mismatch: generated {float(loss_g)!r} vs reference {float(loss_r)!r}")
    for name, g, r in zip(wrt, grads_g, grads_r):
        g = np.asarray(g)
        if g.shape != r.shape:
            die(f"{workload} {dt}: d{name} shape {g.shape} != {r.shape}")
        if g.dtype != dt:
            die(f"{workload} {dt}: d{name} dtype {g.dtype}, expected {dt} (silent upcast?)")
        scale = float(np.max(np.abs(r))) or 1.0
        if not np.allclose(g, r, rtol=rtol, atol=atol_rel * scale):
            err = float(np.max(np.abs(g - r)))
            die(
                f"{workload} {dt}: d{name} mismatch vs reference: max abs err {err:.3e} (max |ref| {scale:.3e})"
            )


# ---------------------------------------------------------------------------------------------------------
# peers (each optional)


def _peer_available(name):
    try:
        if name == "torch":
            import torch  # noqa: F401
        elif name == "jax":
            import jax  # noqa: F401
        elif name == "autograd":
            import autograd  # noqa: F401
        else:
            return False
        return True
    except Exception:
        return False


def make_torch_step(workload, inputs, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    if workload in ("mlp", "logistic_regression"):
        x, y, params = t[0], t[1], t[2:]
    else:
        x, params = t[0], t[1:]
    params = [p.clone().requires_grad_(True) for p in params]

    if workload == "mlp":

        def step():
            W1, b1, W2, b2 = params
            h = torch.relu(x @ W1 + b1)
            loss = F.cross_entropy(h @ W2 + b2, y)
            return loss, torch.autograd.grad(loss, params)

    elif workload == "logistic_regression":

        def step():
            W, b = params
            loss = F.cross_entropy(x @ W + b, y)
            return loss, torch.autograd.grad(loss, params)

    else:

        def step():
            Wq, Wk, Wv, Wo = params
            q, k, v = x @ Wq, x @ Wk, x @ Wv
            attn = torch.softmax(q @ k.transpose(1, 2) / 8.0, dim=-1)
            loss = ((attn @ v @ Wo - x) ** 2).mean()
            return loss, torch.autograd.grad(loss, params)

    def to_numpy(res):
        loss, grads = res
        return float(loss.detach()), tuple(g.numpy() for g in grads)

    return step, to_numpy


def make_jax_step(workload, inputs, threads):
    import jax

    jax.config.update("jax_enable_x64", True)  # so float64 runs are float64; float32 arrays stay float32
    import jax.numpy as jnp

    arrs = [jax.device_put(jnp.asarray(a)) for a in inputs]
    if workload == "mlp":

        def f(W1, b1, W2, b2, x, y):
            h = jax.nn.relu(x @ W1 + b1)
            lp = jax.nn.log_softmax(h @ W2 + b2, axis=-1)
            return -jnp.mean(jnp.take_along_axis(lp, y[:, None], axis=1))

        params, rest = arrs[2:], arrs[:2]
    elif workload == "logistic_regression":

        def f(W, b, x, y):
            lp = jax.nn.log_softmax(x @ W + b, axis=-1)
            return -jnp.mean(jnp.take_along_axis(lp, y[:, None], axis=1))

        params, rest = arrs[2:], arrs[:2]
    else:

        def f(Wq, Wk, Wv, Wo, x):
            q, k, v = x @ Wq, x @ Wk, x @ Wv
            attn = jax.nn.softmax(q @ jnp.transpose(k, (0, 2, 1)) / 8.0, axis=-1)
            return jnp.mean(jnp.square(attn @ v @ Wo - x))

        params, rest = arrs[1:], arrs[:1]
    fn = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(params)))))
    args = (*params, *rest)

    def step():
        return jax.block_until_ready(fn(*args))

    def to_numpy(res):
        loss, grads = res
        return float(loss), tuple(np.asarray(g) for g in grads)

    step()  # compile
    return step, to_numpy


def make_autograd_step(workload, inputs, threads):
    import autograd
    import autograd.numpy as anp

    if workload == "mlp":
        x, y = inputs[:2]
        params = tuple(inputs[2:])
        rows = np.arange(x.shape[0])

        def f(p):
            W1, b1, W2, b2 = p
            logits = anp.dot(anp.maximum(anp.dot(x, W1) + b1, 0.0), W2) + b2
            m = anp.max(logits, axis=1, keepdims=True)
            lse = anp.log(anp.sum(anp.exp(logits - m), axis=1)) + m[:, 0]
            return anp.mean(lse - logits[rows, y])

    elif workload == "logistic_regression":
        x, y = inputs[:2]
        params = tuple(inputs[2:])
        rows = np.arange(x.shape[0])

        def f(p):
            W, b = p
            logits = anp.dot(x, W) + b
            m = anp.max(logits, axis=1, keepdims=True)
            lse = anp.log(anp.sum(anp.exp(logits - m), axis=1)) + m[:, 0]
            return anp.mean(lse - logits[rows, y])

    else:
        x = inputs[0]
        params = tuple(inputs[1:])

        def f(p):
            Wq, Wk, Wv, Wo = p
            q, k, v = anp.matmul(x, Wq), anp.matmul(x, Wk), anp.matmul(x, Wv)
            s = anp.matmul(q, anp.transpose(k, (0, 2, 1))) / 8.0
            e = anp.exp(s - anp.max(s, axis=-1, keepdims=True))
            attn = e / anp.sum(e, axis=-1, keepdims=True)
            d = anp.matmul(anp.matmul(attn, v), Wo) - x
            return anp.mean(d * d)

    vag = autograd.value_and_grad(f)

    def step():
        return vag(params)

    def to_numpy(res):
        loss, grads = res
        return float(loss), tuple(np.asarray(g) for g in grads)

    return step, to_numpy


PEER_FACTORIES = {"torch": make_torch_step, "jax": make_jax_step, "autograd": make_autograd_step}


def check_peer(name, workload, step, to_numpy, inputs, ref_result):
    """Sanity check of a peer (warn only: a peer's bug should not stop the benchmark)."""
    try:
        loss, grads = to_numpy(step())
    except Exception as e:  # pragma: no cover - depends on installed versions
        return f"{name} failed: {type(e).__name__}: {e}"
    loss_r, grads_r = ref_result
    tol = 1e-6 if inputs[0].dtype == np.float64 else 2e-3
    ok = np.isclose(loss, float(loss_r), rtol=tol, atol=tol) and all(
        np.allclose(g, r, rtol=tol, atol=tol * (float(np.max(np.abs(r))) or 1.0))
        for g, r in zip(grads, grads_r)
    )
    return None if ok else f"WARNING: {name} disagrees with the reference on {workload}"


# ---------------------------------------------------------------------------------------------------------
# the cost of the generated input checks


def _range_check_functions(workload):
    """(ranges, noop): the generated module's index-range tests for ``workload``, compiled from the very
    text the module holds (gradgen.render.range_condition), and a function with the same arguments
    that does nothing, to subtract the cost of the call itself."""
    from gradgen.pipeline import plan_text
    from gradgen.render import range_condition

    path = os.path.join(ROOT, "specs", f"{workload}.yaml")
    with open(path, encoding="utf-8") as fh:
        plan, _ = plan_text(path, fh.read())
    params = ", ".join([n for n, _, _ in plan.inputs] + [v for _, v in plan.dims])
    body = "".join(f"    if {range_condition(c)}:\n        raise ValueError\n" for c in plan.index_checks)
    ns = {}
    exec(f"def ranges({params}):\n{body}    return None\n\ndef noop({params}):\n    return None\n", ns)
    return ns["ranges"], ns["noop"], len(plan.index_checks)


def checks_cost(args, mods):
    """Time `_check_inputs` (every run-time input check) and its index-range tests alone against one
    `value_and_grad` step.  Each function gets its own calls-per-sample (at least --min-sample long);
    the samples interleave in rotating order, round by round, and a no-op call with the same arguments
    is subtracted from the checks' times.  Printed: the cost per call from the fastest sample of each
    (robust on a busy machine, where every slower sample is a fast one plus interruptions) and, in
    brackets, the median over rounds of the per-round ratio to the step."""
    log("")
    log(
        "input checks: cost per call and share of one value_and_grad step (fastest samples; [median of paired rounds])"
    )
    log(
        f"{'workload':22} {'size':>6} {'dtype':>8} {'step us':>9} {'checks us':>10} {'checks/step':>22} {'ranges us':>10} {'ranges/step':>22}"
    )
    for s in args.sizes:
        for w in args.workloads:
            ranges, noop, n_ranges = _range_check_functions(w)
            for dt in args.dtypes:
                inputs = R.make_inputs(w, SIZES[s][w], dt)
                mod = mods[w]
                checked = mod._check_inputs(*inputs)  # the inputs as arrays, then the bound dims
                fns = [
                    lambda: mod.value_and_grad(*inputs),
                    lambda: mod._check_inputs(*inputs),
                    lambda: ranges(*checked),
                    lambda: noop(*checked),
                ]
                tv, tc, tr, tn = _interleaved(fns, args.repeats, args.min_sample)
                row = f"{w:22} {s:>6} {dt:>8} {1e6 * min(tv):9.2f}"
                for t, present in ((tc, True), (tr, n_ranges > 0)):
                    if not present:
                        row += f" {'-':>10} {'-':>22}"
                        continue
                    cost = min(t) - min(tn)
                    paired_ = statistics.median((a - b) / v for a, b, v in zip(t, tn, tv))
                    row += f" {1e6 * cost:10.3f} {100 * cost / min(tv):11.2f}% [{100 * paired_:6.2f}%]"
                log(row)


def _interleaved(fns, repeats, target):
    """Per-call seconds of each function in each round; every function has its own calls per sample."""
    counts = [calibrate(f, target) for f in fns]
    samples = [[0.0] * repeats for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(fns) :] + order[: r % len(fns)]
        if (r // len(fns)) % 2:
            order.reverse()
        for i in order:
            samples[i][r] = sample(fns[i], counts[i])
    return samples


# ---------------------------------------------------------------------------------------------------------
# timing


def calibrate(fn, target):
    """Number of calls per sample so that one sample takes at least ``target`` seconds."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target or n >= 1 << 16:
            return n
        n = max(n * 2, int(n * target / max(dt, 1e-9) * 1.2))


def sample(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def paired(fns, repeats, target):
    """Interleaved samples of several step functions; the order rotates every repeat.

    Returns (per-function list of per-call seconds, per-repeat tuples) so ratios can be paired.
    """
    n = max(calibrate(f, target) for f in fns)  # same inner count for every function: a fair pairing
    k = len(fns)
    samples = [[0.0] * repeats for _ in fns]
    for r in range(repeats):
        order = list(range(k))
        order = order[r % k :] + order[: r % k]
        if (r // k) % 2:
            order.reverse()
        for i in order:
            samples[i][r] = sample(fns[i], n)
    return samples, n


def median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b))


def peak_memory(fn):
    """Peak bytes allocated during one call (NumPy reports its data buffers to tracemalloc)."""
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        res = fn()
        peak = tracemalloc.get_traced_memory()[1]
        del res
    finally:
        tracemalloc.stop()
    return peak - base


def blocked_peer_ratio(gen, peer, repeats, target, pause):
    """gen/peer time ratio from alternating blocks separated by pauses.

    OpenBLAS and PyTorch worker threads spin for a while after a call and slow whichever library runs
    next, so the two are not interleaved call by call: each round is a pause, a block of generated
    samples, a pause, a block of peer samples (the order alternating between rounds). The result is the
    median over rounds of the per-round ratio of block medians, so drifts of the machine cancel out.
    """
    n_gen = calibrate(gen, target)
    time.sleep(pause)
    n_peer = calibrate(peer, target)
    rounds = max(3, repeats // 3)
    ratios, p_all = [], []
    for rnd in range(rounds):
        blocks = {}
        for which in ((0, 1) if rnd % 2 == 0 else (1, 0)):
            time.sleep(pause)
            fn, n = (gen, n_gen) if which == 0 else (peer, n_peer)
            blocks[which] = [sample(fn, n) for _ in range(3)]
        ratios.append(statistics.median(blocks[0]) / statistics.median(blocks[1]))
        p_all += blocks[1]
    return statistics.median(ratios), statistics.median(p_all)


# ---------------------------------------------------------------------------------------------------------
# build-time scaling and CLI start-up


def chain_spec(n):
    """A spec with ``n`` graph entries: tanh, + b, * 0.5, @ W repeated on [N, D], then a final mean."""
    lines = [f"name: chain_{n}", "inputs:", "  x: [N, D]", "  W: [D, D]", "  b: [D]", "graph:"]
    prev = "x"
    ops = ("tanh({})", "{} + b", "{} * 0.5", "{} @ W")
    for i in range(1, n):
        name = f"e{i:04d}"
        lines.append(f"  {name}: {ops[(i - 1) % 4].format(prev)}")
        prev = name
    lines.append(f"  loss: mean({prev})")
    lines.append("output: loss")
    lines.append("wrt: [W, b]")
    return "\n".join(lines) + "\n"


def build_scaling(tmp_root):
    d = os.path.join(tmp_root, "chains")
    os.makedirs(d, exist_ok=True)
    build_text = None
    try:
        from gradgen import pipeline

        build_text = getattr(pipeline, "build_text", None)
    except Exception:
        build_text = None
    mode = "in-process gradgen.pipeline.build_text" if build_text else "subprocess python -m gradgen build"
    log("")
    log(f"build-time scaling ({mode})")
    log(f"{'entries':>8} {'seconds':>9} {'ms/entry':>9} {'module lines':>13}")

    def one(n):
        path = os.path.join(d, f"chain_{n}.yaml")
        text = chain_spec(n)
        with open(path, "w") as f:
            f.write(text)
        if build_text is not None:
            t0 = time.perf_counter()
            built = build_text(path, text)
            secs = time.perf_counter() - t0
            files = getattr(built, "files", built)  # a Built object or a list of (filename, content)
            lines = sum(c.count("\n") for fn, c in files if not os.path.basename(fn).startswith("test_"))
        else:
            out = os.path.join(d, f"out_{n}")
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "gradgen", "build", path, "--out", out],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            secs = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip()[-2000:])
            mod = os.path.join(out, f"chain_{n}.py")
            lines = pathlib.Path(mod).read_text().count("\n") if os.path.exists(mod) else -1
        return secs, lines

    try:
        one(10)  # warm-up: pays the imports (jinja2, black) once
        for n in CHAIN_LENGTHS:
            secs, lines = one(n)
            if secs < 1.0:  # cheap enough to take the best of three
                secs = min([secs] + [one(n)[0] for _ in range(2)])
            log(f"{n:>8} {secs:>9.3f} {1000 * secs / n:>9.2f} {lines:>13}")
    except Exception as e:
        log(f"build-time scaling failed: {type(e).__name__}: {str(e)[:2000]}")


def cli_startup(reps=5):
    log("")
    log("CLI start-up")

    def wall(args, reps=5):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts), proc

    base, _ = wall(["-c", "pass"], reps)
    for flag in ("--version", "--help"):
        secs, proc = wall(["-m", "gradgen", flag], reps)
        imp = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "gradgen", flag],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        loaded = set()
        for line in imp.stderr.splitlines():
            if line.startswith("import time:") and "|" in line:
                loaded.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        heavy = {m: ("yes" if m in loaded else "no") for m in ("black", "jinja2", "numpy", "yaml")}
        out = (proc.stdout.strip().splitlines() or [""])[0][:60]
        log(
            f"  gradgen {flag:<9} exit {proc.returncode}  {1000 * secs:7.1f} ms  (python -c pass: "
            f"{1000 * base:.1f} ms)  imports: "
            + ", ".join(f"{m}={v}" for m, v in heavy.items())
            + (f"  [{out}]" if flag == "--version" else "")
        )


# ---------------------------------------------------------------------------------------------------------
# main


COLUMNS = [
    ("workload", 20, "s"),
    ("size", 7, "s"),
    ("dtype", 8, "s"),
    ("gen ms", 9, ".3f"),
    ("ref ms", 9, ".3f"),
    ("gen/ref", 8, ".3f"),
    ("gen/floor", 9, ".3f"),
    ("ref/floor", 9, ".3f"),
    ("gen/torch", 9, ".3f"),
    ("gen/jax", 8, ".3f"),
    ("gen/autograd", 12, ".3f"),
    ("mem gen/ref", 11, ".3f"),
]


def fmt_row(values):
    out = []
    for (name, width, f), v in zip(COLUMNS, values):
        if isinstance(v, str):
            out.append(v.rjust(width) if f != "s" or name not in ("workload",) else v.ljust(width))
        else:
            out.append(format(v, f).rjust(width))
    return " ".join(out)


def header():
    return " ".join(n.ljust(w) if n == "workload" else n.rjust(w) for n, w, _ in COLUMNS)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="small,medium", help="comma list of small,medium,large (default small,medium)"
    )
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--repeats", type=int, default=None, help="paired samples per cell (default 15, tiny 3)")
    p.add_argument("--tiny", action="store_true", help="very small sizes and few repeats (smoke test)")
    p.add_argument("--no-build-scaling", action="store_true", help="skip the build-time scaling table")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI start-up measurement")
    p.add_argument("--no-checks", action="store_true", help="skip the input-check cost table")
    p.add_argument("--peers", default=",".join(PEERS), help="comma list of torch,jax,autograd, or none")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="BLAS / peer threads (default: all)"
    )
    p.add_argument("--pause", type=float, default=0.5, help="seconds of pause between libraries")
    p.add_argument("--min-sample", type=float, default=0.002, help="minimum seconds per timing sample")
    p.add_argument("--generated", default=os.path.join(ROOT, "generated"), help="folder of generated modules")
    p.add_argument("--rebuild", action="store_true", help="build the modules into a temp dir even if present")
    args = p.parse_args(argv)
    args.sizes = ["tiny"] if args.tiny else [s for s in args.sizes.split(",") if s]
    for s in args.sizes:
        if s not in SIZES:
            p.error(f"unknown size {s!r}")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    for d in args.dtypes:
        if d not in ("float32", "float64"):
            p.error(f"unknown dtype {d!r}")
    args.workloads = [w for w in args.workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    args.peers = [] if args.peers.strip().lower() in ("", "none") else [x for x in args.peers.split(",") if x]
    for x in args.peers:
        if x not in PEERS:
            p.error(f"unknown peer {x!r}")
    if args.repeats is None:
        args.repeats = 3 if args.tiny else 15
    if args.tiny:
        args.pause = min(args.pause, 0.05)
        args.min_sample = min(args.min_sample, 0.0005)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    limiter = (
        threadpoolctl.threadpool_limits(limits=args.threads)
        if threadpoolctl is not None
        else contextlib.nullcontext()
    )
    tmp_root = tempfile.mkdtemp(prefix="gradgen_bench_")
    try:
        with limiter:
            return _run(args, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _run(args, tmp_root):
    for line in machine_lines(args.threads):
        log(line)
    mods, gen_dir = load_generated(args.workloads, args.generated, args.rebuild, tmp_root)
    log(f"generated modules: {gen_dir}")

    peers = {}
    for name in args.peers:
        if _peer_available(name):
            peers[name] = PEER_FACTORIES[name]
        else:
            log(f"peer {name}: not installed")
    if "torch" in peers:
        import torch

        log(f"peer torch {torch.__version__} (eager autograd, {args.threads} threads)")
    if "jax" in peers:
        import jax

        log(f"peer jax {jax.__version__} (jax.jit(jax.value_and_grad))")
    if "autograd" in peers:
        from importlib.metadata import version

        import autograd  # noqa: F401

        log(f"peer autograd {version('autograd')} (HIPS autograd)")

    # correctness first: every workload and size in float64, plus each requested dtype
    for w in args.workloads:
        for s in args.sizes:
            for dt in sorted(set(args.dtypes) | {"float64"}, reverse=True):
                check_against_reference(w, mods[w], SIZES[s][w], dt)
    log(
        "correctness: generated value_and_grad matches the hand-written reference (float64 allclose) "
        "for every workload and size"
    )
    log("")
    log("times: median per step; ratios: median of paired, interleaved samples (lower is better for gen)")
    log(header())
    notes = []
    for s in args.sizes:
        for w in args.workloads:
            for dt in args.dtypes:
                sizes = SIZES[s][w]
                inputs = R.make_inputs(w, sizes, dt)
                spec = R.WORKLOADS[w]
                gen = gen_step(mods[w])
                ref = spec["value_and_grad"]
                floor_args = spec["floor_setup"](*inputs)
                floor = spec["floor"]
                g = lambda: gen(*inputs)
                r = lambda: ref(*inputs)
                f = lambda: floor(*floor_args)
                (tg, tr, tf), _ = paired([g, r, f], args.repeats, args.min_sample)
                mem_g, mem_r = peak_memory(g), peak_memory(r)
                row = [
                    w,
                    s,
                    dt,
                    1000 * statistics.median(tg),
                    1000 * statistics.median(tr),
                    median_ratio(tg, tr),
                    median_ratio(tg, tf),
                    median_ratio(tr, tf),
                ]
                ref_result = r()
                peer_ms = {}
                for name in PEERS:
                    if name not in args.peers:
                        row.append("-")
                        continue
                    if name not in peers:
                        row.append("n/a")
                        continue
                    try:
                        time.sleep(args.pause)
                        step, to_numpy = peers[name](w, inputs, args.threads)
                        warn = check_peer(name, w, step, to_numpy, inputs, ref_result)
                        if warn:
                            notes.append(f"{w} {s} {dt}: {warn}")
                        ratio, tp = blocked_peer_ratio(g, step, args.repeats, args.min_sample, args.pause)
                        row.append(ratio)
                        peer_ms[name] = 1000 * tp
                        time.sleep(args.pause)
                    except Exception as e:  # a peer failing must not stop the benchmark
                        notes.append(f"{w} {s} {dt}: {name} failed: {type(e).__name__}: {str(e)[:200]}")
                        row.append("err")
                row.append(mem_g / mem_r if mem_r else float("nan"))
                log(fmt_row(row))
                notes.append(
                    f"{w} {s} {dt}: sizes {sizes}; gen/ref of the fastest samples {min(tg) / min(tr):.3f}; "
                    f"peak MiB gen {mem_g / 2**20:.3f} ref {mem_r / 2**20:.3f}"
                    + "".join(f"; {k} {v:.3f} ms" for k, v in peer_ms.items())
                )
    log("")
    for n in notes:
        log("  " + n)
    if not args.no_checks:
        checks_cost(args, mods)
    if not args.no_build_scaling:
        build_scaling(tmp_root)
    if not args.no_cli:
        cli_startup(reps=2 if args.tiny else 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
