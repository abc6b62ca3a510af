"""gradgen ops, gradgen schema (JSON Schema of the spec format), gradgen init."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from gradgen import opdocs
from gradgen.cli import app
from gradgen.cost import RULES
from gradgen.ops import TABLE
from gradgen.schema import build_schema, render, schema_text

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, *args):
    return runner.invoke(app, [str(a) for a in args], prog_name="gradgen")


# --------------------------------------------------------------------------------------------------
# ops


def test_every_op_has_docs_and_a_cost_rule():
    assert set(opdocs.DOCS) == set(TABLE)
    assert set(RULES) == set(TABLE)


def test_ops_lists_every_op_with_its_signature(runner):
    result = run(runner, "ops")
    assert result.exit_code == 0
    for name in TABLE:
        assert opdocs.signature(name) in result.stdout
    assert 'softmax_cross_entropy(logits, labels, reduction="mean")' in result.stdout
    assert "sum(a, axis=None, keepdims=False)" in result.stdout
    assert "a @ b" in result.stdout and "a ** k" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


def test_ops_describes_softmax_cross_entropy(runner):
    result = run(runner, "ops", "softmax_cross_entropy")
    assert result.exit_code == 0
    out = result.stdout
    for heading in ("Parameters:", "Shape:", "Gradient (VJP", "Rule cited in generated code:", "Cost"):
        assert heading in out
    assert re.search(r"reduction\s+\"mean\" or \"sum\"; default \"mean\"", out)
    assert "Derivation (notes section 2):" in out
    assert TABLE["softmax_cross_entropy"].derivation.splitlines()[0] in out
    assert "softmax cross-entropy rule, notes section 2" in out


@pytest.mark.parametrize("typed, name", [("@", "matmul"), ("**", "pow"), (".T", "transpose"), ("+", "add")])
def test_ops_accepts_operator_symbols(runner, typed, name):
    result = run(runner, "ops", typed)
    assert result.exit_code == 0
    assert result.stdout.startswith(opdocs.signature(name))


def test_ops_cites_every_notes_section_an_op_uses(runner):
    assert opdocs.notes_sections(TABLE["matmul"]) == [3, 4, 5]
    assert opdocs.notes_sections(TABLE["add"]) == [6]
    assert opdocs.notes_sections(TABLE["mul"]) == [7]
    assert "Derivation (notes sections 3, 4, 5):" in run(runner, "ops", "matmul").stdout


def test_ops_unknown_name_exits_2_with_a_hint(runner):
    result = run(runner, "ops", "softmx")
    assert result.exit_code == 2
    assert "unknown op 'softmx'; did you mean 'softmax'?" in result.stderr


def test_unknown_op_in_a_spec_points_at_gradgen_ops(runner, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  y: sum(erfc(x))\n")
    result = run(runner, "build", spec, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "`gradgen ops NAME` describes each" in result.stderr


# --------------------------------------------------------------------------------------------------
# schema


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_shipped_schema_is_the_built_one():
    assert schema_text() == render(build_schema())
    assert (REPO / "gradgen" / "spec.schema.json").read_text() == schema_text()
    assert json.loads(schema_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_prints_and_writes(runner, tmp_path):
    result = run(runner, "schema")
    assert result.exit_code == 0 and result.stdout == schema_text()
    out = tmp_path / "editor" / "gradgen.schema.json"
    assert run(runner, "schema", "--out", out).exit_code == 0
    assert out.read_text() == schema_text()


@pytest.mark.parametrize("spec", sorted((REPO / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_spec_in_specs_validates(validator, spec):
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(spec.read_text()))]
    assert errors == []


GOOD = {"inputs": {"x": ["N", 3]}, "graph": {"y": "sum(x)"}}
BROKEN = {
    "missing graph": {"inputs": {"x": ["N"]}},
    "unknown top-level key": {**GOOD, "outputs": "y"},
    "unknown dtype": {"inputs": {"x": {"shape": ["N"], "dtype": "float32"}}, "graph": {"y": "sum(x)"}},
    "unknown input key": {"inputs": {"x": {"shape": ["N"], "dims": 1}}, "graph": {"y": "sum(x)"}},
    "shape not a list": {"inputs": {"x": "N, D"}, "graph": {"y": "sum(x)"}},
    "dim zero": {"inputs": {"x": [0]}, "graph": {"y": "sum(x)"}},
    "dim with a space": {"inputs": {"x": ["N D"]}, "graph": {"y": "sum(x)"}},
    "underscore name": {"inputs": {"_x": ["N"]}, "graph": {"y": "sum(_x)"}},
    "block without params": {**GOOD, "blocks": {"b": {"graph": {"out": "exp(a)"}}}},
    "block with an unknown key": {
        **GOOD,
        "blocks": {"b": {"params": ["a"], "graph": {"o": "a"}, "outputs": "o"}},
    },
    "malformed product dim": {"inputs": {"x": ["N", "2**D"]}, "graph": {"y": "sum(x)"}},
    "reserved name": {"inputs": {"dout": ["N"]}, "graph": {"y": "sum(dout)"}},
    "keyword name": {"inputs": {"x": ["N"]}, "graph": {"lambda": "sum(x)"}},
    "number as expression": {"inputs": {"x": ["N"]}, "graph": {"y": 3}},
    "empty wrt": {**GOOD, "wrt": []},
    "module named numpy": {**GOOD, "name": "numpy"},
    "empty inputs": {"inputs": {}, "graph": {"y": "1"}},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_specs_fail_the_schema_and_gradgen(validator, runner, tmp_path, case):
    doc = BROKEN[case]
    assert list(validator.iter_errors(doc)), f"the schema accepts: {case}"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert run(runner, "check", spec, "--out", tmp_path / "out").exit_code == 2, "gradgen accepts it"


def test_the_schema_accepts_what_gradgen_accepts(validator):
    assert not list(validator.iter_errors(GOOD))
    both = {**GOOD, "name": "m", "description": "d", "output": "y", "wrt": "x"}
    assert not list(validator.iter_errors(both))
    # an entry named like an op, products of dims, and blocks of both kinds
    language = {
        "inputs": {"x": ["N", "3*D"], "w": ["D"]},
        "blocks": {
            "scale": {"params": ["a", "k"], "graph": {"out": "a * k"}},
            "norm": {
                "params": {"a": ["M", "E"], "g": {"shape": ["E"]}},
                "graph": {"o": "a * g"},
                "output": "o",
            },
        },
        "graph": {"exp": "exp(x)", "y": "sum(exp)"},
    }
    assert not list(validator.iter_errors(language))


# --------------------------------------------------------------------------------------------------
# init


def test_init_writes_a_starter_that_builds_and_validates(runner, tmp_path, monkeypatch, validator):
    monkeypatch.chdir(tmp_path)
    result = run(runner, "init", "classifier")
    assert result.exit_code == 0, result.output
    spec = tmp_path / "specs" / "classifier.yaml"
    text = spec.read_text()
    assert text.startswith("# A gradgen spec")
    assert text.count("#") >= 10  # commented
    assert not list(validator.iter_errors(yaml.safe_load(text)))
    built = run(runner, "build", "specs")
    assert built.exit_code == 0, built.output
    assert (tmp_path / "generated" / "classifier.py").is_file()
    assert built.stderr == ""  # no warnings either


def test_init_refuses_to_overwrite_and_bad_names(runner, tmp_path):
    assert run(runner, "init", "net", "--dir", tmp_path).exit_code == 0
    (tmp_path / "net.yaml").write_text("mine\n")
    result = run(runner, "init", "net", "--dir", tmp_path)
    assert result.exit_code == 2 and "exists" in result.stderr
    assert (tmp_path / "net.yaml").read_text() == "mine\n"
    assert run(runner, "init", "net", "--dir", tmp_path, "--force").exit_code == 0
    assert (tmp_path / "net.yaml").read_text().startswith("# A gradgen spec")
    for bad in ("2net", "_net", "numpy", "class", "my-net"):
        result = run(runner, "init", bad, "--dir", tmp_path)
        assert result.exit_code == 2, bad
        assert not (tmp_path / f"{bad}.yaml").exists()


@pytest.mark.parametrize(
    "first", ["gradgen.ops_index", "gradgen.ops_elem", "gradgen.lower", "gradgen.schema"]
)
def test_callable_ops_follow_the_table_whatever_is_imported_first(first):
    """An op family module imported before gradgen.ops registers its rows after gradgen.ops has run to
    its end: the callable ops are read from the table when asked, so stack and gelu are never missed."""
    import subprocess
    import sys

    code = (
        f"import {first}\n"
        "from gradgen.ops import TABLE, callable_ops\n"
        "from gradgen.pipeline import plan_text\n"
        "names = callable_ops()\n"
        "assert names == tuple(sorted(n for n, d in TABLE.items() if d.callable)), names\n"
        "assert {'stack', 'gelu', 'where', 'conv2d', 'max'} <= set(names), names\n"
        "spec = 'inputs:\\n  a: [N]\\n  b: [N]\\ngraph:\\n  s: stack([a, b], axis=0)\\n  loss: sum(gelu(s))\\n'\n"
        "plan, errors = plan_text('s.yaml', spec)\n"
        "assert plan is not None and not errors, errors\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_row_added_to_the_table_is_callable_at_once(monkeypatch):
    import dataclasses

    from gradgen import ops

    monkeypatch.setitem(ops.TABLE, "flip", ops.TABLE["exp"])
    assert "flip" in ops.callable_ops()
    monkeypatch.setitem(ops.TABLE, "flip", dataclasses.replace(ops.TABLE["exp"], callable=False))
    assert "flip" not in ops.callable_ops()
