"""The package's import graph, built from the source files: no cycles; old paths still work.

The graph counts every `import` statement of a module, function bodies included (a cycle hidden
in a function body is still a cycle). `lint-imports` checks the layers in CI; this test needs
nothing but the standard library.
"""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest
from helpers import REPO_ROOT


# package name -> folder (pyproject's [tool.setuptools.package-dir] maps dakter_hf.pipelines to pipelines/)
PACKAGE_FOLDERS = {"dakter_hf": REPO_ROOT / "dakter_hf", "dakter_hf.pipelines": REPO_ROOT / "pipelines"}


def module_files(package_folders):
    """{module name: file} of every module of the packages (folders without __init__.py are not packages)."""
    modules = {}
    for package, folder in package_folders.items():
        for path in sorted(Path(folder).rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if any(not (Path(folder, *parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
                continue  # e.g. students/metric/*/: a script loaded by path, not a module
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imported_names(path, module, is_package):
    """Every module name an import statement of `path` names, at any depth of the file."""
    names = []
    for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            # `from a import b` imports a.b when b is a module, else a name of a
            names += [origin] + [f"{origin}.{alias.name}" for alias in node.names]
    return names


def import_graph(package_folders=None):
    """{module: set of modules of the same packages it imports}."""
    modules = module_files(package_folders or PACKAGE_FOLDERS)
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name in imported_names(path, module, path.name == "__init__.py"):
            while name and name not in modules:  # a name inside a module counts as that module
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def find_cycles(graph):
    """One cycle (a list of modules, first == last) for each strongly connected group of modules."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node):  # Tarjan, iterative: the graph is small but recursion depth is not ours to spend
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == current:
                            break
                    if len(group) > 1:
                        groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[current] = min(low[current], index[child])

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:  # the shortest way back to the group's first module, inside the group
        start = min(group)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {c for n in frontier for c in graph[n]}:
            following = []
            for node in frontier:
                for child in sorted(graph[node] & group):
                    if child not in paths:
                        paths[child] = paths[node] + [child]
                        following.append(child)
            frontier = following
        last = next(n for n in frontier if start in graph[n])
        cycles.append(paths[last] + [start])
    return cycles


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "dakter_hf.cli" in graph and "dakter_hf.pipelines.pipeline_dakter" in graph
    # the graph sees the folder that package-dir maps
    assert "dakter_hf.pipelines.pipeline_dakter" in graph["dakter_hf.joint.objective"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_nothing_imports_the_cli_and_the_pipeline_file_imports_nothing_of_the_package():
    graph = import_graph()
    importers = sorted(module for module, edges in graph.items() if "dakter_hf.cli" in edges)
    assert importers == [], f"dakter_hf.cli is imported by {importers}"
    for module in ("dakter_hf.pipelines", "dakter_hf.pipelines.pipeline_dakter"):
        assert graph[module] <= {"dakter_hf.pipelines.pipeline_dakter"}, f"{module} imports {graph[module]}"
    # lint-imports sees pipelines/ only as its own root package: the layers below it are checked here
    below = [m for m in graph if m.split(".")[1:2] in (["utils"], ["errors"], ["configs"], ["_moved"])]
    assert not [m for m in below if any(e.startswith("dakter_hf.pipelines") for e in graph[m])]


def test_a_cycle_through_a_function_body_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (package / "sub" / "c.py").write_text("def g():\n    import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\nfrom pkg.sub.b import f\n")
    graph = import_graph({"pkg": package})
    assert graph["pkg.sub.b"] == {"pkg.sub", "pkg.sub.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]]


# ---- old import paths forward for one release -------------------------------------------


def _moved():
    from dakter_hf import _moved

    return _moved.MOVED


@pytest.mark.parametrize("old", sorted(_moved()))
def test_every_old_module_path_imports_with_a_future_warning(old):
    saved = sys.modules.pop(old, None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert any(issubclass(w.category, FutureWarning) and old in str(w.message) for w in caught), old
        for target in _moved()[old]:  # each name a new home defines is the one the old path gives
            new = importlib.import_module(target)
            public = [
                n for n, v in vars(new).items() if not n.startswith("_") and getattr(v, "__module__", None) == target
            ]
            assert public, f"{target} defines no public name"
            for name in public:
                assert getattr(module, name) is getattr(new, name), f"{old}.{name} is not {target}.{name}"
    finally:
        sys.modules.pop(old, None)
        if saved is not None:
            sys.modules[old] = saved


def test_old_spellings_users_wrote_still_work():
    for old in ("dakter_hf.train_joint", "dakter_hf.generate"):
        sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match="dakter_hf.train_joint"):
        from dakter_hf.train_joint import JointTrainingArguments, train
    with pytest.warns(FutureWarning, match="dakter_hf.generate"):
        import dakter_hf.generate
    from dakter_hf.generation.dataset import generate_dataset
    from dakter_hf.joint import training

    assert train is training.train and JointTrainingArguments is training.JointTrainingArguments
    assert dakter_hf.generate.generate_dataset is generate_dataset


def test_demo_steps_is_train_steps_with_a_warning(capsys):
    from dakter_hf.cli import build_parser

    with pytest.warns(FutureWarning, match="--train-steps"):
        args = build_parser().parse_args(["demo", "--steps", "7"])
    assert args.train_steps == 7 and "--steps is deprecated" in capsys.readouterr().out
    parser = build_parser()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        assert parser.parse_args(["demo", "--train-steps", "5"]).train_steps == 5
    assert build_parser().parse_args(["demo"]).train_steps is None
