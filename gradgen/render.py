"""Stage 5, render: lay a Plan out through the Jinja templates (expressions arrive as finished text)."""

from __future__ import annotations

import json
import math
import re
import textwrap
from functools import lru_cache
from pathlib import Path

from gradgen import __version__
from gradgen.escape import one_line
from gradgen.plan import Plan, RangeCheck

SIZE_SEQUENCE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)


def template_dir() -> Path:
    """The templates ship inside the package (wheel) or sit at the top of the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "module.py.j2").is_file():
            return candidate
    raise FileNotFoundError("gradgen's templates folder is missing from the installation")


@lru_cache(maxsize=1)
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


LINE_LENGTH = 100  # black's line length in gradgen.fmt


RUN = 3  # this many statements in a row citing one rule get the comment once, above them


def _lines(lines) -> list[str]:
    """Statement lines with their comments: trailing when the line fits, else on a line above; a run
    of RUN or more statements that cite the same rule (a max-pool's or a convolution's unrolled kernel
    offsets) gets it once, above the run, and so does a shorter run where the comment would stand
    above a line anyway (it would otherwise be written twice in a row)."""
    lines, out, k = list(lines), [], 0
    while k < len(lines):
        end = _run_end(lines, k)
        run = lines[k:end]
        if end - k >= RUN or (end - k >= 2 and not all(_fits(x.code, one_line(x.comment)) for x in run)):
            out += [f"# {one_line(lines[k].comment)}"] + [line.code for line in lines[k:end]]
        else:
            out += _line(lines[k].code, one_line(lines[k].comment) if lines[k].comment else None)
            end = k + 1
        k = end
    return out


def _run_end(lines, k: int) -> int:
    """The end of the run of statements from ``k`` that cite ``lines[k]``'s rule (shape comments,
    ``[N, K]``, say something of each line and stay with it)."""
    end = k + 1
    if lines[k].code and lines[k].comment and not lines[k].comment.startswith("["):
        while end < len(lines) and lines[end].code and lines[end].comment == lines[k].comment:
            end += 1
    return end


def _line(code: str, comment: str | None) -> list[str]:
    if not code:
        return [f"# {comment}"] if comment else []
    if not comment:
        return [code]
    if _fits(code, comment):
        return [f"{code}  # {comment}"]
    return [f"# {comment}", code]


def _fits(code: str, comment: str) -> bool:
    """The comment fits at the end of the (indented) line; black may space a slice's colon: x[: n + 1]."""
    return "\n" not in code and 4 + len(code) + code.count(":") + 4 + len(comment) <= LINE_LENGTH


def _dim_lines(plan: Plan) -> list:
    """Per input: the lines that check its dims against those already bound, and bind new ones."""
    bound: dict[str, str] = {}
    out = []
    pending: list = []  # product axes whose dims are not all bound yet
    for c in plan.dim_checks:
        lines = []
        products = {ax for ax, *_ in c.products}
        new = [(ax, text, var) for ax, text, var in c.dims if var is not None and text not in bound]
        first_seen = set()
        if new and len(new) == c.rank and len({v for _, _, v in new}) == c.rank:
            lines.append(f"{', '.join(v for _, _, v in new)}{',' if c.rank == 1 else ''} = {c.input}.shape")
            for _, text, _var in new:
                bound[text] = c.input
                first_seen.add(text)
        for ax, text, var in c.dims:
            if ax in products:
                continue
            if var is None:
                lines.append(f"if {c.input}.shape[{ax}] != {text}:")
                lines.append(
                    f'    raise ValueError(f"{c.input}: dim {ax} must be {text}, got {{{c.input}.shape[{ax}]}}")'
                )
            elif text in first_seen:
                continue
            elif text in bound:
                lines.append(f"if {c.input}.shape[{ax}] != {var}:")
                lines.append(
                    f'    raise ValueError(f"{c.input}: dim {text} is {{{c.input}.shape[{ax}]}} here '
                    f'but {{{var}}} from {bound[text]}")'
                )
            else:
                lines.append(f"{var} = {c.input}.shape[{ax}]")
                bound[text] = c.input
        pending += [(c.input, product) for product in c.products]
        ready = [(name, pr) for name, pr in pending if all(d in bound for d, _ in pr[3])]
        pending = [item for item in pending if item not in ready]
        for name, product in ready:
            lines += _product_check(name, *product)
        shape = "[" + ", ".join(t for _, t, _ in c.dims) + "]"
        out.append({"input": c.input, "rank": c.rank, "lines": lines, "shape": shape})
    return out


