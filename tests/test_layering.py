"""The layering of SPEC §6: imports point down (or sideways within a floor, without a package
cycle), and no module reaches another package's private names (issue 17)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "eagle_dist"

#: floor of each top-level module or subpackage of eagle_dist
FLOORS = {
    "kernels": 1, "problem": 1, "result": 1, "config": 1, "control": 1, "options": 1,
    "polynomials": 1,
    "solvers": 2, "distributed": 2, "data": 2,
    "api": 3, "model": 3,
    "bench": 4,
    "cli": 5, "__init__": 5, "__main__": 5, "configs": 1,
}


def _unit(rel: Path) -> str:
    """The top-level unit (module or subpackage) a file belongs to."""
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    """(target unit, imported names) for every import of eagle_dist code in ``path``."""
    rel = path.relative_to(PKG)
    tree = ast.parse(path.read_text(), str(path))
    pkg_parts = list(rel.parts[:-1])                     # package of the module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[:len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "eagle_dist":
                mod = node.module.split(".")[1:]
            else:
                continue
            names = [a.name for a in node.names]
            if not mod:                                   # from . import x  (top level)
                for name in names:
                    yield name, [], node.lineno
            else:
                yield mod[0], names, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "eagle_dist" and len(parts) > 1:
                    yield parts[1], [], node.lineno


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path, _unit(path.relative_to(PKG))


def test_every_unit_has_a_floor():
    units = {_unit(p.relative_to(PKG)) for p in PKG.rglob("*.py")}
    assert units <= set(FLOORS), sorted(units - set(FLOORS))


def test_no_import_runs_up_the_layering():
    bad = []
    for path, unit in _modules():
        for target, _, line in _imports(path):
            if target in FLOORS and target != unit and FLOORS[target] > FLOORS[unit]:
                bad.append(f"{path.relative_to(PKG)}:{line} (floor {FLOORS[unit]}) imports "
                           f"{target} (floor {FLOORS[target]})")
    assert not bad, "\n".join(bad)


def test_no_cycle_between_packages():
    graph = {u: set() for u in FLOORS}
    for path, unit in _modules():
        for target, _, _ in _imports(path):
            if target in FLOORS and target != unit:
                graph[unit].add(target)
    seen, stack = set(), []

    def visit(u):
        if u in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(u):] + [u]))
        if u in seen:
            return
        stack.append(u)
        for v in sorted(graph[u]):
            visit(v)
        stack.pop()
        seen.add(u)
    for u in sorted(graph):
        visit(u)


def test_no_private_names_across_packages():
    bad = []
    for path, unit in _modules():
        for target, names, line in _imports(path):
            if target != unit and any(n.startswith("_") and not n.startswith("__") for n in names):
                bad.append(f"{path.relative_to(PKG)}:{line} imports private "
                           f"{[n for n in names if n.startswith('_')]} from {target}")
    assert not bad, "\n".join(bad)
