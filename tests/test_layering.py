"""The import graph keeps its layers: methods/ needs only torch + open_clip (and the standard
library, PyYAML and the dependency-free `harness.errors` / `harness.options`), nothing imports
the CLI, and no two modules import each other (even lazily, inside a function).

Static (the AST of every file), so it sees imports in functions that a test run may never call."""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "protocols")
#: What methods/ may import besides the standard library and itself.
METHODS_MAY_IMPORT = {"torch", "open_clip", "yaml", "numpy", "harness.errors", "harness.options"}
#: Upward edges tolerated (none: the order-pair benchmark and the tests use harness.api).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_block(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":`"""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    for block in [n for n in tree.body if _is_main_block(n)]:  # a program's entry, never run on import
        tree.body.remove(block)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    names = {_module_name(p) for p in files}
    return {_module_name(p): {m for m in _imports(p) if m in names and m != _module_name(p)} for p in files}


def test_methods_import_only_torch_open_clip_and_the_standard_library():
    bad = {}
    for path in (ROOT / "methods").rglob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            allowed = (root in sys.stdlib_module_names or root == "methods" or root == "__future__"
                       or any(name == a or name.startswith(a + ".") for a in METHODS_MAY_IMPORT)
                       or name in {"harness"})
            if not allowed:
                bad.setdefault(path.name, []).append(name)
    assert not bad, f"methods/ imports outside its layer: {bad}"


def test_nothing_imports_the_cli():
    graph = _graph()
    users = {(mod, "harness.cli") for mod, deps in graph.items() if "harness.cli" in deps}
    assert users <= KNOWN_UPWARD, f"modules importing harness.cli: {sorted(users - KNOWN_UPWARD)}"


def test_engine_does_not_import_convert():
    """The engine runs jobs; checkpoint evaluation reaches it as a model source that the API hands
    in (`harness.convert.evaluate.CheckpointModel`), so engine -> convert stays a one-way street
    (convert's predict and evaluation use the engine's model wrapper)."""
    graph = _graph()
    upward = sorted((mod, dep) for mod, deps in graph.items() if mod.startswith("harness.engine")
                    for dep in deps if dep.startswith("harness.convert"))
    assert not upward, f"harness.engine imports harness.convert: {upward}"


def test_no_import_cycle():
    graph = _graph()
    for a, b in KNOWN_UPWARD:
        graph[a].discard(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("name", sorted(m for m in _graph() if m.startswith("methods")))
def test_every_methods_module_imports_without_the_mm_stack(name, monkeypatch):
    """Importing a methods/ module pulls in neither mmengine nor mmaction (nor the engine/data)."""
    before = set(sys.modules)
    importlib.import_module(name)
    new = set(sys.modules) - before
    heavy = {m for m in new if m.split(".")[0] in ("mmengine", "mmaction", "mmcv")
             or m.startswith(("harness.engine", "harness.data"))}
    assert not heavy, f"{name} pulled in {sorted(heavy)}"
