"""The package is layered: every module imports only from its own layer or lower ones, and the
imports (at module level and inside functions) form no cycle. The README's "Architecture"
section draws the same picture."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "analytic_denoisers"
PACKAGE = ROOT.name

# module-name prefix (below the package) -> layer; the longest matching prefix wins
LAYERS = {
    "core": 0,
    "kernels": 1, "sampling": 1, "metrics": 1, "datasets": 1, "viz": 1,
    "scales": 2, "denoisers": 2,
    "unet": 3, "registry": 3,
    "bench": 4, "analysis": 4, "testing": 4,
    "cli": 5,
    "__main__": 6, "": 6,  # "" is the package root: the public names only
}


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module):
    inner = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    keys = [k for k in LAYERS if inner == k or inner.startswith(k + ".") or k == ""]
    return max(keys, key=len), LAYERS[max(keys, key=len)]


def imports(module):
    """``(line, imported module)`` for every import of a package module in ``module``'s file.

    Importing ``pkg.sub.mod`` also runs ``pkg/sub/__init__.py``: the parent packages of every
    imported module count as imported too (except the root, and those ``module`` lies in)."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[:len(module.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # "from pkg import submodule" imports that submodule
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else target))
    inside = [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]
    parents = [(line, ".".join(name.split(".")[:k])) for line, name in inside for k in range(2, name.count(".") + 1)]
    return inside + [(line, p) for line, p in parents if not (module + ".").startswith(p + ".")]


GRAPH = {m: imports(m) for m in MODULES}


def upward_imports(graph):
    """Messages for every import in ``graph`` (module -> [(line, module)]) that goes up a layer."""
    return [f"{module}:{line} imports {name} (layer {layer(name)[0] or 'root'} = {layer(name)[1]}, "
            f"above {layer(module)[0] or 'root'} = {layer(module)[1]})"
            for module, found in graph.items() for line, name in found if layer(name)[1] > layer(module)[1]]


def import_cycles(graph):
    """Every cycle a depth-first search of ``graph`` closes, as "a -> b -> a (at a:line)"."""
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for line, name in graph.get(module, []):
            if state.get(name) == "open":
                cycles.append(" -> ".join(stack[stack.index(name):] + [name]) + f" (at {module}:{line})")
            elif name not in state and name in graph:
                visit(name)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_every_module_has_a_layer():
    assert f"{PACKAGE}.core.contract" in MODULES and f"{PACKAGE}.registry" in MODULES
    for module in MODULES:
        assert layer(module)[0] != "" or module == PACKAGE, f"{module} belongs to no layer of LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    wrong = upward_imports({module: GRAPH[module]})
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    cycles = import_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    kernel, estimator = f"{PACKAGE}.kernels.k", f"{PACKAGE}.denoisers.e"
    graph = {kernel: [(3, estimator)], estimator: [(7, kernel)]}
    assert upward_imports(graph) == [f"{kernel}:3 imports {estimator} (layer denoisers = 2, above kernels = 1)"]
    assert import_cycles(graph) == [f"{estimator} -> {kernel} -> {estimator} (at {kernel}:3)"]
    # relative imports are resolved, also inside functions: the contract's save reaches the artifact
    assert f"{PACKAGE}.core.artifact" in {name for _, name in GRAPH[f"{PACKAGE}.core.contract"]}
    assert f"{PACKAGE}.registry" in {name for _, name in GRAPH[f"{PACKAGE}.testing"]}
    # importing a module runs its parent packages: scales.table reaches scales/__init__ (rules, calibration)
    assert f"{PACKAGE}.scales" in {name for _, name in GRAPH[f"{PACKAGE}.registry"]}
    assert f"{PACKAGE}.kernels" not in {name for _, name in GRAPH[f"{PACKAGE}.kernels.softmax"]}