def _product_check(name: str, ax: int, text: str, code: str, factors) -> list[str]:
    """An axis sized by a product of dims (Wqkv: [D, 3*D]) must equal that product of the bound dims."""
    sizes = ", ".join(f"{d} = {{{var}}}" for d, var in factors)
    return [
        f"if {name}.shape[{ax}] != {code}:",
        f'    raise ValueError(f"{name}: dim {ax} must be {text} = {{{code}}} ({sizes}), '
        f'got {{{name}.shape[{ax}]}}")',
    ]


def _size_expr(text: str, sizes: dict[str, int]) -> str:
    """A dim's text (N, 3, B*T) as Python reading the test's SIZES table."""
    return re.sub(r"[A-Za-z_][A-Za-z0-9_]*", lambda m: f'SIZES["{m.group()}"]', text.replace("*", " * "))


def range_condition(c: RangeCheck) -> str:
    """The test that an int input holds an entry outside 0 <= entry < size: two cheap scans, argmin and
    argmax (a fraction of a microsecond at a few hundred labels, where .min() and .max() cost about a
    microsecond each), and none for an empty array.  benchmarks/run.py times this exact text."""
    a, size = c.input, c.size
    if c.rank == 0:
        return f"not 0 <= {a} < {size}"
    return f"{a}.size and not (0 <= {a}.item({a}.argmin()) and {a}.item({a}.argmax()) < {size})"


def _input_checks(plan: Plan) -> dict:
    """Template variables for ``_check_inputs``: its fast test, its careful path, what it returns."""
    floats = [n for n, _, d in plan.inputs if d == "float"]
    ints = [n for n, _, d in plan.inputs if d == "int"]
    usual = []
    if floats:
        usual.append(f'{floats[0]}.dtype.kind == "f"')
        if len(floats) > 1:
            usual.append(" == ".join(f"{n}.dtype" for n in floats))
    usual += [f'{n}.dtype.kind in "iu"' for n in ints]
    bools = [n for n, _, d in plan.inputs if d == "bool"]
    usual += [f'{n}.dtype.kind == "b"' for n in bools]
    returned = [n for n, _, _ in plan.inputs] + [v for _, v in plan.dims]
    flag, k = "usual", 1
    while flag in returned:  # the one local of _check_inputs that is neither an input nor a dim
        k += 1
        flag = f"usual_{k}"
    ranges = [
        {"cond": range_condition(c), "input": c.input, "size": c.size, "dim": c.dim, "role": c.role}
        for c in plan.index_checks
    ]
    problems = ["a wrong rank or an inconsistent dim"]
    if floats:
        problems += ["a bool or complex array", "float inputs of different dtypes"]
    if ints:
        problems.append(
            "an int input that is not integer" + (" or holds an index out of range" if ranges else "")
        )
    if bools:
        problems.append("a mask (bool input) that is not a bool array")
    if plan.nonempty_checks:
        problems.append("a zero size where an op needs entries")
    if plan.order_checks:
        problems.append("sizes that a static index does not fit")
    if plan.minimum_checks:
        problems.append("a size smaller than a window or a ddof needs")
    doc = "Check the inputs; return them as arrays" + (", then the dims they bind." if plan.dims else ".")
    raises = "Raise ValueError naming the input for " + ", ".join(problems[:-1])
    raises += (", or " if len(problems) > 1 else "") + problems[-1] + "."
    return {
        "usual": " and ".join(usual),
        "usual_flag": flag,
        "float_inputs": floats,
        "float_targets": _tuple_text(floats) if len(floats) == 1 else ", ".join(floats),
        "float_kwargs": ", ".join(f"{n}={n}" for n in floats),
        "int_inputs": ints,
        "bool_inputs": bools,
        "range_checks": ranges,
        "check_doc": [doc, ""] + textwrap.wrap(raises, LINE_LENGTH - 8),
        "nonempty_checks": [{"dim": d, "message": repr(m)} for d, m in plan.nonempty_checks],
        "order_checks": [{"lo": lo, "hi": hi, "message": repr(m)} for lo, hi, m in plan.order_checks],
        "minimum_checks": [
            {"dim": d, "minimum": k, "message": _size_message(head, d, tail)}
            for d, k, head, tail in plan.minimum_checks
        ],
        "returned": ", ".join(returned) if len(returned) > 1 else returned[0],
    }


