"""skdeep's modules form layers: each imports only lower ones, and no other module's private names.

The imports are read from the source with :mod:`ast` (function-level imports included, since they
are dependencies too, only hidden), so the test needs nothing installed beyond pytest.

A new module goes into ``LAYERS`` where its imports put it: above everything it imports, below
everything that imports it. If it fits nowhere, the import graph has a cycle or a module does two
things; split it rather than reorder the layers around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skdeep"

#: Lowest first. A module may import the modules listed before it, never those after it.
LAYERS = [
    # foundations: no skdeep imports
    "_defaults",        # allowed values and defaults, importing nothing (the CLI's parser)
    "_version",         # the version, importing nothing (the build reads it statically)
    "_values",          # NumPy values as plain Python, for messages and JSON
    "metrics",          # expected calibration error (issue 22)
    "calibration",      # temperature scaling, calibration scores, reliability diagrams
    "_device",          # which hardware and dtype
    "_weights",         # reading weights files and hub caches safely
    "_preprocessing",   # data configs and image transforms
    "_augment",         # training-time augmentations (issue 11)
    "_inputs",          # every form of X -> a Dataset of RGB images
    "_jpeg",            # JPEG files decoded a batch at a time on the device (nvJPEG)
    "_atomic",          # all-or-nothing file writes
    "_strategies",      # the names of evaluate's strategies
    "probing",          # the linear probe, and read as one affine map (issue 24)
    # the network
    "_layers",          # which activations, pooled how
    "_trainable_layers",  # the layers train_layers counts, shallow to deep
    "_optim",           # optimisers and schedules over those layers
    "_inference",       # the batched forward loop
    "_compiled",        # the frozen network as one compiled graph
    "_averaging",       # the moving average of the weights (issue 24)
    "_mixing",          # mixup and CutMix of training batches (issue 24)
    "_training",        # the training loop
    "_safe_format",     # the pickle-free saved format
    "_provenance",      # what a fit was made with
    "backbones",        # names -> networks, their layers, the layer sweep
    "cache",            # the feature cache
    "datasets",         # sample data and folders of images
    # the estimators
    "_base",            # what both estimators share
    "features",         # PretrainedCNNFeatures
    "callbacks",        # training callbacks
    "recipes",          # named fine-tuning recipes (issue 24)
    "classifier",       # FineTunedCNNClassifier
    "model_selection",  # near-duplicate groups and the splitter that keeps them together
    "data_audit",       # audit: duplicates, label conflicts, outliers, label errors
    "explain",          # activation maps of pipelines and fine-tuned classifiers (issue 23)
    # built on the estimators
    "_report",          # an evaluation in words, files and plots
    "_result",          # EvaluationResult
    "evaluation",       # evaluate: cross-validated strategies
    "_outputs",         # resumable feature files (issue 14)
    "dask",             # scale-out
    "cli",              # the skdeep command
    "__main__",         # python -m skdeep
]

#: Imports that break the order today, each with the issue that removes it. This list may only
#: shrink: an import that no longer exists must be taken out of it (the test says so).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}

#: Names a module may import from another module although they start with "_", with the reason.
#: (Empty: a name used across modules is public, so it has no leading underscore.)
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def _imports(path: Path, modules: set[str]) -> tuple[set[str], list[str]]:
    """(skdeep modules ``path`` imports anywhere in it, its reaches into private names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: set[str] = set()
    private: list[str] = []
    module_aliases: dict[str, str] = {}  # local name -> skdeep module bound to it
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE.name and len(parts) > 1 and parts[1] in modules:
                    targets.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                dotted = node.module or ""
            elif node.level == 0 and (node.module or "").split(".")[0] == PACKAGE.name:
                dotted = (node.module or "").partition(".")[2]
            else:
                continue  # a third-party import
            if dotted:  # from .x import name
                target = dotted.split(".")[0]
                targets.add(target)
                private += [f"{target}.{alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
            else:  # from . import x: modules, or the package's own attributes (__version__)
                for alias in node.names:
                    if alias.name in modules:
                        targets.add(alias.name)
                        module_aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):  # `from . import _weights` then `_weights._private`
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            private.append(f"{module_aliases[node.value.id]}.{node.attr}")
    targets.discard(path.stem)
    return targets & modules, private


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], list[str]]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    missing = sorted(set(graph) - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS in {__file__}, above what they import"


def test_no_module_imports_a_higher_layer(graph):
    rank = {name: index for index, name in enumerate(LAYERS)}
    upward = {(module, target) for module, (targets, _) in graph.items()
              for target in targets if rank[target] > rank[module]}
    new = sorted(upward - set(KNOWN_VIOLATIONS))
    assert not new, (
        "imports of a higher layer (module -> imported): "
        + ", ".join(f"{module} -> {target}" for module, target in new)
        + ". Move the shared code down, or the importing module up in LAYERS if it belongs there."
    )
    fixed = sorted(set(KNOWN_VIOLATIONS) - upward)
    assert not fixed, f"no longer imported, remove from KNOWN_VIOLATIONS: {fixed}"


def test_no_module_imports_another_modules_private_names(graph):
    found = sorted({(module, name) for module, (_, private) in graph.items() for name in private}
                   - set(ALLOWED_PRIVATE))
    assert not found, (
        "private names used outside their module: "
        + ", ".join(f"{module} uses {name}" for module, name in found)
        + ". Make the name public (and documented) in its module, or move the code that needs it."
    )


def test_the_import_graph_has_no_cycle(graph):
    # Depth-first search; a module met again while still on the path closes a cycle.
    edges = {module: sorted(targets) for module, (targets, _) in graph.items()}
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in edges.get(module, []):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_checks_see_what_they_must(tmp_path):
    """The walk finds function-level imports, private names and module-attribute reaches."""
    (tmp_path / "a.py").write_text(
        "from . import b\n"
        "def f():\n"
        "    from .c import _hidden, shown\n"
        "    return b._inner, shown\n"
    )
    targets, private = _imports(tmp_path / "a.py", {"a", "b", "c"})
    assert targets == {"b", "c"}
    assert sorted(private) == ["b._inner", "c._hidden"]
