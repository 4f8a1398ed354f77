"""The package's shape, checked from its source: imports point down a declared stack of layers, the import graph
has no circle, and no runtime module outgrows 600 lines (docs/layout.md explains the layers).

Imports are read with ``ast``, not by importing: every ``import``/``from ... import`` of the package counts,
including those inside functions (a lazy import is still a dependency, it only fails later); those under
``if TYPE_CHECKING:`` do not (they exist for the type checker only). ``from pkg import name`` counts as an import
of the submodule ``pkg.name`` when there is one, else of ``pkg``.

Run as a script to print the graph's figures: ``python tests/test_architecture.py [PACKAGE_DIR]``.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "dspy_tiered_cache"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 600

#: Bottom to top. A module may import its own layer and the layers below it, never one above. Names are relative
#: to the package; ``*`` matches within a name, so ``tiers.*`` is every module of ``tiers/``. "" is the package's
#: ``__init__`` (its public face: it imports the features so that they attach to every core).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Plain values and the rules that make them: no I/O of their own beyond reading the environment.
    (
        "values",
        ("errors", "options", "forksafe", "codec", "codec_*", "dictionary*", "keys", "modes", "settings", "tenancy",
         "telemetry", "stats"),
    ),
    # Storage behind one protocol.
    ("tiers", ("tiers", "tiers.*")),
    # The cascade, lead/join, namespaces, fail-open machinery, and the extension point features attach to.
    ("core", ("core", "cascade", "flights", "singleflight", "guard", "breaker", "writer", "coherence", "namespaces",
              "hooks")),
    # What attaches to the core from above.
    ("features", ("portable", "portable.*", "fleet", "report", "semantic", "semantic.*")),
    # The front doors: LiteLLM, DSPy, @cached, the pytest plugin.
    ("doors", ("integrations", "integrations.*", "decorator", "pytest_plugin")),
    # Commands and the package face; the shipped testing helpers (stand-in provider, Redis servers) are tools too.
    ("commands", ("", "__main__", "cli", "cli_*", "demo", "testing", "testing.*")),
]
BOTTOM = "values"
#: The shipped testing helpers are a separate package the runtime never uses; only the demo runs the provider.
TESTING = ("testing", "testing.*")
MAY_IMPORT_TESTING = ("demo", "testing", "testing.*")
#: Concrete tiers: above the tiers layer, code uses the tier protocols (``tiers.base``, ``coherence``, ``flights``);
#: only the core's construction (``tiers.build``) and commands that manage a deployment name a concrete class.
CONCRETE_TIERS = ("tiers.memory", "tiers.disk", "tiers.redis")
MAY_IMPORT_CONCRETE_TIERS = ("tiers", "tiers.*", "core", "cascade")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) if p else name == "" for p in patterns)


def layer_of(name: str) -> int | None:
    for index, (_, patterns) in enumerate(LAYERS):
        if _matches(name, patterns):
            return index
    return None


def _layer_name(name: str) -> str:
    index = layer_of(name)
    return "?" if index is None else LAYERS[index][0]


# ------------------------------------------------------------------------------------------------- the graph


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:  # the ``else:`` of ``if TYPE_CHECKING:`` runs
                if isinstance(other, (ast.Import, ast.ImportFrom)):
                    yield other
                else:
                    yield from _import_nodes(other)
        else:
            yield from _import_nodes(child)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int


def _resolve(dotted: str, modules: dict[str, Path]) -> str | None:
    """The package module ``dotted`` (absolute) names: itself, else its nearest package."""
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
        return None
    name = dotted[len(PACKAGE) + 1 :]
    while name not in modules:
        if not name:
            return None
        name = name.rpartition(".")[0]
    return name


def edges(root: Path = ROOT) -> tuple[dict[str, Path], list[Edge]]:
    modules = _modules(root)
    found: list[Edge] = []
    for name, path in modules.items():
        here = [PACKAGE, *name.split(".")] if name else [PACKAGE]
        package = here if path.name == "__init__.py" else here[:-1]
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                targets = [f"{module}.{alias.name}" for alias in node.names] or [module]
                targets = [t if _resolve(t, modules) == t[len(PACKAGE) + 1 :] else module for t in targets]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    found.append(Edge(name, resolved, node.lineno))
    return modules, found


def circles(modules: dict[str, Path], found: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in found:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def climbs(found: list[Edge]) -> list[Edge]:
    """Imports from a lower layer to a higher one."""
    out = []
    for e in found:
        source, target = layer_of(e.source), layer_of(e.target)
        if source is not None and target is not None and target > source:
            out.append(e)
    return out


def runtime_sizes(modules: dict[str, Path]) -> dict[str, int]:
    """Lines per runtime module (the shipped testing helpers are not runtime: nothing but the demo imports them)."""
    return {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in modules.items()
        if not _matches(name, TESTING)
    }


MODULES, EDGES = edges()


def _show(e: Edge) -> str:
    return f"{PACKAGE}/{MODULES[e.source].relative_to(ROOT)}:{e.line} ({_layer_name(e.source)}) imports " \
        f"{e.target or PACKAGE} ({_layer_name(e.target)})"


# ------------------------------------------------------------------------------------------------- the tests


def test_the_walk_sees_the_package() -> None:
    """The walker itself: it finds the core's modules, lazy imports, and skips TYPE_CHECKING-only ones."""
    assert {"core", "cascade", "hooks", "tiers.base", "portable"} <= set(MODULES)
    pairs = {(e.source, e.target) for e in EDGES}
    assert ("core", "cascade") in pairs and ("cascade", "tiers.build") in pairs
    assert ("cli", "cli_stats") in pairs  # imported inside a function
    assert ("flights", "core") not in pairs  # typed only, under TYPE_CHECKING


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"declare the layer of {missing} in LAYERS (tests/test_architecture.py, docs/layout.md)"


