"""The layers of kvsim (README, Development): an import only ever points to a lower layer or
stays inside its own package, so no package can import one that imports it back."""

import ast
from pathlib import Path

import kvsim

# Lowest first. Packages on one line share a layer and must not import each other.
LAYERS = (
    ("errors",),
    ("hardware", "models", "config", "workloads"),
    ("policies",),
    ("cost",),  # prices a policy's StepPlan
    ("engine",),
    ("sim", "gpu", "gpushare"),  # gpushare: several models on one GPU (its own SimPy GPU)
    ("calibration",),
    ("experiments", "reports"),
    ("api",),  # kvsim.simulate: a run, its tables, timeline and figures, from Python
    ("cli",),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
# Modules of the lowest layers that may use each other (plain data and specs).
FOUNDATION = {"hardware", "models", "config", "workloads"}


def kvsim_imports(path: Path) -> set[str]:
    """The kvsim packages (or top-level modules) that ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        found.update(name.split(".")[1] for name in names if name.startswith("kvsim."))
    return found


def test_no_import_runs_uphill_or_sideways():
    root = Path(kvsim.__file__).parent
    wrong = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for other in kvsim_imports(path) - {own}:
            uphill = LEVEL[other] > LEVEL[own]
            sideways = LEVEL[other] == LEVEL[own] and not {own, other} <= FOUNDATION
            if uphill or sideways:
                wrong.append(f"{relative} imports kvsim.{other}")
    assert not wrong, wrong


def test_every_package_has_a_layer():
    root = Path(kvsim.__file__).parent
    packages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in root.glob("*.py")} - {"__init__"}
    assert packages | modules <= set(LEVEL)
