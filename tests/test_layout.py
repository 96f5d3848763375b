"""The package's layout as rules: stages at the top, concerns one level down in layers that import only downwards,
no import circle, no stage importing a stage, Lightning on the training side only. Imports are read from the source
(every import statement, inside functions and under TYPE_CHECKING too), so a deferred import cannot hide a circle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
STAGES = {"train", "evaluate", "forecast", "register", "export", "serve"}
# Lowest first: a module may import its own layer and those below it. "ground" is the top-level shared modules
# (config, bounds, errors, cli, host); "api" the package itself (pipeline.load_model) and `python -m pipeline`.
LAYERS = ["ground", "data", "model", "tracking", "inference", "evaluation", "training", "stages", "api"]
# What may import Lightning: training, the LightningModule, and the training stage (once its data has loaded).
LIGHTNING_SIDE = ("pipeline.training.", "pipeline.model.training_module", "pipeline.train")
FORECAST_SIDE = ["pipeline.forecast", "pipeline.evaluate", "pipeline.register", "pipeline.export", "pipeline.serve"]


def read_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Module name -> its file, for every module of the package (a package by its __init__.py)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names, with `from a import b` also as a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    return {name: (imported(path) & set(modules)) - {name} for name, path in modules.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "api"
    if len(parts) == 2:
        return "stages" if parts[1] in STAGES else "ground"
    return parts[1]


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], path[len(path):] = "open", [module]
        for child in sorted(graph[module]):
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (circle := visit(child)):
                return circle
        state[module] = "done"
        path.pop()
        return None

    return next((circle for module in sorted(graph) if module not in state and (circle := visit(module))), None)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    return seen


def imports_lightning(path: Path) -> bool:
    return any(name.split(".")[0] in ("lightning", "pytorch_lightning") for name in imported(path))


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return read_modules()


@pytest.fixture(scope="module")
def graph(modules) -> dict[str, set[str]]:
    return import_graph(modules)


def test_the_package_has_no_import_circle_not_even_a_deferred_one(graph):
    assert find_circle(graph) is None, "import circle: " + " -> ".join(find_circle(graph))


def test_no_stage_imports_another_stage(graph):
    crossings = [(a, b) for a in graph for b in graph[a] if layer(a) == layer(b) == "stages"]
    assert not crossings, f"{crossings[0][0]} imports {crossings[0][1]}: move what both need into a package"


def test_every_package_imports_only_its_own_layer_and_those_below(graph, modules):
    assert {layer(m) for m in modules} <= set(LAYERS), "a package without a place in LAYERS"
    upward = [(a, b) for a in graph for b in graph[a] if LAYERS.index(layer(b)) > LAYERS.index(layer(a))]
    assert not upward, (f"{upward[0][0]} ({layer(upward[0][0])}) imports {upward[0][1]} ({layer(upward[0][1])}), a "
                        f"higher layer; order: {' < '.join(LAYERS)}")


def test_lightning_is_imported_on_the_training_side_only(graph, modules):
    importers = [m for m, path in modules.items() if imports_lightning(path)]
    assert importers and all(m.startswith(LIGHTNING_SIDE) for m in importers), importers
    for stage in FORECAST_SIDE:
        pulled = sorted(m for m in reachable(graph, stage) if m in importers)
        assert not pulled, f"{stage} imports {pulled[0]}, which imports Lightning"


def test_modules_stay_small_and_few_stand_at_the_top(modules):
    long = {m: n for m, path in modules.items() if m != "pipeline.config"
            and (n := len(path.read_text().splitlines())) > 350}
    assert not long, f"over 350 lines: {long}"
    top = [m for m in modules if m.count(".") == 1 and not (PACKAGE / m.split(".")[1]).is_dir()]
    assert len(top) <= 14, f"{len(top)} modules at the top of pipeline/: {top}"


def test_the_rules_catch_a_circle_an_upward_import_and_a_stage_importing_a_stage(tmp_path):
    broken = tmp_path / "pipeline"
    for name, text in {"__init__.py": "", "train.py": "from pipeline.evaluate import x\n", "evaluate.py": "",
                       "data/__init__.py": "", "data/load.py": "def f():\n    from pipeline.model.net import y\n",
                       "model/__init__.py": "", "model/net.py": "from pipeline.data.load import f\n"}.items():
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_text(text)
    graph = import_graph(read_modules(broken))
    assert find_circle(graph) == ["pipeline.data.load", "pipeline.model.net", "pipeline.data.load"]
    assert "pipeline.evaluate" in graph["pipeline.train"]
    assert LAYERS.index(layer("pipeline.model.net")) > LAYERS.index(layer("pipeline.data.load"))


@pytest.mark.slow
def test_no_forecast_side_stage_loads_lightning_in_a_fresh_interpreter():
    # Lightning is training code; importing it would add ~2 s to every scheduled forecast, and ~4 s to a training
    # command refused for its config or data (or asked for --help).
    code = ("import sys, pipeline.forecast, pipeline.evaluate, pipeline.register, pipeline.export, "
            "pipeline.inference.streaming, pipeline.train; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'lightning', 'pytorch_lightning'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
