"""The package's shape: the library (everything but the application, `byol_tf.training` and
the commands in `byol_tf.cli`) imports nothing from the application, and no two modules
import each other, at module level or inside functions."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "byol_tf"


def imports(root=PACKAGE):
    """{module: {byol_tf modules it imports}} over every file under `root` (the package)."""
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[module] = {m for m in found if m.startswith("byol_tf")}
    return graph


def test_the_library_imports_nothing_from_the_application():
    graph = imports()
    application = ("byol_tf.training", "byol_tf.cli")
    library = [m for m in graph if not m.startswith(application)]
    assert "byol_tf.two_view" in library and "byol_tf.training.trainer" in graph
    offending = {m: sorted(i for i in graph[m] if i.startswith(application))
                 for m in library}
    assert {m: i for m, i in offending.items() if i} == {}


def test_no_import_cycle():
    graph = imports()
    modules = set(graph)

    def resolve(name):  # `from byol_tf import data` names a module; `... import BYOL` does not
        return name if name in modules else None

    edges = {m: {resolve(i) for i in graph[m]} - {None, m, "byol_tf"} for m in graph}
    # Each package's __init__ imports its modules; a module importing its own package's
    # __init__ for a re-exported name is not a cycle of two modules, so packages are left out.
    packages = {m for m in modules if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    edges = {m: e - packages for m, e in edges.items() if m not in packages}
    cycles = []
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(path + [start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert cycles == []


def test_the_tests_run_at_most_one_command_in_process():
    # A command module defines its flags in absl's global FLAGS when imported, and the
    # commands share flag names: two of them imported by tests that share a pytest worker
    # fail with DuplicateFlagError. Tests run other commands in a subprocess.
    with_flags = {f"byol_tf.cli.{path.stem}" for path in (PACKAGE / "cli").glob("*.py")
                  if "flags.DEFINE" in path.read_text()}
    assert {"byol_tf.cli.train", "byol_tf.cli.eval"} <= with_flags
    imported = {m for found in imports(PACKAGE.parent / "tests").values() for m in found}
    assert len(imported & with_flags) <= 1, sorted(imported & with_flags)