def test_the_import_graph_has_no_circle() -> None:
    found = circles(MODULES, EDGES)
    assert not found, "import circles (lazy imports count): " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_point_down_the_layers() -> None:
    up = climbs(EDGES)
    assert not up, "imports that climb a layer:\n" + "\n".join(_show(e) for e in up)


def test_the_bottom_layer_imports_only_itself() -> None:
    bottom = next(i for i, (name, _) in enumerate(LAYERS) if name == BOTTOM)
    wrong = [e for e in EDGES if layer_of(e.source) == bottom and layer_of(e.target) != bottom]
    assert not wrong, "\n".join(_show(e) for e in wrong)


def test_the_runtime_never_imports_the_testing_helpers() -> None:
    wrong = [e for e in EDGES if _matches(e.target, TESTING) and not _matches(e.source, MAY_IMPORT_TESTING)]
    assert not wrong, "\n".join(_show(e) for e in wrong)


def test_features_and_doors_use_tier_protocols_not_concrete_tiers() -> None:
    allowed = {name for name in MODULES if _matches(name, MAY_IMPORT_CONCRETE_TIERS)} | {
        name for name in MODULES if _layer_name(name) == "commands"
    }
    wrong = [e for e in EDGES if e.target in CONCRETE_TIERS and e.source not in allowed]
    assert not wrong, "\n".join(_show(e) for e in wrong)


@pytest.mark.parametrize("module", sorted(runtime_sizes(MODULES)))
def test_no_runtime_module_is_over_600_lines(module: str) -> None:
    lines = runtime_sizes(MODULES)[module]
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines: split it along its jobs (at most {MAX_LINES})"


def test_test_machinery_is_not_in_the_package() -> None:
    shipped = sorted(m for m in MODULES if "fault" in m.rsplit(".", 1)[-1])
    assert not shipped, f"fault-injection harnesses belong in tests/support, not the package: {shipped}"


if __name__ == "__main__":  # figures for a change's description
    root = Path(sys.argv[1]).resolve() / PACKAGE if len(sys.argv) > 1 else ROOT
    mods, found = edges(root)
    sizes = runtime_sizes(mods)
    print(f"{len(mods)} modules, {len(found)} imports")
    for c in circles(mods, found):
        print(f"circle of {len(c)}: {' '.join(c)}")
    up = climbs(found)
    print(f"climbs: {len(up)}")
    for e in up:
        print(f"  {e.source} ({_layer_name(e.source)}) -> {e.target} ({_layer_name(e.target)}) line {e.line}")
    print("runtime modules over 600 lines: " + ", ".join(f"{m} {n}" for m, n in sorted(sizes.items()) if n > 600))
