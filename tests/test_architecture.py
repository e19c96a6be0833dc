"""The house's shape: imports go one way through the layers, with no cycle, function-local
imports included (DESIGN.md, docs/dev/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "jaxunlearn"
# lowest first; a module may import its own package and lower layers, never sideways or up
LAYERS = [
    ("errors", "settings"),
    ("storage",),  # run directories at a URL: staging and copying (paths checks them)
    ("paths", "compilation_cache"),  # output paths checked, OS write errors described; the XLA cache
    ("parallel", "precision"),
    ("models",),
    ("checkpoints", "data", "objectives"),  # checkpoints with tokenizer loading
    ("training", "evaluation"),
    ("attacks", "flagging", "suites"),  # relearning trains, the rest evaluate; judges; MUSE / choice / lm-eval
    ("config",),  # the run config: the sections each layer below owns, composed
    ("pipelines",),
    ("cli",),
    ("__main__", "__init__"),  # python -m jaxunlearn; the package's public names
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """jaxunlearn.models.llama -> models; jaxunlearn -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every jaxunlearn module `path` imports, anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("jaxunlearn")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("jaxunlearn"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _graph()}
    assert units <= set(LAYER), f"put {sorted(units - set(LAYER))} into LAYERS"


def test_imports_go_down_the_layers():
    bad = []
    for module, targets in _graph().items():
        src = _unit(module)
        for target in targets:
            dst = _unit(target)
            if dst == src or dst not in LAYER:
                continue
            if LAYER[dst] >= LAYER[src]:
                bad.append(f"{module} -> {target} ({'sideways' if LAYER[dst] == LAYER[src] else 'up'})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycles():
    graph = _graph()
    modules = set(graph)

    def resolve(target: str) -> str | None:  # "pkg.mod.name" -> the module it lives in
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in graph.items()}
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}  # a package's own __init__
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_registries_import_no_member():
    """The registry of a kind imports none of its members; the package's __init__ lists them."""
    assert not any("terms" in t for t in imports_of(PACKAGE / "objectives" / "registry.py"))
    registry = imports_of(PACKAGE / "models" / "registry.py")
    assert not any(
        t.split(".")[-1] in ("llama", "phi", "gpt2", "gpt_neox", "gemma", "llama_family") for t in registry
    ), registry
