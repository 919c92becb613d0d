"""The package map of ``docs/architecture.md`` stays true: its layer table is read here and every
import in ``fpt/`` (module level or inside a function) is checked against it."""

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "architecture.md")

# imports that go up a layer, each named (with its reason) in docs/architecture.md
UPWARD = {("fpt/inference/workers.py", "fpt.predictor")}

# modules that tell LazyConfigs from yacs configs; elsewhere fpt.config.RunConfig answers
KIND_CHECKS_ALLOWED = ("fpt/config/",)
# omegaconf containers left on modules by instantiate() (not a config kind check)
NOT_KIND_CHECKS = {"fpt/export/adapters.py"}


def _layers():
    """{package: layer} from the doc's table (``| 3 | `fpt.a`, `fpt.b` | ... |``)."""
    layers = {}
    with open(DOC) as f:
        for line in f:
            m = re.match(r"\| (\d+) \| (.*?) \|", line)
            if m:
                for name in re.findall(r"`(fpt\.\w+)`", m.group(2)):
                    layers[name] = int(m.group(1))
    return layers


def _python_files():
    for folder, _, files in os.walk(os.path.join(REPO, "fpt")):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, REPO).replace(os.sep, "/"), path


def _imports(rel, path):
    """Absolute names of the ``fpt`` modules a file imports."""
    package = rel[:-3].replace("/", ".")
    if not rel.endswith("__init__.py"):
        package = package.rsplit(".", 1)[0]
    else:
        package = package[: -len(".__init__")]
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            names = (
                [".".join(base + [node.module])]
                if node.module
                else [".".join(base + [a.name]) for a in node.names]
            )
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        yield from (n for n in names if n == "fpt" or n.startswith("fpt."))


def _package(module):
    """``fpt.a.b.c`` -> ``fpt.a`` (a subpackage or a top-level module)."""
    return ".".join(module.split(".")[:2])


def test_the_doc_lists_every_package_once():
    layers = _layers()
    top = {
        "fpt." + (name[:-3] if name.endswith(".py") else name)
        for name in os.listdir(os.path.join(REPO, "fpt"))
        if name != "__init__.py"
        and (name.endswith(".py") or os.path.isfile(os.path.join(REPO, "fpt", name, "__init__.py")))
    }
    assert set(layers) == top


def test_no_module_imports_a_higher_layer():
    layers = _layers()
    wrong, edges = [], set()
    for rel, path in _python_files():
        if rel == "fpt/__init__.py":
            continue  # imports fpt.compat first, then fills the registries
        source = _package("fpt." + rel[4:-3].replace("/", "."))
        for module in _imports(rel, path):
            target = _package(module)
            if target in ("fpt", source):
                continue
            if layers[target] > layers[source] and (rel, target) not in UPWARD:
                wrong.append(
                    f"{rel} (layer {layers[source]}) imports {module} (layer {layers[target]})"
                )
            elif layers[target] == layers[source]:
                edges.add((source, target))
    assert not wrong, "\n".join(wrong)
    cycles = [(a, b) for a, b in edges if (b, a) in edges]
    assert not cycles, f"packages of one layer import each other: {cycles}"


def test_the_allowed_upward_imports_are_documented():
    with open(DOC) as f:
        doc = f.read()
    for rel, module in UPWARD:
        assert f"`{rel}` imports `{module}`" in doc


@pytest.mark.parametrize(
    "pattern", [r"isinstance\([^)]*\b(DictConfig|CfgNode)\b", r"\bis_lazy_config\("]
)
def test_config_kinds_are_told_apart_only_in_the_config_layer(pattern):
    found = set()
    for rel, path in _python_files():
        if rel.startswith(KIND_CHECKS_ALLOWED) or rel in NOT_KIND_CHECKS:
            continue
        with open(path) as f:
            if re.search(pattern, f.read()):
                found.add(rel)
    assert not found, sorted(found)
