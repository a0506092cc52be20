"""The import graph follows the layer order of docs/architecture: nothing imports upward, no cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "flightllm_overlay"

#: subpackage or top-level module -> layer; a module may import its own layer and those below.
#: (The package root itself holds only `__version__` and re-exports.)
LAYERS = {
    "errors": 0, "config": 1, "paths": 1, "spec": 2, "model": 3, "data": 3, "compress": 4,
    "compiler": 5, "hw": 5, "device": 6, "sim": 6, "xrt": 6, "overlay": 7, "runtime": 8,
    "bench": 9, "selftest": 9, "sweep": 9, "pynq_startup_hook": 9, "testing": 9, "pynq_plugin": 9, "cli": 10, "cli_types": 10,
    "widgets": 10,
}


def _modules() -> dict:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = ("flightllm_overlay",) + f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def _edges(mods: dict) -> dict:
    """module -> set of our modules it imports (anywhere in the file, lazy imports included)."""
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{stem}.{alias.name}"
                    target = sub if sub in mods else stem
                    if target in mods and target != m:
                        edges[m].add(target)
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return edges


def _layer(module: str):
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


MODULES = _modules()
EDGES = _edges(MODULES)


def test_every_subpackage_has_a_layer():
    assert {m.split(".")[1] for m in MODULES if "." in m} - set(LAYERS) == set()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if "." in m))
def test_no_upward_import(module):
    up = sorted(t for t in EDGES[module] if _layer(t) is not None and _layer(t) > _layer(module))
    assert not up, f"{module} (layer {_layer(module)}) imports a higher layer: {up}"


def test_no_import_cycles():
    """Strongly connected components of the graph of modules (packages' __init__ re-exports
    aside) are single modules."""
    graph = {m: {t for t in ts if not MODULES[t].name == "__init__.py"}
             for m, ts in EDGES.items() if MODULES[m].name != "__init__.py"}
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_compress_and_compiler_read_the_spec_not_the_simulator():
    for m in MODULES:
        if _layer(m) is not None and m.split(".")[1] in ("compress", "compiler", "hw", "spec"):
            assert not any(t.startswith("flightllm_overlay.sim") for t in EDGES[m]), m
