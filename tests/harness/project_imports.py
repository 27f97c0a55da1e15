"""The project's import graph, read from the source with ``ast`` (imports inside functions included)."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportGraph:
    edges: dict[str, set[str]] = field(default_factory=dict)      # module -> project modules it imports
    external: dict[str, set[str]] = field(default_factory=dict)   # module -> other modules it imports

    def __getitem__(self, module: str) -> set[str]:
        return self.edges[module]

    def __iter__(self):
        return iter(self.edges)


def modules_of(packages: dict[str, Path]) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the packages (``{name: source folder}``)."""
    found = {}
    for package, folder in packages.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Dotted names a module imports: ``import a.b`` -> a.b; ``from a import b`` -> the submodule a.b
    if there is one, else a (a name defined in a's ``__init__``)."""
    names = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                names.add(submodule if submodule in modules else origin)
    return names


def import_graph(packages: dict[str, Path]) -> ImportGraph:
    modules = modules_of(packages)
    graph = ImportGraph()
    for module, path in modules.items():
        imported = _imported(ast.parse(path.read_text()), module, path.name == "__init__.py", set(modules))
        inside = set()
        for name in imported:
            while name and name not in modules:  # ``import a.b.c`` of a name inside a module: that module
                name = name.rpartition(".")[0]
            if name and name != module:
                inside.add(name)
        graph.edges[module] = inside
        graph.external[module] = {name for name in imported if name.split(".")[0] not in packages}
    return graph


def strongly_connected(graph: ImportGraph) -> list[set[str]]:
    """Tarjan's strongly connected components of the graph."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.edges.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph.edges):
        if node not in index:
            visit(node)
    return components


def reachable(graph: ImportGraph, start: str) -> set[str]:
    """Every project module loaded by importing ``start`` (its imports, theirs, ... and parent packages)."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen or module not in graph.edges:
            continue
        seen.add(module)
        todo.extend(graph.edges[module])
        parent = module.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen
