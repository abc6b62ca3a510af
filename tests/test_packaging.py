"""The wheel ships the templates (slow-ish: builds a wheel from a copy of the sources in tmp_path).

`pip install .` users have no top-level templates/ folder, so the wheel must carry them as
gradgen/templates/, and gradgen must find them there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NETWORK_HINTS = (
    "Could not find a version",
    "No matching distribution",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeout",
    "Failed to establish a new connection",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in ("gradgen", "templates"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(dist)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-build-isolation")  # the backend is here: no index needed
    cmd.append(str(src))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=src)
    except subprocess.TimeoutExpired:
        pytest.skip("building the wheel timed out (no package index reachable to fetch hatchling?)")
    if proc.returncode != 0:
        log = proc.stdout + proc.stderr
        if any(h in log for h in NETWORK_HINTS):
            pytest.skip("cannot build a wheel offline: hatchling is not installed and no index is reachable")
        pytest.fail(f"pip wheel failed:\n{log}")
    wheels = list(dist.glob("gradgen-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_the_templates(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for t in ("module.py.j2", "test_module.py.j2"):
            assert f"gradgen/templates/{t}" in names, sorted(names)
            assert zf.read(f"gradgen/templates/{t}") == (REPO / "templates" / t).read_bytes()
        assert "gradgen/cli.py" in names and "gradgen/__main__.py" in names
        # the spec schema for editors (gradgen schema prints it from the installed package)
        assert zf.read("gradgen/spec.schema.json") == (REPO / "gradgen" / "spec.schema.json").read_bytes()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "gradgen = gradgen.cli:main" in zf.read(entry_points).decode()


def test_installed_wheel_builds_a_spec_in_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    (work / "net.yaml").write_text("inputs:\n  x: [N, D]\n  w: [D]\ngraph:\n  loss: sum(tanh(x @ w))\n")
    env = dict(os.environ, PYTHONPATH=str(site))  # the unpacked wheel shadows the source checkout
    probe = subprocess.run(
        [sys.executable, "-c", "import gradgen; print(gradgen.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert Path(probe.stdout.strip()).is_relative_to(site), probe.stdout + probe.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "gradgen", "build", "net.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (work / "generated").iterdir()) == ["net.py", "test_net.py"]
