"""The package's shape: no import circles between the modules of ost_kernels or ost, and ost's
wings (descriptors, data, model, run) depending one way, under its command line."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The wings of ost and what each may import besides itself: ost.files is the base every wing
# shares; data and model both stand on descriptors but not on each other; run puts them together.
OST_WINGS = {
    "ost.files": set(),
    "ost.descriptors": {"ost.files"},
    "ost.data": {"ost.files", "ost.descriptors"},
    "ost.model": {"ost.files", "ost.descriptors"},
    "ost.run": {"ost.files", "ost.descriptors", "ost.data", "ost.model"},
}
# Above the wings: the package's own names, `python -m ost`, the parser and its handlers.
OST_TOP = {"ost", "ost.__main__", "ost.cli", "ost.commands"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _from_module(node: ast.ImportFrom, path: Path) -> str:
    """The absolute name of the module a `from ... import` in the file names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    base = _module_name(path).split(".")
    base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, package: str, modules: set[str]) -> set[str]:
    """Modules of `modules` that the file imports (at any depth of the file, lazily too)."""
    name = _module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = _from_module(node, path)
            # `from pkg import sub` imports the submodule; `from pkg import name` the package.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant):
            targets = [node.args[0].value]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


@pytest.mark.parametrize("package", ["ost_kernels", "ost"])
def test_no_import_circles(package):
    """No module imports one that imports it back, directly or not. (A package's __init__ is
    imported before its submodules by Python itself; that implicit edge is not counted.)"""
    files = sorted((ROOT / package).rglob("*.py"))
    modules = {_module_name(f) for f in files}
    graph = {_module_name(f): _imports(f, package, modules) for f in files}
    cycles = []

    def visit(node, stack, on_stack, done):
        on_stack.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        on_stack.discard(node)
        stack.pop()
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [], set(), done)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_names_are_imported_from_the_module_that_defines_them():
    """ost.model.model re-exports nothing of ost.model.logits: every `from ost.model.model
    import ...` (in the package, relative or not, the tests and the benchmarks) takes only names
    in ost.model.model.__all__."""
    import ost.model.model

    bad = []
    for path in sorted(ROOT.glob("ost/**/*.py")) + sorted(ROOT.glob("tests/**/*.py")) + \
            sorted(ROOT.glob("benchmarks/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _from_module(node, path) == "ost.model.model":
                bad += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                        if a.name not in ost.model.model.__all__]
    assert not bad, "imported from ost.model.model but defined elsewhere: " + ", ".join(bad)


def test_backend_modules_are_imported_only_by_the_registry():
    """Shared plan math lives in ost_kernels/_plan.py, not in a backend: no module of
    ost_kernels outside ost_kernels/backends/ imports a backend module (the registry package
    ost_kernels.backends, the record ost_kernels.backends.base and the "auto" choice
    ost_kernels.backends.auto are not backend modules)."""
    files = sorted((ROOT / "ost_kernels").rglob("*.py"))
    modules = {_module_name(f) for f in files}
    backend_modules = {m for m in modules if m.startswith("ost_kernels.backends.")
                       and m not in ("ost_kernels.backends.base", "ost_kernels.backends.auto")}
    bad = [f"{_module_name(f)} imports {', '.join(sorted(_imports(f, 'ost_kernels', modules) & backend_modules))}"
           for f in files if not _module_name(f).startswith("ost_kernels.backends")
           and _imports(f, "ost_kernels", modules) & backend_modules]
    assert not bad, "; ".join(bad)


def _ost_graph() -> dict[str, set[str]]:
    files = sorted((ROOT / "ost").rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, "ost", modules) for f in files}


def _wing(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_ost_wings_depend_one_way():
    """Every module of ost is in a wing or on top, and a wing imports only the wings below it
    (OST_WINGS): descriptors and data nothing of model or run, model nothing of data or run,
    none of them ost itself, ost.cli or ost.commands."""
    graph = _ost_graph()
    loose = sorted(m for m in graph if m not in OST_TOP and _wing(m) not in OST_WINGS)
    assert not loose, f"modules of ost in no wing: {loose} (put them in one, or name a new wing in OST_WINGS)"
    bad = [f"{m} imports {t}" for m in sorted(graph) if m not in OST_TOP for t in sorted(graph[m])
           if _wing(t) != _wing(m) and _wing(t) not in OST_WINGS[_wing(m)]]
    assert not bad, "imports against the wings' direction: " + "; ".join(bad)


def test_only_the_entry_points_import_the_command_line():
    """ost.cli is imported only by `python -m ost` (and named by the `ost` script), ost.commands
    only by ost.cli: the command line is the top, nothing in the library calls it."""
    import tomllib

    graph = _ost_graph()
    importers = {top: sorted(m for m, targets in graph.items() if top in targets)
                 for top in ("ost.cli", "ost.commands")}
    assert importers == {"ost.cli": ["ost.__main__"], "ost.commands": ["ost.cli"]}, importers
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ost": "ost.cli:main"}


def test_only_the_model_touches_its_descriptor_cache():
    """OSTModel's cached descriptor embeddings (_cache) are the model's own: evaluation and the
    recognizer change the classes through set_descriptors, which drops the cache, instead of
    writing it from outside (a stale cache scores the old classes)."""
    bad = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in sorted((ROOT / "ost").rglob("*.py"))
           if path != ROOT / "ost" / "model" / "model.py"
           for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.Attribute) and node.attr == "_cache"]
    assert not bad, "OSTModel._cache used outside ost/model/model.py: " + ", ".join(bad)


def test_every_file_of_ost_ships_in_a_non_editable_install():
    """A wheel holds the packages setuptools finds (folders with an __init__.py) and, besides
    their .py files, only the package-data pyproject.toml names: every folder of ost is a
    package, and every other file (the presets' YAML, the published data's manifest) matches a
    package-data pattern of its own package."""
    import fnmatch
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    folders = [d for d in [ROOT / "ost", *(ROOT / "ost").rglob("*")] if d.is_dir() and d.name != "__pycache__"]
    not_packages = [str(d.relative_to(ROOT)) for d in folders if not (d / "__init__.py").is_file()]
    assert not not_packages, f"folders of ost a wheel would leave out (no __init__.py): {not_packages}"
    unshipped = [str(f.relative_to(ROOT)) for d in folders for f in sorted(d.iterdir())
                 if f.is_file() and f.suffix != ".py" and not f.name.startswith(".") and not any(
                     fnmatch.fnmatch(f.name, pattern)
                     for pattern in package_data.get(".".join(d.relative_to(ROOT).parts), []))]
    assert not unshipped, f"files of ost no package-data pattern ships: {unshipped}"


def test_ost_uses_only_the_public_api_of_ost_kernels():
    """What docs/design.md says of ost: it takes from ost_kernels only names of
    ost_kernels.__all__, as `from ost_kernels import ...` (no submodule, no backend)."""
    import ost_kernels

    bad = []
    for path in sorted((ROOT / "ost").rglob("*.py")):
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bad += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] == "ost_kernels"]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] == "ost_kernels":
                bad += [f"{where}: from {node.module} import {a.name}" for a in node.names
                        if node.module != "ost_kernels" or a.name not in ost_kernels.__all__]
    assert not bad, "ost reaches past ost_kernels' public API: " + "; ".join(bad)
