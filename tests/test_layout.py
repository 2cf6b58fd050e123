"""The code's structure: no import cycles inside textlora (imports inside functions count), and a
verb opens its run directory once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "textlora"


def _imports() -> dict[str, set[str]]:
    """module -> the textlora modules it imports anywhere in its file (``from textlora import x`` counts as the package)."""
    graph = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        mod = ".".join(("textlora",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "textlora":
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "textlora"}
        graph[mod] = deps - {mod}
    return graph


def test_no_import_cycles():
    graph = _imports()
    assert "textlora.runtime" in graph and "textlora.run" in graph

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for m in graph if (c := cycle_from(m))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"
    # the leaves import nothing of textlora but errors (runtime: and the device seam; metrics: runtime's THRESHOLD)
    assert graph["textlora.device"] <= {"textlora.errors"}
    assert graph["textlora.runtime"] <= {"textlora.errors", "textlora.device"}
    assert graph["textlora.metrics"] <= {"textlora.runtime"}


@pytest.mark.parametrize("verb", ["predict", "evaluate", "report", "pseudolabel", "export"])
def test_each_verb_opens_its_run_once(verb, trained, monkeypatch, tmp_path):
    """The run is opened where the user's path comes in and the Run is passed down: open_run runs
    once a verb and config.yaml is read once, however deep the calls go (load, Classifier, load_model)."""
    import textlora.config
    import textlora.run
    from textlora.cli import main

    opens, reads = [], []
    real_open, real_read = textlora.run.open_run, textlora.config.config_from_dict
    monkeypatch.setattr(textlora.run, "open_run", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    monkeypatch.setattr(textlora.config, "config_from_dict", lambda raw: reads.append(1) or real_read(raw))
    run, data = str(trained / "run"), str(trained / "test.csv")
    argv = {
        "predict": ["--data", data, "--output", str(tmp_path / "p.csv")],
        "evaluate": ["--data", data],
        "report": ["--output", str(tmp_path / "r.html")],
        "pseudolabel": ["--data", data, "--output", str(tmp_path / "pl.csv"), "--min-confidence", "0"],
        "export": ["--output", str(tmp_path / "hf")],
    }[verb]
    assert main([verb, "--model", run, *argv]) == 0
    assert len(opens) == 1 and len(reads) == 1, (opens, reads)


def test_public_api_names_stay_functions_after_any_import():
    """``textlora.train`` (and evaluate, predict) is the function, also after every submodule was imported:
    no submodule may share a name with the public API, or the import system rebinds it to the module."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, textlora\n"
        "first = {n: callable(getattr(textlora, n)) for n in textlora._API}\n"
        "for m in pkgutil.walk_packages(textlora.__path__, 'textlora.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "import types\n"
        "bad = [n for n in textlora._API if isinstance(getattr(textlora, n), types.ModuleType)]\n"
        "assert all(first.values()), first\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]


def test_declared_python_is_what_the_suite_runs_on():
    """pyproject may claim only Pythons the suite runs on: 3.11 and newer (CI's interpreter). Before 3.11,
    asyncio.wait_for raises asyncio.TimeoutError, a different class from TimeoutError, and serve's
    batcher would die on its first timeout."""
    import sys
    import tomllib

    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]["requires-python"])
    assert spec.contains(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert not spec.contains("3.10"), f"requires-python {spec} admits 3.10, which the suite never runs on"


def test_no_function_is_longer_than_80_lines():
    """Long verbs are split into named steps (as train() is), so each reads on one screen."""
    long = []
    for f in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{f.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
