"""The package's shape: no import cycles, no private names across modules, no oversized modules.

Read from the source with :mod:`ast` (nothing is imported), so that every import counts: those
at module level, those inside functions (which run later, but still tie the two modules
together) and those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "secsync"

MAX_LINES = 500
#: A module over MAX_LINES says why in its docstring, on a line starting with this marker.
SIZE_MARKER = "Size:"

#: Modules being split right now: over MAX_LINES without a stated reason, for the time being.
#: Shrink this list as they are split (a module under the limit here fails the test).
BEING_SPLIT: set[str] = set()

#: Internal helpers that every part of the package may import although their names are private.
INTERNAL_HELPERS = {"secsync._lazy"}

#: Cycles that stay, each with the reason: every edge that closes them is an import under
#: ``if TYPE_CHECKING:`` (for annotations only, never run).
ALLOWED_TYPE_CHECKING_CYCLES: dict[frozenset[str], str] = {
    frozenset(
        {
            "secsync.protocol.batches",
            "secsync.protocol.receive_snapshots",
            "secsync.protocol.receive_updates",
            "secsync.protocol.session",
            "secsync.protocol.writing",
        }
    ): (
        "the session's steps are functions of the DocumentSession whose state they read and "
        "change; session.py calls them, and they name DocumentSession in annotations only"
    ),
}

#: Runtime cycles in modules being reworked right now, with the change that ends each one.
#: Remove an entry when its cycle is gone (the test says so).
CYCLES_BEING_FIXED: dict[frozenset[str], str] = {}

#: Private names of another module used as ``module._name`` by modules whose other side is
#: being reworked right now: (user, module, name). The module should make them public.
PRIVATE_USES_BEING_FIXED: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported from
    names: tuple[str, ...]  # the names taken from it (empty for ``import target``)
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = source_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))

    def visit(node: ast.AST, guarded: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno, guarded)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            yield Import(module, _absolute(module, node), names, node.lineno, guarded)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, True)
            for child in node.orelse:
                yield from visit(child, guarded)
        else:
            for child in ast.iter_child_nodes(node):
                yield from visit(child, guarded)

    yield from visit(tree, False)


ALL_IMPORTS = [found for module in MODULES for found in imports(module)]


def targets(found: Import) -> set[str]:
    """The package's modules an import ties its importer to: ``from a import b`` names the
    module ``a.b`` when there is one, else ``a``."""
    if found.target not in MODULES:
        return set()
    submodules = {f"{found.target}.{name}" for name in found.names} & MODULES.keys()
    plain = [name for name in found.names if f"{found.target}.{name}" not in MODULES]
    return submodules | ({found.target} if plain or not found.names else set())


def graph(*, type_checking: bool = True) -> dict[str, set[str]]:
    """Module -> the modules it imports; without ``type_checking``, only imports that run."""
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for found in ALL_IMPORTS:
        if type_checking or not found.type_checking:
            edges[found.importer] |= targets(found) - {found.importer}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_function_level_and_type_checking_imports() -> None:
    # secsync/__init__.py names its exports only under TYPE_CHECKING; the CLI imports the
    # demo inside a function.
    assert "secsync.access.group" in graph()["secsync"]
    assert "secsync.access.group" not in graph(type_checking=False)["secsync"]
    assert "secsync.apps.demo" in graph(type_checking=False)["secsync.cli.demo"]
    # ``from secsync.protocol import crypto`` ties the importer to the module crypto
    assert "secsync.protocol.crypto" in graph()["secsync.protocol.sealing"]


def _root_without_type_checking(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    # The package root names its lazy exports under TYPE_CHECKING only (PEP 562), and every
    # module is inside the package: those edges would make one cycle of everything.
    root = {
        target
        for found in ALL_IMPORTS
        if found.importer == "secsync" and not found.type_checking
        for target in targets(found)
    }
    return {**edges, "secsync": root}


def test_no_import_cycles_at_run_time() -> None:
    """Imports that run (at module level or inside functions) make no cycle."""
    found = sorted(sorted(cycle) for cycle in cycles(graph(type_checking=False)))
    assert [cycle for cycle in found if frozenset(cycle) not in CYCLES_BEING_FIXED] == []
    stale = [sorted(cycle) for cycle in CYCLES_BEING_FIXED if sorted(cycle) not in found]
    assert stale == [], "a cycle is gone: remove it from CYCLES_BEING_FIXED"


def test_import_cycles_only_through_type_checking_imports_with_a_reason() -> None:
    found = {cycle for cycle in cycles(_root_without_type_checking(graph()))}
    unexplained = [
        sorted(cycle)
        for cycle in found
        if cycle not in ALLOWED_TYPE_CHECKING_CYCLES and cycle not in CYCLES_BEING_FIXED
    ]
    assert unexplained == []
    stale = [sorted(cycle) for cycle in ALLOWED_TYPE_CHECKING_CYCLES if cycle not in found]
    assert stale == [], "an allowed cycle is gone: remove it from ALLOWED_TYPE_CHECKING_CYCLES"


def _private_attributes(module: str) -> Iterator[tuple[str, str, int]]:
    """``(module, name, line)`` for every ``alias._name`` where ``alias`` is another module of
    the package imported here."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _is_private(node.attr)
        ):
            yield aliases[node.value.id], node.attr, node.lineno


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_imported_across_modules() -> None:
    imported = [
        f"{found.importer}:{found.line} imports {name} from {found.target}"
        for found in ALL_IMPORTS
        if found.target in MODULES and found.target not in INTERNAL_HELPERS
        for name in found.names
        if _is_private(name)
    ]
    private_modules = [
        f"{found.importer}:{found.line} imports {target}"
        for found in ALL_IMPORTS
        for target in targets(found)
        if any(_is_private(part) for part in target.split(".")) and target not in INTERNAL_HELPERS
    ]
    used = {
        (module, owner, name): line
        for module in MODULES
        for owner, name, line in _private_attributes(module)
        if owner != module
    }
    attributes = [
        f"{module}:{line} uses {owner}.{name}"
        for (module, owner, name), line in sorted(used.items())
        if (module, owner, name) not in PRIVATE_USES_BEING_FIXED
    ]
    assert imported + private_modules + attributes == []
    stale = sorted(PRIVATE_USES_BEING_FIXED - used.keys())
    assert stale == [], "made public already: remove them from PRIVATE_USES_BEING_FIXED"


def _states_its_size(path: Path) -> bool:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return any(line.startswith(SIZE_MARKER) for line in docstring.splitlines())


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_the_limit_without_a_reason(module: str) -> None:
    path = MODULES[module]
    relative = path.relative_to(ROOT).as_posix()
    if relative in BEING_SPLIT:
        return
    lines = _line_count(path)
    assert lines <= MAX_LINES or _states_its_size(path), (
        f"{relative} has {lines} lines: split it, or say why on a line starting "
        f"{SIZE_MARKER!r} in its docstring"
    )


def test_the_modules_being_split_still_need_the_exemption() -> None:
    done = sorted(
        relative
        for relative in BEING_SPLIT
        if (ROOT / relative).is_file() and _line_count(ROOT / relative) <= MAX_LINES
    )
    assert done == [], "split already: remove them from BEING_SPLIT"
