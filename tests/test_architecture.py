"""The dependency direction of docs/architecture.md, checked on the source with ``ast``:

- stages -> db -> common: ``common`` imports no package of ours, ``db`` only ``common``;
- ``demo`` sits on top: it may import every stage, and nothing imports it;
- a stage imports another stage only through that stage's package API (``STAGE_API``), never its internals;
- RL fine-tuning sees the reward model only as ``reward_fn(texts)`` (``reward_training.load_reward_fn``);
- the packages' import graph has no cycle;
- only ``labeling_app`` imports Streamlit.

``python -m tests.test_architecture`` prints the import graph that docs/architecture.md shows.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ["base_policy", "labeling_app", "reward_training", "rl_finetune"]  # loop order: 1, 2, 3, 4
PACKAGES = ["common", "db", *STAGES, "demo"]

# What one stage may import of another: the package itself and the modules its docstring names as API.
STAGE_API = {
    "base_policy": {
        "base_policy",
        "base_policy.fluency",
        "base_policy.generate",
        "base_policy.loading",
        "base_policy.pretrain",
        "base_policy.registry",
        "base_policy.sampling",
    },
    "labeling_app": {"labeling_app", "labeling_app.config", "labeling_app.simulate"},
    "reward_training": {
        "reward_training",
        "reward_training.config",
        "reward_training.evaluate",
        "reward_training.reliability",
    },
    "rl_finetune": {"rl_finetune", "rl_finetune.ppo", "rl_finetune.ppo.config", "rl_finetune.ppo.core"},
}


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(package: str) -> list[tuple[str, str, set[str]]]:
    """(file, imported module, imported names) for every absolute import in ``package``.

    ``from pkg import sub`` counts as importing the module ``pkg.sub`` when ``sub`` is a module."""
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(where, a.name, set()) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                plain = {a.name for a in node.names if not _is_module(f"{node.module}.{a.name}")}
                subs = [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
                if plain or not subs:
                    out.append((where, node.module, plain))
                out += [(where, sub, set()) for sub in subs]
    return out


def import_graph() -> dict[str, set[str]]:
    """Package -> the other packages of ours it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        graph[package]
        for _, module, _ in imports(package):
            top = module.split(".")[0]
            if top in PACKAGES and top != package:
                graph[package].add(top)
    return graph


def stage_to_stage() -> dict[tuple[str, str], set[str]]:
    """(stage, other stage) -> the modules of the other stage it imports (demo included as an importer)."""
    used: dict[tuple[str, str], set[str]] = defaultdict(set)
    for package in [*STAGES, "demo"]:
        for _, module, _ in imports(package):
            top = module.split(".")[0]
            if top in STAGES and top != package:
                used[(package, top)].add(module)
    return used


def format_graph(graph: dict[str, set[str]]) -> str:
    lines = [f"{p:<16} -> {', '.join(sorted(graph[p])) or '(nothing of ours)'}" for p in PACKAGES]
    lines += ["", "between stages (and from demo), the modules used:"]
    lines += [f"  {a} -> {', '.join(sorted(mods))}" for (a, _), mods in sorted(stage_to_stage().items())]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the tests


def test_common_and_db_are_the_bottom_layers():
    graph = import_graph()
    assert graph["common"] == set(), f"common imports {sorted(graph['common'])}; it must import none of our packages"
    assert graph["db"] <= {"common"}, f"db imports {sorted(graph['db'] - {'common'})}; it may import only common"


def test_nothing_imports_the_demo():
    graph = import_graph()
    assert not [p for p in PACKAGES if "demo" in graph[p] and p != "demo"]


def test_stages_import_each_other_only_through_the_package_api():
    bad = []
    for stage in STAGES:
        for where, module, _ in imports(stage):
            top = module.split(".")[0]
            if top in STAGE_API and top != stage and module not in STAGE_API[top]:
                bad.append(f"{where}: {module}")
    assert not bad, f"imports of another stage's internals (allowed: {STAGE_API}): {bad}"


def test_rl_sees_the_reward_only_as_reward_fn():
    used = {
        (module, name)
        for _, module, names in imports("rl_finetune")
        if module.split(".")[0] == "reward_training"
        for name in names or {"<module>"}
    }
    assert used <= {("reward_training", "load_reward_fn")}, used


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, (*path, node))
        done.add(node)

    for package in PACKAGES:
        visit(package, ())


def test_only_the_labelling_app_imports_streamlit():
    users = {p for p in PACKAGES for _, module, _ in imports(p) if module.split(".")[0] == "streamlit"}
    assert users <= {"labeling_app"}, f"{sorted(users - {'labeling_app'})} import streamlit"


if __name__ == "__main__":
    print(format_graph(import_graph()))
