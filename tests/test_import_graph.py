"""No import cycles among the project's modules (vla/, kernels/, sim/, real_robot/).

Every import counts, including those inside functions: a lazy import that goes back up the layers
is the cycle this guards against (it only hides the cycle from import time). Module names follow
pyproject's package-dir: kernels/ is vla.kernels, sim/ vla.sim, real_robot/ vla.real_robot.
`from pkg import sub` (and `from . import sub`) imports the submodule pkg.sub, not pkg's
__init__, so a package whose __init__ re-exports its submodules is not a cycle with them.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"vla": "vla", "kernels": "vla.kernels", "sim": "vla.sim", "real_robot": "vla.real_robot"}


def module_files() -> dict[str, Path]:
    """{module name: file} of every module under the roots."""
    modules = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that the module `name` (in `path`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from source import x`: the submodule source.x if there is one, else a name of source.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # A function-level import (registry.load_policy imports the foreign loaders on use).
    assert "vla.policy.foreign.pretrained" in graph["vla.policy.registry"]
    # `from . import dispatch` is the submodule, not the package's __init__.
    assert "vla.kernels.dispatch" in graph["vla.kernels.flow_sde"]
    assert "vla.kernels" not in graph["vla.kernels.flow_sde"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (each line: modules that import each other, lazily or not):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_policy_layers():
    """vla/policy's layering (docs/DECISIONS.md): the shared modules know no policy type, a policy type's
    folder knows no loader, and the checkpoint format module knows no policy class."""
    graph = import_graph()
    shared = {"vla.policy.checkpoint", "vla.policy.config", "vla.policy.normalize", "vla.policy.finetune",
              "vla.policy.flow_matching_policy", "vla.policy.observation", "vla.policy.sampling"}
    types = ("vla.policy.flow_vla", "vla.policy.smolvla", "vla.policy.state_flow", "vla.policy.steered")
    for name in shared:
        assert not [t for t in graph[name] if t.startswith(types + ("vla.policy.foreign", "vla.policy.registry"))], name
    for name, targets in graph.items():
        if name.startswith(types):
            assert not [t for t in targets if t.startswith(("vla.policy.foreign", "vla.policy.registry"))], name
