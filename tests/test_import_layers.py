"""The import graph of ``invert4tvg/`` and ``rewards/`` runs one way: down the layers below, with no cycle.

Read with ``ast`` (nothing is imported), counting every import: module level, inside functions and under
``TYPE_CHECKING``. A module belongs to the layer of the longest prefix below that names it; it may import its own
layer and the layers under it. docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("invert4tvg", "rewards")

# Bottom first: (layer, module prefixes, what it holds / why it sits there).
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    (
        "root",
        ("invert4tvg", "invert4tvg._compat", "invert4tvg._build", "invert4tvg.errors"),
        "the package, the torchvision fix every import needs first, the build step that installs it, and the "
        "user-error class every layer raises",
    ),
    ("rewards", ("rewards",), "verifiable rewards and the NLP backend: TRL's reward signature, no model"),
    ("data", ("invert4tvg.data",), "records, dataset formats, video decoding, the synthetic benchmark"),
    (
        "config",
        ("invert4tvg.config_checks", "invert4tvg.config", "invert4tvg.config_parser"),
        "the flat TRL-style arguments, their parser and their checks",
    ),
    ("tasks", ("invert4tvg.tasks",), "prompts of the four tasks, verb masking, the task sampler"),
    (
        "modeling",
        ("invert4tvg.modeling",),
        "model passes: processing, log-probs, readouts, layouts, positions",
    ),
    (
        "rollout",
        ("invert4tvg.rollout",),
        "the RolloutEngine contract and its engines (a model in, completions out)",
    ),
    ("policy", ("invert4tvg.policy",), "the Policy seam: a model, its processor and a grounding head"),
    (
        "rollout hosts",
        ("invert4tvg.rollout.worker", "invert4tvg.rollout.ray_pool"),
        "Ray actors hosting engines; a worker loads the policy as the trainer does, so its weights sync by name",
    ),
    ("training", ("invert4tvg.training",), "what both trainers share: base loop, checkpoints, logs, guards"),
    ("trainers", ("invert4tvg.grpo", "invert4tvg.sft", "invert4tvg.eval"), "GRPO, SFT and evaluation"),
    ("builders", ("invert4tvg.builders",), "parts built from a configuration, for recipes and commands"),
    ("workflows", ("invert4tvg.workflows",), "multi-step runs (demo, compare) and the recipe loader"),
    ("commands", ("invert4tvg.commands", "invert4tvg.cli"), "the invert4tvg command line"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _own(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` (a module or a name inside one) resolves to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, source: str, is_package: bool, modules) -> list[tuple[str, int]]:
    """(imported module of ours, line) for every import statement in ``module``, wherever it sits."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _own(name, modules)
            if target is not None and target != module and (target, node.lineno) not in found:
                found.append((target, node.lineno))
    return found


def _layer(module: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "invert4tvg" and module.startswith(prefix + "."))
            if matches and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def _graph() -> dict[str, list[tuple[str, int]]]:
    modules = _modules()
    return {
        module: _imports(module, path.read_text(), path.name == "__init__.py", modules)
        for module, path in modules.items()
    }


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


def test_no_import_goes_up_a_layer():
    upward = [
        f"{module}:{line} imports {target} ({LAYERS[_layer(module)][0]} -> {LAYERS[_layer(target)][0]})"
        for module, imports in sorted(_graph().items())
        for target, line in imports
        if _layer(target) > _layer(module)
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        map(" <-> ".join, cycles)
    )


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    modules = _modules()
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..config import ModelArguments\n"
        "def f():\n    from invert4tvg.policy.base import Policy\n    import rewards.nlp\n"
    )
    assert _imports("invert4tvg.data.records", source, False, modules) == [
        ("invert4tvg.config", 3),
        ("invert4tvg.policy.base", 5),
        ("rewards.nlp", 6),
    ]


def test_the_checker_sees_an_upward_import_and_a_cycle():
    graph = {
        "invert4tvg.data.records": [("invert4tvg.policy.base", 3)],
        "invert4tvg.policy.base": [("invert4tvg.data.records", 5)],
    }
    assert _layer("invert4tvg.data.records") < _layer("invert4tvg.policy.base")
    assert _cycles(graph) == [["invert4tvg.data.records", "invert4tvg.policy.base"]]
    assert LAYERS[_layer("invert4tvg.rollout.worker")][0] == "rollout hosts"
    assert LAYERS[_layer("invert4tvg.cli")][0] == "commands"
