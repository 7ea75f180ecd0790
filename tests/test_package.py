"""The package's shape: no import cycles, no reaching into another module's private names, one public surface."""

import ast
from pathlib import Path

import rlaif

PACKAGE = Path(rlaif.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every rlaif import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("rlaif")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rlaif"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    """Which rlaif modules each module imports (a package's own __init__ run by a submodule import is left out)."""
    return {name: {module for module, _, _ in imports(path) if module in MODULES and module != name}
            for name, path in MODULES.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_the_package():
    assert {"rlaif.labeler", "rlaif.labels_table", "rlaif.backends.base", "rlaif.analysis.report",
            "rlaif.training.reward_model"} <= set(MODULES)
    assert "rlaif.labels_table" in graph()["rlaif.labeler"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    assert find_cycle(graph()) is None


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, path in MODULES.items():
        imported_modules = {}
        tree = ast.parse(path.read_text(), str(path))
        for module, imported, line in imports(path):
            if imported and imported.startswith("_") and not imported.startswith("__"):
                offenders.append(f"{path}:{line} imports {module}.{imported}")
        for node in ast.walk(tree):  # import rlaif.x as y ... y._private
            if isinstance(node, ast.Import):
                imported_modules.update({alias.asname or alias.name: alias.name for alias in node.names})
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlaif"):
                imported_modules.update({alias.asname or alias.name: f"{node.module}.{alias.name}"
                                         for alias in node.names if f"{node.module}.{alias.name}" in MODULES})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                offenders.append(f"{path}:{node.lineno} uses {imported_modules[node.value.id]}.{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_the_labeling_core_does_not_import_training_or_analysis():
    core = [name for name in MODULES if name.count(".") == 1 and name not in
            ("rlaif.cli", "rlaif.metrics", "rlaif.reward_model", "rlaif.__init__")]
    edges = graph()
    reached = {module for name in core for module in edges[name]}
    assert not {m for m in reached if m.startswith(("rlaif.training", "rlaif.analysis"))}


def test_public_surface_is_sorted_and_complete():
    names = rlaif.__all__
    first_error = next(i for i, name in enumerate(names) if name.endswith("Error"))
    entry_points, errors = names[:first_error], names[first_error:]
    assert entry_points == sorted(entry_points) and errors == sorted(errors)
    assert all(name.endswith("Error") for name in errors)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(rlaif, name) is not None
    defined_errors = {node.name for path in MODULES.values() for node in ast.walk(ast.parse(path.read_text()))
                      if isinstance(node, ast.ClassDef) and node.name.endswith("Error")}
    assert defined_errors <= set(errors)


def test_old_import_paths_still_work():
    import rlaif.reward_model
    import rlaif.training.reward_model
    from rlaif import debiasing, metrics
    from rlaif.analysis import agreement

    assert rlaif.reward_model is rlaif.training.reward_model
    assert metrics.alignment is agreement.alignment
    assert callable(debiasing.fit_score_link)


def test_modules_stay_short():
    long = {str(path.relative_to(PACKAGE)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > 400}
    assert not long


def test_scripts_use_only_public_names():
    """Experiments, benchmarks and examples are rlaif's first users: they import what users can."""
    offenders = []
    for folder in ("experiments", "benchmarks", "examples"):
        for path in sorted((PACKAGE.parent / folder).glob("*.py")):
            for module, imported, line in imports(path):
                if imported and imported.startswith("_") and not imported.startswith("__"):
                    offenders.append(f"{path}:{line} imports {module}.{imported}")
    assert not offenders, "\n".join(offenders)
