"""Layers only point down and Ray stays in its adapters: read from the source with ast, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distill"
# Lowest first. A module imports only modules of lower groups: a group's members are peers that import none
# of each other. `datasets` is the package with all its plug-ins, `__init__` is distill's own (importing the
# package costs nothing). A module missing here fails until it is placed; one listed but absent is fine.
LAYERS = [
    ["__init__", "errors"],
    ["files", "imports", "progress"],
    ["losses", "models", "speech", "teachers", "train"],
    ["datasets", "decode", "targets"],
    ["data"],
    ["config"],
    ["experiment"],
    ["cache", "lease", "preflight", "record", "results"],
    ["analysis", "export"],
    ["pipeline", "report"],
    ["budget", "local"],
    ["ray_shared"],
    ["ray_search", "ray_teachers"],
    ["ray_mlflow"],
    ["ray_sweep"],
    ["__main__"],
]
LAYER = {unit: i for i, group in enumerate(LAYERS) for unit in group}
# All of distill a data-set plug-in may use, so that adding a data set needs nothing else of the code base.
PLUGIN_MAY_IMPORT = {"datasets", "errors", "files", "speech"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit(name: str) -> str:
    """The layer a dotted distill name belongs to: `distill.datasets.timit` is `datasets`."""
    return name.split(".")[1] if "." in name else "__init__"


def own_unit(path: Path) -> str:
    return unit(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(dotted module, line, at module level) for every import in the file, however deeply nested."""
    package = path.relative_to(PACKAGE.parent).parent.parts
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(package[: len(package) - child.level + 1]) if child.level else ""
                module = ".".join(p for p in (base, child.module) if p)
                # `from distill import files` imports the module distill.files; `from distill.data import Raw`
                # imports distill.data.
                names = [f"{module}.{a.name}" for a in child.names] if module == "distill" else [module]
                found.extend((n, child.lineno, top) for n in names)
            visit(child, top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
    assert not [str(p.relative_to(PACKAGE.parent)) for p in modules() if own_unit(p) not in LAYER]


def test_only_the_ray_adapters_import_ray():
    """Outside distill/ray_*.py nothing imports Ray, not even through an adapter; the CLI alone may load an
    adapter inside a function (so `--local` never imports Ray)."""
    bad = []
    for path in modules():
        if path.parent == PACKAGE and path.stem.startswith("ray_"):
            continue
        for name, line, top in imports(path):
            adapter = name.startswith("distill.") and unit(name).startswith("ray_")
            if name.split(".")[0] == "ray" or (adapter and (top or path != PACKAGE / "__main__.py")):
                bad.append(f"{where(path, line)} imports {name}")
    assert not bad


def test_layers_point_down():
    bad = []
    for path in modules():
        me = own_unit(path)
        for name, line, _ in imports(path):
            if name.split(".")[0] != "distill" or unit(name) == me:
                continue
            if unit(name) not in LAYER:
                bad.append(f"{where(path, line)} imports {name}, which has no layer")
            elif me in LAYER and LAYER[unit(name)] >= LAYER[me]:
                bad.append(f"{where(path, line)} imports {name}, not below {me}")
    assert not bad


def test_data_set_plugins_use_only_the_contract():
    bad = [f"{where(path, line)} imports {name}" for path in (PACKAGE / "datasets").glob("*.py")
           for name, line, _ in imports(path)
           if name.split(".")[0] == "distill" and unit(name) not in PLUGIN_MAY_IMPORT]
    assert not bad
