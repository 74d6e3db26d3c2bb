"""The package's shape: every module imports alone, no import circles, private modules never
import a family's public facade, the core never imports streamlit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "interp"
FAMILIES = ("patching", "attribution", "ablation", "retrieval", "circuits")
# the CLI and the app are consumers on top: they use the public API, so they are not families here


def _modules() -> list[str]:
    out = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__" or "pages" in parts or parts[-1] == "explorer":
            continue  # scripts: run, not imported
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every ``import``/``from`` in the file, at any depth."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, node.lineno)]
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def test_every_module_imports_alone_in_a_fresh_interpreter():
    mods = _modules()
    assert "interp.patching" in mods and "interp._engine.schedule" in mods
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for m in {mods!r}:\n"
        "    for k in [k for k in sys.modules if k == 'interp' or k.startswith('interp.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


@pytest.mark.parametrize("family", FAMILIES)
def test_private_modules_never_import_a_public_facade(family):
    """``interp/<family>/_x.py`` may import private modules (its own or other families') and the
    foundation modules, never ``interp.<family>`` facades (the cause of import circles)."""
    facades = {f"interp.{f}" for f in FAMILIES}
    bad = []
    for f in sorted((PKG / family).glob("_*.py")):
        if f.name == "__init__.py":
            continue
        for mod, line in _imports(f):
            if mod in facades:
                bad.append(f"{f.relative_to(PKG.parent)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_facades_only_reexport():
    """A family's ``__init__`` holds imports, ``__all__`` and its docstring: no definitions."""
    bad = []
    for family in FAMILIES + ("cli",):
        tree = ast.parse((PKG / family / "__init__.py").read_text())
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.AsyncFunctionDef)) or (
                isinstance(node, ast.FunctionDef) and node.name != "main"
            ):
                bad.append(f"{family}/__init__.py:{node.lineno} defines {node.name}")
    assert not bad, "\n".join(bad)


def test_core_never_imports_streamlit():
    bad = []
    for f in PKG.rglob("*.py"):
        if f.is_relative_to(PKG / "app"):
            continue  # the explorer is the one place that imports streamlit
        for mod, line in _imports(f):
            if mod.split(".")[0] == "streamlit":
                bad.append(f"{f.relative_to(PKG.parent)}:{line}")
    assert not bad, bad


def test_code_and_docs_stand_alone():
    """No references to files outside the repository or to tracker numbers."""
    root = PKG.parent
    texts = list(PKG.rglob("*.py")) + list((root / "docs").rglob("*.md")) + [root / "README.md"]
    texts += list((root / "examples").glob("*.py")) + list((root / "benchmarks").glob("*.py"))
    texts += [f for f in (root / "tests").rglob("*.py") if f.name != Path(__file__).name]
    texts += [root / "CHANGELOG.md"]
    bad = []
    for f in texts:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            low = line.lower()
            if "methods.md" in low or "design.md" in low or "../shared" in low:
                bad.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
            elif any(w in low for w in ("issue 1", "issue 2", "issue 3", "issue 4", "issue 5",
                                        "issue 6", "issue 7", "issue 8", "issue 9", "issue #")):
                bad.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad[:40])
