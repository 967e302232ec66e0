"""The package's import structure: layers, no circles, no private names across packages.

Layers, lowest first: a module may import its own layer and the layers below, never above.
Every ``import`` counts — at a module's top, inside a function or under ``TYPE_CHECKING`` —
so that no circle hides in a function (imports inside functions are for heavy optional
dependencies and start-up time, never to dodge a circle).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lictrain"

#: lowest first; each entry a top-level module or package of lictrain
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "limits", "varint", "device"),
    ("data", "models", "losses", "optim", "schedules", "figures", "settings"),
    ("config", "command", "recipes"),
    ("checkpoint", "tracking"),
    ("training", "evaluation"),
    ("search", "analysis"),
    ("cli", "__main__", "__init__"),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Module -> the lictrain modules it imports; and (importer, module, name) for private names."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    private: list[tuple[str, str, str]] = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if not base.startswith("lictrain"):
                    continue
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    if target in modules and target != name:
                        edges[name].add(target)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((name, base, alias.name))
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in modules and a.name != name)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(set(edges) | {t for ts in edges.values() for t in ts}):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_cycles_finds_a_circle_and_only_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    edges, _ = imports()
    assert cycles(edges) == []


def test_every_package_has_a_layer_and_no_layer_imports_a_higher_one() -> None:
    edges, _ = imports()
    packages = {package_of(m) for m in edges} | {package_of(t) for ts in edges.values() for t in ts}
    assert packages <= set(LAYER), f"give these a layer in LAYERS: {sorted(packages - set(LAYER))}"
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                    if LAYER[package_of(a)] < LAYER[package_of(b)])
    assert upward == []


def test_no_private_name_is_imported_across_packages() -> None:
    _, private = imports()
    across = [f"{a} imports {m}.{n}" for a, m, n in private if package_of(a) != package_of(m)]
    assert across == []


#: a module past this many lines is split by concern; a function past MAX_FUNCTION_LINES by step
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small_outside_the_model_definitions() -> None:
    big_modules, big_functions = [], []
    for path in SRC.rglob("*.py"):
        if "models" in path.relative_to(SRC).parts:
            continue
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big_modules.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big_functions.append(f"{path.relative_to(SRC)}:{node.name}: {length} lines")
    assert big_modules == [] and big_functions == []
