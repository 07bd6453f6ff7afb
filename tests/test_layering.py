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
            for alias in node.names:  # `from osteoscreen.io import imageio` imports a module
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


#: The layers of docs/design.md, lowest first: a module may import its own layer and those before it, never one
#: after. cli and web are both the top, and web never imports cli (the command line serves the page). Nothing
#: imports the root package, whose names are lazy re-exports for users.
LAYERS = ["core", "io", "data", "models", "features", "training", "methods", "evaluation", "reporting",
          "landmarking", "deploy", "web", "cli"]


def layer_of(module: str) -> int:
    folder = module.split(".")[1]
    assert folder in LAYERS, f"{module} sits in no layer of docs/design.md: put it in one of the folders"
    return LAYERS.index(folder)


def upward_imports(files: dict[str, Path]) -> list[str]:
    """Every import of a module by one in a lower layer (or of the root package by any module), as text."""
    modules = set(files) | {"osteoscreen"}
    found = []
    for name, path in sorted(files.items()):
        if name == "osteoscreen":
            continue
        for target in sorted(imports_of(path, modules) - {name}):
            if target == "osteoscreen":
                found.append(f"{name} imports the root package")
            elif layer_of(target) > layer_of(name):
                found.append(f"{name} ({LAYERS[layer_of(name)]}) imports {target} ({LAYERS[layer_of(target)]})")
    return found


def test_every_module_sits_in_a_layer_and_imports_only_its_own_or_lower_ones():
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    assert [name for name in files if name.count(".") == 1 and not (PACKAGE / name.split(".")[1]).is_dir()] == []
    assert upward_imports(files) == []


def test_the_layer_check_sees_an_upward_import_and_one_of_the_root(tmp_path):
    lower, higher = tmp_path / "frozen.py", tmp_path / "config.py"
    lower.write_text("from osteoscreen.training.config import TrainConfig\nfrom osteoscreen import __version__\n")
    higher.write_text("from osteoscreen.features.frozen import frozen_features\n")
    files = {"osteoscreen.features.frozen": lower, "osteoscreen.training.config": higher}
    assert upward_imports(files) == [
        "osteoscreen.features.frozen imports the root package",
        "osteoscreen.features.frozen (features) imports osteoscreen.training.config (training)",
    ]
