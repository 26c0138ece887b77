"""The package's import graph, checked: cycles (imports inside functions count), module sizes,
and convscope-internal imports made inside functions.

    python scripts/layout.py            # prints the graph's cycles, long modules, deferred imports
    python scripts/layout.py --graph    # ... and every module's convscope imports

Imports under ``if TYPE_CHECKING:`` never run and are left out.  ``tests/test_layout.py`` asserts
on :func:`analyse`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "convscope"
MAX_LINES = 400


@dataclass
class Layout:
    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    deferred: list[tuple[str, int, str]] = field(default_factory=list)  # internal, in a function
    lines: dict[str, int] = field(default_factory=dict)

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (or a self-import)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        out: list[list[str]] = []
        sys.setrecursionlimit(10000)

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(self.edges.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in self.edges.get(v, ()):
                    out.append(sorted(comp))

        for m in sorted(self.modules):
            if m not in index:
                visit(m)
        return out

    def long_modules(self, limit: int = MAX_LINES) -> dict[str, int]:
        return {m: n for m, n in sorted(self.lines.items()) if n > limit}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[tuple[ast.AST, bool]]:
    """(import node, inside a function) for every import that can run."""
    found: list[tuple[ast.AST, bool]] = []

    def walk(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    walk_one(sub, in_func)
                continue
            walk_one(child, in_func)

    def walk_one(child: ast.AST, in_func: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append((child, in_func))
        walk(child, in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                  ast.Lambda)))

    walk(tree, False)
    return found


def analyse(root: Path = ROOT) -> Layout:
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {_module_name(p, root): p for p in files}
    lay = Layout(modules)
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lay.lines[name] = text.count("\n") + (not text.endswith("\n") and bool(text))
        is_pkg = path.name == "__init__.py"
        base = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node, in_func in _imports(ast.parse(text, str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                if node.level:
                    pkg = base.split(".")
                    pkg = pkg[:len(pkg) - (node.level - 1)]
                    mod = ".".join(pkg + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
                # `from . import sub` runs the package's __init__ only as a parent, as every
                # import does: the edge is to the submodules named, unless other names come too
                names = subs + ([mod] if len(subs) < len(node.names) else [])
            for target in names:
                if target.split(".")[0] != PACKAGE:
                    continue
                while target not in modules and "." in target:  # `import convscope.x.y` etc.
                    target = target.rpartition(".")[0]
                if target == name:
                    continue
                targets.add(target)
                if in_func:
                    lay.deferred.append((name, node.lineno, target))
        lay.edges[name] = targets
    return lay


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graph", action="store_true", help="print every module's imports")
    args = ap.parse_args()
    lay = analyse()
    if args.graph:
        for m in sorted(lay.edges):
            print(f"{m}: {', '.join(sorted(lay.edges[m])) or '-'}")
    cycles = lay.cycles()
    print(f"{len(lay.modules)} modules, {sum(lay.lines.values()):,} lines")
    print(f"cycles: {len(cycles)}")
    for c in cycles:
        print("  " + " <-> ".join(c))
    long = lay.long_modules()
    print(f"modules over {MAX_LINES} lines: {len(long)}")
    for m, n in long.items():
        print(f"  {m}: {n}")
    print(f"convscope imports inside functions: {len(lay.deferred)}")
    for m, line, t in lay.deferred:
        print(f"  {m}:{line} -> {t}")
    return 1 if cycles or long else 0


if __name__ == "__main__":
    raise SystemExit(main())