def _size_message(head: str, dim: str, tail: str) -> str:
    """An f-string literal that shows the size: no builtin (str) is read, so no spec name can shadow one."""
    escape = lambda text: text.replace("{", "{{").replace("}", "}}")
    return "f" + repr(escape(head) + "{" + dim + "}" + escape(tail))


def render_module(plan: Plan) -> str:
    args = ", ".join(name for name, _, _ in plan.inputs)
    dim_vars = [v for _, v in plan.dims]
    dims_tuple = ", ".join(dim_vars) + ("," if len(dim_vars) == 1 else "")
    checks = _input_checks(plan)
    cache_fields = list(plan.cache_fields)
    text = (
        _env()
        .get_template("module.py.j2")
        .render(
            version=__version__,
            source=one_line(plan.source_path),
            name=plan.name,
            description=one_line(plan.description),
            inputs=[{"name": n, "shape": one_line(s), "dtype": d} for n, s, d in plan.inputs],
            output=one_line(plan.output),
            output_shape=one_line(plan.output_shape),
            scalar_output=plan.scalar_output,
            wrt=list(plan.wrt),
            args=args,
            cache_fields=[
                (f, "int" if f in dim_vars else "np.dtype" if k == len(cache_fields) - 1 else "np.ndarray")
                for k, f in enumerate(cache_fields)
            ],
            cache_args=", ".join(list(plan.cache_values) + [plan.output_dtype]),
            cache_unpack=", ".join(cache_fields) + ("," if len(cache_fields) == 1 else ""),
            dim_checks=_dim_lines(plan),
            dims_tuple=dims_tuple,
            bind_dims=f"{checks['returned']} = _check_inputs({args})",
            dout_shape=plan.dout_shape,
            **checks,
            forward=_lines(plan.forward),
            forward_out=plan.forward_out,
            backward=_lines(plan.backward),
            fused=_lines(plan.fused),
            fused_out=plan.fused_out,
            grads=", ".join(f"{n}={e}" for n, e in plan.grads),
            imports_math=plan.imports_math,
            helpers=plan.helpers,
            fused_grads=", ".join(f"{n}={e}" for n, e in plan.fused_grads),
            derivs=_derivatives(plan, args),
        )
    )
    return text


