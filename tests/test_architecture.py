"""The package's import graph keeps one direction: no cycle, no import from a lower layer to a higher one.

The graph is read from the source with ``ast`` (module-level and function-level imports alike), so an
import hidden inside a function to dodge a cycle counts like any other. docs/architecture.md explains
the order.
"""

from __future__ import annotations

import ast
import os

import fastckpt

# Top to bottom. A module may import modules of its own layer or of a lower one. Every module of the
# package must fall in exactly one layer (longest prefix wins), so a new module is placed on purpose.
LAYERS = [
    ("api", ["fastckpt", "fastckpt.__main__", "fastckpt.cli", "fastckpt.demo", "fastckpt.keras",
             "fastckpt.train"]),
    ("models", ["fastckpt.models"]),
    ("training", ["fastckpt.training"]),
    ("callbacks", ["fastckpt.callbacks"]),
    # fastckpt.utils re-exports the serialization registry (and the seed), so it sits with saving.
    ("saving", ["fastckpt.saving", "fastckpt.utils"]),
    ("parts", ["fastckpt.layers", "fastckpt.optimizers", "fastckpt.losses", "fastckpt.metrics",
               "fastckpt.activations", "fastckpt.initializers", "fastckpt.regularizers",
               "fastckpt.constraints"]),
    ("checkpoint", ["fastckpt.checkpoint"]),
    ("core", ["fastckpt.ops", "fastckpt._core", "fastckpt._loader", "fastckpt.backend",
              "fastckpt.variables", "fastckpt.errors", "fastckpt.config", "fastckpt.version",
              "fastckpt.embedding", "fastckpt.datasets", "fastckpt.utils.progbar", "fastckpt.checks",
              "fastckpt.distribute"]),
]

PKG_DIR = os.path.dirname(os.path.abspath(fastckpt.__file__))
NATIVE = {"fastckpt._core"}


def _modules() -> dict[str, str]:
    mods = {}
    for d, dirs, files in os.walk(PKG_DIR):
        dirs[:] = [x for x in dirs if not x.startswith((".", "__pycache__"))]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, os.path.dirname(PKG_DIR))[:-3].replace(os.sep, ".")
                mods[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return mods


MODULES = _modules()
KNOWN = set(MODULES) | NATIVE


def _imports(mod: str) -> list[tuple[str, int]]:
    """(imported fastckpt module, line) for every import statement of ``mod``, at any depth."""
    path = MODULES[mod]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in KNOWN else base, node.lineno))
    return [(t, line) for t, line in out if t == "fastckpt" or t.startswith("fastckpt.")]


def _layer(mod: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{mod} is in no layer of tests/test_architecture.py: place it"
    return rank


def _graph() -> dict[str, dict[str, int]]:
    graph = {}
    for mod in MODULES:
        edges = {}
        for target, line in _imports(mod):
            # Importing a.b.c also runs the __init__ of a.b: count it, except for the root package
            # (its __init__ is the facade) and for packages the importer lives in (already running).
            parts = target.split(".")
            for n in range(2, len(parts) + 1):
                name = ".".join(parts[:n])
                if name != target and (mod == name or mod.startswith(name + ".")):
                    continue
                if name in KNOWN and name != mod:
                    edges.setdefault(name, line)
        graph[mod] = edges
    return graph


def test_every_module_has_a_layer():
    for mod in MODULES:
        _layer(mod)


def test_no_upward_import():
    bad = []
    for mod, edges in sorted(_graph().items()):
        for target, line in sorted(edges.items()):
            if target == "fastckpt" and mod != "fastckpt":
                lo, hi = _layer(mod), 0
            else:
                lo, hi = _layer(mod), _layer(target)
            if hi < lo:
                bad.append(f"{os.path.relpath(MODULES[mod], os.path.dirname(PKG_DIR))}:{line} "
                           f"{mod} ({LAYERS[lo][0]}) imports {target} ({LAYERS[hi][0]})")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles inside fastckpt/:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_layer_table_names_real_modules():
    for _, prefixes in LAYERS:
        for p in prefixes:
            assert p in KNOWN, f"{p} in LAYERS is not a module of fastckpt"


def test_package_imports_are_at_module_level():
    """With the order above, an import of a fastckpt module never needs to hide in a function."""
    inside = []
    for mod, path in sorted(MODULES.items()):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or "."] if isinstance(node, ast.ImportFrom) else [])
                if node is not fn and any(n == "fastckpt" or n.startswith(("fastckpt.", ".")) or
                                          (isinstance(node, ast.ImportFrom) and node.level)
                                          for n in names):
                    inside.append(f"{os.path.relpath(path, os.path.dirname(PKG_DIR))}:{node.lineno}")
    assert not inside, "fastckpt imports inside functions (move them to the top):\n" + "\n".join(inside)


def _sources():
    for mod, path in sorted(MODULES.items()):
        with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, os.path.dirname(PKG_DIR)), f.read()


def test_rules_shared_with_the_extension_come_from_it():
    from fastckpt import _core, ops
    from fastckpt.saving import inference_plan
    assert ops.ACTIVATIONS == _core.activations
    plan = _core.plan_format
    assert (inference_plan.PLAN_KEY, inference_plan.PLAN_VERSION, inference_plan.MAX_PLAN_BYTES,
            inference_plan.MAX_LINE_BYTES, inference_plan.MAX_LAYERS, inference_plan.MAX_WIDTH) == (
        plan["key"], plan["version"], plan["max_plan_bytes"], plan["max_line_bytes"],
        plan["max_layers"], plan["max_width"])


def test_each_rule_is_written_once():
    import re
    once = {
        # rule: (pattern, the one file allowed to hold it)
        "HDF5 magic": (r"\\x89HDF", "fastckpt/saving/formats.py"),
        "single-file suffixes": (r"\(\s*\"\.h5\",\s*\"\.hdf5\"", "fastckpt/saving/formats.py"),
        "int-but-not-bool check": (r"isinstance\([^()]*, bool\) or not isinstance", None),
        "activation code table": (r"\"softmax\":\s*4", None),
        "built-in layer table": (r"\"Dropout\":\s*Dropout", "fastckpt/saving/serialization.py"),
    }
    bad = [f"{rel}: {rule}" for rel, text in _sources() for rule, (pattern, home) in once.items()
           if re.search(pattern, text) and rel != home]
    assert not bad, "a rule written outside its one home:\n" + "\n".join(bad)


def test_only_ops_imports_the_extension():
    importers = sorted(mod for mod, edges in _graph().items() if "fastckpt._core" in edges)
    assert importers == ["fastckpt.ops"], importers


def test_no_module_defines_a_name_twice():
    """Sections of one module written in parallel (ops.py has one per topic) must not define the
    same top-level name: the later definition silently replaces the earlier for every caller."""
    dupes = {}
    for mod, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        seen = set()
        for node in tree.body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            for name in names:
                if name in seen:
                    dupes.setdefault(mod, []).append(name)
                seen.add(name)
    assert not dupes, f"names defined twice at module level: {dupes}"
