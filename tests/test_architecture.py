"""The house: the package's import graph follows the pipeline, and its rooms stay small.

Every import counts, including those inside functions (they are how heavy modules
load lazily, but they are dependencies all the same).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kpcompile"

# Layers in pipeline order; a module may import its own layer and earlier ones only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kpcompile._version", "kpcompile.errors", "kpcompile.options", "kpcompile.schema"),
    ("kpcompile.manifest",),
    ("kpcompile.ingest",),
    ("kpcompile.parsing",),
    ("kpcompile.compile",),
    ("kpcompile.store",),
    ("kpcompile.query", "kpcompile.feeding", "kpcompile.torch"),
    ("kpcompile.reporting",),
    ("kpcompile.pipeline", "kpcompile.synth"),
    ("kpcompile.output",),
    ("kpcompile.cli", "kpcompile.__main__", "kpcompile"),
)
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        mods[".".join(rel.parts).removesuffix(".__init__")] = f
    return mods


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Package modules ``module`` imports, anywhere in its body."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found = subs & mods.keys()
            deps |= found if len(found) == len(subs) else {node.module, *found}
    return {d for d in deps if d in mods and d != module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, f, mods) for m, f in mods.items()}


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in layer if p != "kpcompile"):
            return i
    assert module == "kpcompile", f"{module} is in no layer: add it to LAYERS"
    return len(LAYERS) - 1


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d) :], d] if d in stack else [m, d]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_stages_import_only_earlier_stages() -> None:
    wrong = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in sorted(_graph().items())
        for d in sorted(deps)
        if _layer(d) > _layer(m) and not (m == "kpcompile" and d.startswith("kpcompile."))
    ]
    assert wrong == []


def test_the_query_side_never_imports_the_compile_stage() -> None:
    wrong = [
        f"{m} imports {d}"
        for m, deps in sorted(_graph().items())
        if m.startswith(("kpcompile.query", "kpcompile.feeding", "kpcompile.reporting"))
        for d in deps
        if d.startswith("kpcompile.compile")
    ]
    assert wrong == []


def test_only_sources_and_stores_know_about_urls() -> None:
    """No ``"://"`` test outside the Source and Store implementations and their factories."""
    allowed = {PACKAGE / "ingest", PACKAGE / "store"}
    found = []
    for f in sorted(PACKAGE.rglob("*.py")):
        if any(a in f.parents for a in allowed):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value == "://":
                found.append(f"{f.relative_to(PACKAGE)}:{node.lineno}")
            if isinstance(node, ast.Name | ast.Attribute) and "is_url" in ast.unparse(node):
                found.append(f"{f.relative_to(PACKAGE)}:{node.lineno} is_url")
    assert found == []


def test_functions_stay_short() -> None:
    long = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_every_stage_is_a_subpackage_in_pipeline_order() -> None:
    stages = ["ingest", "parsing", "compile", "store", "query"]
    assert all((PACKAGE / s / "__init__.py").is_file() for s in stages)
    order = [_layer(f"kpcompile.{s}") for s in stages]
    assert order == sorted(order)


def test_kpcompile_torch_after_import_kpcompile_as_the_readme_writes_it() -> None:
    """Issue 17.9: ``import kpcompile`` then ``kpcompile.torch.KeypointDataset`` loads the
    submodule (not an AttributeError); without torch, the error says how to install it."""
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import kpcompile\n"
        "assert 'kpcompile.torch' not in sys.modules\n"
        "try:\n    kpcompile.torch.KeypointDataset\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        "kpcompile.torch.KeypointDataset needs PyTorch, which is not installed: pip install torch"
    )