def _derivatives(plan: Plan, args: str) -> dict | None:
    """What templates/derivatives.py.j2 needs: the functions, their usage lines, the NamedTuples."""
    d = plan.derivatives
    if d is None:
        return None
    kinds = set(d.kinds)
    out = plan.output
    usage = {
        "jvp": f"{out}, {out}_dot = jvp({args}, tangents)  # tangents: one array per wrt input",
        "jacobian": f"{out}, J = jacobian({args})  # J.<input>: {out}.shape + <input>.shape",
        "hvp": f"{out}, grads, Hv = hvp({args}, v)  # v: one array per wrt input",
        "hessian": f"{out}, grads, H = hessian({args})  # H.<a>.<b>: a.shape + b.shape",
    }
    fixed = [n for n, _, _ in plan.inputs if n not in plan.wrt]
    exports = ["Wrt"] + (["Jacobian"] if kinds & {"jacobian", "hessian"} else [])
    exports += ["Hessian"] if "hessian" in kinds else []
    exports += [k for k in d.kinds if k in usage] + ["objective"]
    return {
        "kinds": ["vjp"] + [k for k in d.kinds if k != "vjp"],
        "usage": [usage[k] for k in d.kinds if k in usage]
        + [f"obj = objective({', '.join(fixed)})  # for scipy.optimize, see objective"],
        "exports": exports,
        "functions": [
            {"name": f.name, "args": f.args, "doc": _doc(f.doc), "body": _lines(f.body), "returns": f.returns}
            for f in d.functions
        ],
        "jacobian_class": bool(kinds & {"jacobian", "hessian"}),
        "hessian_class": "hessian" in kinds,
        "has_hvp": "hvp" in kinds,
        "has_hessian": "hessian" in kinds,
        "has_jacobian": "jacobian" in kinds,
        "fixed": fixed,
    }


def _doc(text: str) -> str:
    """A function's docstring text wrapped to the line length (continuation lines indented by 4)."""
    import textwrap

    return "\n    ".join(textwrap.wrap(text, width=LINE_LENGTH - 8, break_long_words=False))


def _fitting(sizes: dict[str, int], orders) -> dict[str, int]:
    """The test sizes, with a dim raised past all others while a static index needs lo <= hi and
    it is not (``K <= D`` for ``x[:, :K]``); sizes stay distinct.  Conditions that no sizes meet are
    left to fail in the tests, loudly."""

    def value(d) -> int:
        return sum(c * math.prod(sizes[s] for s in m) for m, c in d.terms)

    for _ in range(8 * len(orders)):
        bad = next(((lo, hi) for lo, hi in orders if value(lo) > value(hi)), None)
        if bad is None or not bad[1].symbols:
            break
        sizes[bad[1].symbols[0]] = max(sizes.values()) + 1
    return sizes


def render_test(plan: Plan) -> str:
    sizes = _fitting(
        {sym: SIZE_SEQUENCE[k % len(SIZE_SEQUENCE)] for k, sym in enumerate(plan.dim_symbols)},
        plan.order_dims + plan.window_dims,
    )
    inputs = []
    for name, shape, _dtype, domain in plan.test_inputs:
        shape_py = _tuple_text([_size_expr(t, sizes) for t in shape])
        if domain.kind in ("labels", "indices"):
            maker = f"_{domain.kind}(rng, {_size_expr(str(domain.bound), sizes)}, {shape_py})"
        elif _dtype == "bool":
            maker = f"rng.random({shape_py}) < 0.75"
        elif domain.kind == "probs":
            maker = f"_softmax_rows(rng.standard_normal({shape_py})).astype(dtype)"
        elif domain.kind == "positive":
            maker = f"rng.uniform(0.5, 2.0, size={shape_py}).astype(dtype)"
        else:
            maker = f"rng.standard_normal({shape_py}).astype(dtype)"
        inputs.append({"name": name, "maker": maker})
    bad_rank = next((n for n, shape, dtype, _ in plan.test_inputs if dtype == "float"), None)
    bad_dim = None
    seen: dict[str, str] = {}
    for n, shape, _dtype, _ in plan.test_inputs:
        for ax, t in enumerate(shape):
            if t.isidentifier() and t in seen and bad_dim is None:
                bad_dim = {"input": n, "axis": ax, "dim": t}
            seen.setdefault(t, n)
    runtime = _runtime_test_tables(plan, sizes)
    return (
        _env()
        .get_template("test_module.py.j2")
        .render(
            version=__version__,
            source=one_line(plan.source_path),
            name=plan.name,
            sizes="{" + ", ".join(f'"{k}": {v}' for k, v in sizes.items()) + "}",
            wrt_list="[" + ", ".join(f'"{w}"' for w in plan.wrt) + "]",
            constant_list="(" + "".join(f'"{w}", ' for w in plan.constant) + ")",
            inputs=inputs,
            scalar_output=plan.scalar_output,
            out_shape=_tuple_text(
                [_size_expr(t.strip(), sizes) for t in plan.output_shape[1:-1].split(",") if t.strip()]
            ),
            bad_rank=bad_rank,
            bad_dim=bad_dim,
            **runtime,
            edges=_py([tuple(e) for e in plan.edges]),
            draws={d.kind for _, _, _, d in plan.test_inputs},
            kinks=[_kink(k) for k in plan.kinks],
            dout_kinds=_py(
                ["float32", "float64"]
                + (["python float", "numpy float64 scalar"] if plan.scalar_output else [])
            ),
            derivs=_test_derivatives(plan),
        )
    )


