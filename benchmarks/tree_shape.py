"""The shape of kexp/ (issue 25's targets): modules and packages, the largest module, functions
over 50 lines, classes defined inside functions, import cycles (a registry importing its own
packages to load them set aside), and print calls or rich Consoles outside the CLI.

    python benchmarks/tree_shape.py [ROOT]      # ROOT: a checkout (default: this one)
"""

import ast
import json
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    name = ".".join(path.relative_to(root).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The kexp modules `path` imports (at any depth in the file, lazy imports too)."""
    own = module_name(root, path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {t for t in targets if t in modules and t != own}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def shape(checkout: Path) -> dict:
    package = checkout / "kexp"
    files = sorted(package.rglob("*.py"))
    modules = {module_name(checkout, p): p for p in files}
    graph = {m: imports_of(checkout, p, set(modules)) for m, p in modules.items()}
    for registry in ("kexp.registry", "kexp.datasets", "kexp.models"):  # loading their packages: allowed
        if registry in graph:
            graph[registry] = {t for t in graph[registry] if not t.startswith(("kexp.datasets.", "kexp.models."))}
    lines = {p: len(p.read_text().splitlines()) for p in files}
    functions, inner, printing = [], [], []
    for p in files:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{p.relative_to(checkout)}:{node.name}"))
                inner += [f"{p.relative_to(checkout)}:{node.name}.{c.name}" for c in ast.walk(node) if isinstance(c, ast.ClassDef)]
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "Console")
                    and "cli" not in p.relative_to(package).parts[:1] and p.name != "display.py"):
                printing.append(f"{p.relative_to(checkout)}:{node.lineno}")
    largest = max(lines, key=lines.get)
    return {
        "files": len(files), "lines": sum(lines.values()),
        "top_level_modules": sum(p.parent == package and p.name not in ("__init__.py", "__main__.py") for p in files),
        "packages": len({p.parent for p in files} - {package}),
        "largest_module": [str(largest.relative_to(checkout)), lines[largest]],
        "modules_over_500_lines": sum(n > 500 for n in lines.values()),
        "functions_over_50_lines": sorted(f for f in functions if f[0] > 50),
        "longest_function": max(functions),
        "classes_inside_functions": inner,
        "import_cycles": cycles(graph),
        "print_or_console_outside_cli": printing,
    }


if __name__ == "__main__":
    print(json.dumps(shape(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]), indent=1))
