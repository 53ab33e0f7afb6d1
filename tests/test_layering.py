"""The import graph keeps its layers (docs/architecture.md, "Layers"): every module of harness/,
methods/ and protocols/ belongs to one layer of `LAYERS`, and imports only from its own layer or
the layers below it; no two modules import each other, even through others, even lazily.

Two checks, because each sees what the other cannot:
* static (the AST of every file): imports inside functions too, which a test run may never call;
* at run time, in a FRESH interpreter (a subprocess): the layers imported bottom-up, and after
  each one nothing of a higher layer (nor mmengine / mmaction / mmcv below the engine) may have
  been loaded. In the test process itself that comparison is worthless: collection has already
  imported nearly everything, so a `sys.modules` check there cannot fail.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "protocols")

#: The layers, lowest first: a module may import its own layer and those listed before it. A
#: module belongs to the layer of the longest prefix that names it (a new module of a package
#: inherits its package's layer; a new top-level module of `harness` must be placed here: the
#: entry "harness" is the package's `__init__` only).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("harness", "harness.errors", "harness.options", "harness.paths", "harness.faults",
                    "harness.atomic", "harness.defaults", "harness.metrics", "harness.distributed",
                    "harness.provenance", "harness.locks", "harness.safe_load", "harness.preemption",
                    # the launcher package and its records / scheduler queries / options (status reads them)
                    "harness.launch")),
    ("methods", ("methods", "protocols")),
    ("configuration", ("harness.backbone", "harness.viclip", "harness.viclip_weights", "harness.state_dicts",
                       "harness.settings", "harness.recipes")),
    ("data", ("harness.data", "harness.describe")),
    ("weights", ("harness.pretrain", "harness.weights", "harness.weights_identity")),
    ("jobs", ("harness.jobs",)),
    ("measure", ("harness.measure",)),
    ("results", ("harness.store", "harness.validate")),
    ("engine", ("harness.engine",)),
    ("checkpoints", ("harness.convert",)),
    ("reports", ("harness.report", "harness.reports")),
    ("api", ("harness.api",)),
    ("launch", ("harness.launch.submit", "harness.launch.task", "harness.launch.options", "harness.launch.agent",
                "harness.launch.worker")),
    ("reproduce", ("harness.reproduce",)),
    ("commands", ("harness.commands",)),
    ("cli", ("harness.cli",)),
]
#: Upward imports tolerated, each with the reason it is still here (none: the engine takes a
#: checkpoint's model as a model source the API hands in, so it never imports `harness.convert`).
KNOWN_UPWARD: set[tuple[str, str]] = set()
#: What methods/ may import besides the standard library and itself.
METHODS_MAY_IMPORT = {"torch", "open_clip", "yaml", "numpy", "harness.errors", "harness.options"}
#: The layers below which the mm stack must not be loaded (the GPU bench, parameter counts and
#: FLOPs run on hosts without it).
MM_FREE_BELOW = "engine"
MM_STACK = ("mmengine", "mmaction", "mmcv")


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


def layer_of(module: str) -> int | None:
    """Index in `LAYERS` of the longest prefix naming `module` (None: no layer)."""
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "harness"
            if (module == prefix or inside) and len(prefix) > best:
                best, found = len(prefix), index
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer, as 'a (layer) -> b (layer)'."""
    out = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if (module, dep) not in KNOWN_UPWARD and layer_of(dep) > layer_of(module):
                out.append(f"{module} ({LAYERS[layer_of(module)][0]}) -> {dep} ({LAYERS[layer_of(dep)][0]})")
    return out


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module names, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_module_has_a_layer():
    graph = _graph()
    homeless = sorted(m for m in graph if layer_of(m) is None)
    assert not homeless, f"modules in no layer (add them to LAYERS here and in docs/architecture.md): {homeless}"


def test_no_upward_import():
    bad = upward_imports(_graph())
    assert not bad, "imports from a higher layer (move the code up, or hand the lower layer what it needs):\n" + \
        "\n".join(bad)


def test_no_import_cycle():
    graph = _graph()
    for a, b in KNOWN_UPWARD:
        graph[a].discard(b)
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The checks themselves, on the real graph with one edge added (so they are known to fail)."""
    graph = _graph()
    graph["harness.data.check"].add("harness.api")
    assert upward_imports(graph) == ["harness.data.check (data) -> harness.api (api)"]
    graph = _graph()
    graph["harness.jobs.spec"].add("harness.store")  # store imports jobs.spec
    assert import_cycle(graph) in (["harness.jobs.spec", "harness.store", "harness.jobs.spec"],
                                   ["harness.store", "harness.jobs.spec", "harness.store"])


def test_the_layers_are_the_documented_ones():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    listed = [line.split("`")[1] for line in doc.splitlines() if line.startswith("| ") and line.count("`") >= 2
              and line.split("`")[1] in {name for name, _ in LAYERS}]
    assert listed == [name for name, _ in LAYERS]


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
    assert not users, f"modules importing harness.cli: {sorted(users)}"


#: Run in a fresh interpreter: import the layers bottom-up; after each, report what of a higher
#: layer (or of the mm stack, below MM_FREE_BELOW) was loaded, and by which layer.
_CHILD = r"""
import importlib, json, sys
layers, mm_free_below, mm_stack = json.loads(sys.argv[1])
owner = {m: i for i, (_, modules) in enumerate(layers) for m in modules}
found = []
for index, (name, modules) in enumerate(layers):
    for module in modules:
        importlib.import_module(module)
    above = sorted(m for m in sys.modules if owner.get(m, -1) > index)
    if above:
        found.append(f"importing layer {name} loaded {above}")
    if index < mm_free_below:
        mm = sorted(m for m in sys.modules if m.split(".")[0] in mm_stack)
        if mm:
            found.append(f"importing layer {name} loaded the mm stack: {mm[:5]}")
    if found:
        break
print(json.dumps(found))
"""


def test_layers_import_bottom_up_in_a_fresh_process():
    graph = _graph()
    layers = [(name, sorted(m for m in graph if layer_of(m) == i)) for i, (name, _) in enumerate(LAYERS)]
    mm_free = [name for name, _ in LAYERS].index(MM_FREE_BELOW)
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([layers, mm_free, list(MM_STACK)])],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