def _test_derivatives(plan: Plan) -> dict | None:
    d = plan.derivatives
    if d is None:
        return None
    kinds = set(d.kinds)
    mode = d.jacobian_mode
    return {
        "kinds": ["vjp"] + [k for k in d.kinds if k != "vjp"],
        "has_jvp": "jvp" in kinds,
        "has_hvp": "hvp" in kinds,
        "has_jacobian": "jacobian" in kinds,
        "has_hessian": "hessian" in kinds,
        "jacobian_functions": (
            '["jacobian", "_jacobian_rows", "_jacobian_columns"]' if mode == "run time" else '["jacobian"]'
        ),
    }


def _runtime_test_tables(plan: Plan, sizes: dict[str, int]) -> dict:
    """The tables the run-time check tests read: float and int inputs, the bound of each index input,
    and where each symbolic dim sits among the inputs."""
    bounds: dict[str, str] = {}
    for c in plan.index_checks:  # an input indexing two axes: the smaller bound is the one to break
        if c.input not in bounds or _size_value(c.dim, sizes) < _size_value(bounds[c.input], sizes):
            bounds[c.input] = c.dim
    axes: dict[str, list[str]] = {}
    for name, shape, _dtype, _ in plan.test_inputs:
        for ax, t in enumerate(shape):
            # a dim set to 0 empties every axis it is a factor of (D, 3*D, H*Dh)
            for factor in sorted({f for f in re.split(r"[ *+]+", t) if f.isidentifier()}):
                axes.setdefault(factor, []).append(f'("{name}", {ax})')
    floats = [n for n, _, d in plan.inputs if d == "float"]
    ints = [n for n, _, d in plan.inputs if d == "int"]
    bools = [n for n, _, d in plan.inputs if d == "bool"]
    return {
        "has_index_inputs": bool(bounds),
        "has_int_inputs": bool(ints),
        "several_float_inputs": len(floats) > 1,
        "has_dims": bool(axes),
        "float_list": "[" + ", ".join(f'"{n}"' for n in floats) + "]",
        "int_list": "[" + ", ".join(f'"{n}"' for n in ints) + "]",
        "has_bool_inputs": bool(bools),
        "bool_list": "[" + ", ".join(f'"{n}"' for n in bools) + "]",
        "index_bounds": "{" + ", ".join(f'"{k}": {_size_expr(v, sizes)}' for k, v in bounds.items()) + "}",
        "dim_axes": "{" + ", ".join(f'"{d}": [{", ".join(v)}]' for d, v in axes.items()) + "}",
    }


def _size_value(text: str, sizes: dict[str, int]) -> int:
    """A dim's text (10, C, B*T, 2*D + E) evaluated at the test's sizes."""
    total = 0
    for term in text.split("+"):
        value = 1
        for factor in term.split("*"):
            factor = factor.strip()
            value *= int(factor) if factor.isdigit() else sizes[factor]
        total += value
    return total


def _kink(site) -> dict:
    """A forced kink as the test's KINKS row shows it (names are identifiers; the rule is gradgen's text)."""
    what = f"{site.op} in {site.entry}: {site.rule}"
    return {"what": _py(what), "control": site.control, "zeroed": _py(site.zeroed), "side": site.side}


def _py(value) -> str:
    """A literal of str, int, list and tuple values, strings in double quotes as black writes them."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a Python string literal of the same value
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _tuple_text(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
