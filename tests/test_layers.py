"""Layers only point down: no import cycle between recagent's subpackages, and the serving side
never imports evaluation, training, the server or the CLI.

The walk reads every library source with :mod:`ast` (function-level imports included, since a lazy
import is still a dependency) and maps folders to packages with pyproject's ``package-dir``.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what the serving path may never import: evaluation and training sit beside it, the server and
# the CLI above it
ABOVE_SERVING = {"eval", "finetune", "server", "cli"}
SERVING = {"components", "pipeline", "data", "store", "embeddings", "retrieval", "ranking", "cf", "llm", "models",
           "prompts", "diversify", "explain", "titles", "schemas", "agent", "chat", "batch", "distributed", "tools", "errors"}  # fmt: skip


def library_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: source file}`` for every module the project installs."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    mods: dict[str, Path] = {}
    for pkg, folder in mapping.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            mods.setdefault(name, path)  # a folder mapped twice (recagent.eval) keeps its own package name
    return mods


def imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source."""
    out: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for t in targets:
            while t and t not in mods:  # `from pkg import name`: name may be a module or an attribute
                t = t.rpartition(".")[0]
            if t:
                out.add(t)
    return out


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def subpackage_graph(mods: dict[str, Path]) -> dict[str, dict[str, list[str]]]:
    """``{a: {b: [evidence]}}``: subpackage a imports subpackage b, with the module pairs."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, path in mods.items():
        for t in imported(name, path, mods):
            a, b = subpackage(name), subpackage(t)
            if a != b and a != "(root)":  # the root only re-exports names lazily
                graph[a][b].append(f"{name} imports {t}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one subpackage (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_subpackages():
    graph = subpackage_graph(library_modules())
    found = cycles(graph)
    evidence = [e for comp in found for a in comp for b in comp if b in graph.get(a, {}) for e in graph[a][b][:2]]
    assert not found, f"import cycles {found}: " + "; ".join(evidence)


def test_serving_never_imports_evaluation_training_server_or_cli():
    graph = subpackage_graph(library_modules())
    wrong = [e for a in SERVING for b in ABOVE_SERVING for e in graph.get(a, {}).get(b, [])]
    assert not wrong, "; ".join(wrong)


def test_every_subpackage_is_placed_in_a_layer():
    """A new subpackage must be put on one side of the rule above, or the rule silently skips it."""
    placed = SERVING | ABOVE_SERVING | {"(root)"}
    unplaced = {subpackage(m) for m in library_modules()} - placed
    assert not unplaced, f"add {sorted(unplaced)} to SERVING or ABOVE_SERVING in tests/test_layers.py"


def test_the_walk_sees_a_cycle_and_a_function_level_import(tmp_path):
    """The checker itself: a planted cycle made only of lazy, relative imports is found."""
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"pkg" = "src"\n')
    for sub, other in (("a", "b"), ("b", "a")):
        (tmp_path / "src" / sub).mkdir(parents=True)
        (tmp_path / "src" / sub / "__init__.py").write_text(f"def f():\n    from ..{other} import g\n")
    (tmp_path / "src" / "__init__.py").write_text("")
    graph = subpackage_graph(library_modules(tmp_path))
    assert cycles(graph) == [["a", "b"]]


def test_every_cli_option_is_declared_once():
    """A flag is written in one ``typer.Option`` call, so its help and meaning cannot drift between commands."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in sorted((ROOT / "agent" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "Option",
                "opt",
            ):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                        for flag in arg.value.split("/"):
                            seen[flag].append(f"{path.name}:{node.lineno}")
    assert {"--llm-url", "--adapter", "--candidates", "--data", "--user"} <= set(seen)
    # the same word for a different thing per command, each stated in its own --help: serve takes the keys
    # it accepts, forget the one key it sends; demo's --message is its scripted request, chat's the turns
    # to send; serve shares a session store, forget edits one
    per_command = {"--api-key", "--session-store", "--message"}
    twice = {f: where for f, where in seen.items() if len(where) > 1 and f not in per_command}
    assert not twice, twice


MAX_MODULE_LINES = 500


def test_no_library_module_is_over_500_lines():
    long = {m: n for m, p in library_modules().items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules (> {MAX_MODULE_LINES} lines): {long}"
