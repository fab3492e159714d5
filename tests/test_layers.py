"""Layers that point one way: read from the sources' import statements (every one, those inside
functions too), no module of ``valueguide`` reaches back to itself through its imports, no folder
(``decoding/``, ``value/``, ...) and top-level module import each other round a loop, and the decoding
library imports no pipeline stage. Planning a run (``valueguide plan``) imports no model library."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "valueguide"
# What the decoding library must not import: the stage families and the modules that know configs and files.
STAGES = {"value", "implicit", "evaluate", "report", "world", "cli", "config", "generate", "sampling", "warm",
          "warm_server", "plan", "preflight"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_of(dotted: str, modules: set[str]) -> str | None:
    """The longest prefix of ``dotted`` that is a module of the package (``a.b.name`` of ``from a.b import name``)."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    files = {_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {_module_of(a.name, modules) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(here + ([node.module] if node.module else []))
                targets |= {_module_of(f"{base}.{a.name}", modules) for a in node.names}
        graph[name] = targets - {None, name}
    return graph


def unit(module: str) -> str:
    """A subpackage as a whole (``decoding/``), or a top-level module by itself."""
    parts = module.split(".")
    return f"{parts[1]}/" if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else module


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        folders.setdefault(unit(module), set()).update(unit(t) for t in targets)
    return {u: targets - {u} for u, targets in folders.items()}


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path round each loop found by depth-first search (empty: the graph has none)."""
    found, state, path = [], {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_loop_finder_finds_a_loop_through_three_nodes():
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert loops({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "valueguide.artifacts" in graph["valueguide.generate"]  # from .artifacts import ...
    assert "valueguide.heap" in graph["valueguide.generate"]  # from . import heap
    assert "valueguide.generate" in graph["valueguide.cli"]  # inside cmd_generate
    assert unit("valueguide.decoding.streams") == "decoding/" and unit("valueguide.decoding") == "decoding/"
    assert unit("valueguide.plan") == "valueguide.plan"


def test_no_module_imports_itself_round_a_loop():
    assert loops(import_graph()) == []


def test_no_folders_or_top_level_modules_import_each_other_round_a_loop():
    assert loops(folder_graph(import_graph())) == []


def test_the_decoding_library_imports_no_pipeline_stage():
    reached = {t for m, targets in import_graph().items() if unit(m) == "decoding/" for t in targets}
    assert not {t for t in reached if t.split(".")[1] in STAGES}


def test_planning_a_run_imports_no_model_library():
    """``valueguide plan`` budgets a run before anything loads: its cost model must not pay for torch."""
    probe = "import sys, valueguide.plan; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
