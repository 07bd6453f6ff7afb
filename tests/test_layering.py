"""The module map (docs/design.md): imports point one way, so the package's import graph has no cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "osteoscreen"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules a file imports anywhere in it (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("osteoscreen"):
            for alias in node.names:  # `from osteoscreen.data import imageio` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("osteoscreen")}
    return found & modules


def test_the_import_graph_has_no_cycle():
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: imports_of(path, modules) - {name} for name, path in files.items()}
    graph["osteoscreen"] = set()  # the public API re-exports from everything, by name, on first use
    assert len(graph) > 40
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join(trail[trail.index(name):] + [name])
        state[name] = "open"
        for target in sorted(graph[name]):
            if target.startswith("osteoscreen.") or target == "osteoscreen":
                visit(target, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_lower_layers_do_not_import_the_interfaces():
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    top = {"osteoscreen.cli", "osteoscreen.web.app", "osteoscreen.screening", "osteoscreen.model"}
    for name, path in files.items():
        lower = name.startswith(("osteoscreen.data", "osteoscreen.models", "osteoscreen.training",
                                 "osteoscreen.evaluation", "osteoscreen.features", "osteoscreen.estimators"))
        if lower:
            assert not imports_of(path, set(files)) & top, name
