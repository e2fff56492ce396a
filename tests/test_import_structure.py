"""The package's import structure: no circles between modules, and no arrow running back
up from a lower layer to a higher one.

The graph is read from the source (ast), not by importing: every `import` and `from ...
import` of a fashionlens module, at module level, inside functions and under
`if TYPE_CHECKING:` alike (a type-only circle is still a circle in the design), with
relative imports resolved. `from package import name` is an edge to the module
`package.name` where that is a module, else to `package`.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fashionlens"

# The layers, lowest first. A module belongs to the layer of its longest listed prefix;
# a module may import its own layer or lower ones, never a higher one. Every module must
# be placed (a new module is placed on purpose, not by accident).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("fashionlens.errors", "fashionlens.atomic", "fashionlens.lazy",
                    "fashionlens.progress", "fashionlens.precision",
                    "fashionlens.metrics", "fashionlens.memory")),
    ("data", ("fashionlens.data",)),
    ("models", ("fashionlens.models",)),
    # config holds the tasks' settings (TaskConfig): the two are one layer, and the
    # circle check keeps the arrows between them one way
    ("tasks", ("fashionlens.tasks", "fashionlens.config")),
    # what runs a model: no loading by name, no building of exports
    ("running a model", ("fashionlens.inference.outputs", "fashionlens.inference.runtime",
                         "fashionlens.inference.ov_core",
                         "fashionlens.inference.backends",
                         "fashionlens.inference.export_cache",
                         "fashionlens.inference.int8", "fashionlens.inference.photos",
                         "fashionlens.inference.unknown", "fashionlens.inference.holder")),
    ("building exports", ("fashionlens.exporting",)),
    # what loads a model for a user, exporting it on first use
    ("loading a model", ("fashionlens.inference",)),
    ("search", ("fashionlens.search",)),
    ("evaluation", ("fashionlens.evaluation",)),
    ("training", ("fashionlens.training",)),
    ("curation", ("fashionlens.curation",)),
    ("service", ("fashionlens.service",)),
    ("cli", ("fashionlens.cli",)),
    # the package's façade: its names load lazily (`fashionlens.lazy`)
    ("public API", ("fashionlens",)),
]

# Edges allowed against the rules above, each with why.
ALLOWED: dict[tuple[str, str], str] = {
    ("fashionlens.service.app", "fashionlens"):
        "reads __version__, which the root defines itself; at run time the root imports "
        "nothing but fashionlens.lazy",
    # Expected failure, not a rule: the config <-> tasks.base circle (a type-only import
    # of TrainConfig back into the tasks) is the training helper's to remove (issue 18,
    # "The house"); the lead removes this line once it is gone.
    ("fashionlens.tasks.base", "fashionlens.config"): "known circle, being removed",
}


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the fashionlens modules it imports (anywhere in its text)."""
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in known.items():
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != PACKAGE:
                    continue
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.add(child if child in known else source)
        graph[name] = {t for t in map(owner, targets) if t is not None and t != name}
    return graph


def layer_of(module: str) -> int | None:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and \
                    prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def checked_graph() -> dict[str, set[str]]:
    graph = import_graph()
    for (source, target), why in ALLOWED.items():
        if target not in graph.get(source, set()):
            print(f"allowance no longer needed: {source} -> {target} ({why})")
        graph.get(source, set()).discard(target)
    return graph


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    inside = set(component)
    return "\n".join(f"  {a} -> {b}" for a in component for b in sorted(graph[a] & inside))


def test_the_graph_is_read_with_relative_imports_resolved():
    graph = import_graph()
    # `from .export_cache import ...` inside inference/, `from ..errors import ...`
    assert "fashionlens.inference.export_cache" in graph["fashionlens.inference.backends"]
    assert "fashionlens.errors" in graph["fashionlens.inference.backends"]
    # `from .. import __version__` names the root package itself
    assert "fashionlens" in graph["fashionlens.service.app"]
    # a function-level import counts
    assert "fashionlens.exporting.export" in graph["fashionlens.exporting.ensure"]


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_import_circles():
    graph = checked_graph()
    found = cycles(graph)
    report = "\n".join(f"circle of {len(c)}: {', '.join(c)}\n{describe(c, graph)}"
                       for c in found)
    print(report or "no circles")
    assert not found, f"{len(found)} import circles:\n{report}"


def test_no_arrow_runs_back_up():
    graph = checked_graph()
    names = [name for name, _ in LAYERS]
    back = sorted((a, b) for a, targets in graph.items() for b in targets
                  if layer_of(a) is not None and layer_of(b) is not None
                  and layer_of(b) > layer_of(a))
    report = "\n".join(f"  {a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]})"
                       for a, b in back)
    print(report or "no arrow runs back up")
    assert not back, f"{len(back)} imports from a lower layer to a higher one:\n{report}"


def test_running_a_model_loads_nothing_above_it():
    """At run time too: the package `fashionlens.inference` loads its names lazily, so
    importing what runs a model (or what builds exports) does not load the layers above
    it through the package's `__init__`."""
    import subprocess
    import sys

    code = ("import sys, fashionlens.inference.backends, fashionlens.exporting.writing; "
            "print(sorted(m for m in sys.modules if m.startswith('fashionlens.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = eval(done.stdout)  # noqa: S307  (a list literal this test printed)
    # (a package's __init__ runs before its modules: `fashionlens.inference` itself, whose
    # names are lazy, is loaded as the parent of inference.backends)
    parents = {m.rpartition(".")[0] for m in loaded}
    above = [m for m in loaded if m not in parents and layer_of(m) is not None
             and layer_of(m) > layer_of("fashionlens.exporting.writing")]
    assert not above, above
    assert "fashionlens.inference.predictor" not in loaded
