"""Imports run one way: attention <- layers <- models <- train <- recipes <- explain <- cli.

Every ``import``/``from ... import`` of attnlab, at module level or inside a function, is read
from the source with ``ast``; a package may import only packages of a lower layer."""

import ast
import pathlib

import attnlab

ROOT = pathlib.Path(attnlab.__file__).parent
LAYER = {
    "io": 0, "errors": 0, "config": 0.5, "plotting": 0.5, "registry": 0.25,
    "attention": 1, "data": 1,
    "layers": 2,
    "models": 3,
    "train": 4, "finetune": 4,
    "recipes": 5,
    "explain": 6,
    "bench": 7,
    "cli": 8,
    "__main__": 9, "__init__": 9,
}


def _imports(path: pathlib.Path):
    """(line, imported top-level attnlab package) of every attnlab import in ``path``."""
    rel = path.relative_to(ROOT).parts
    here = list(rel[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # "from . import x" at the package root
                    yield from ((node.lineno, a.name) for a in node.names)
                    continue
                yield node.lineno, target[0]
            elif node.module and node.module.split(".")[0] == "attnlab" and "." in node.module:
                yield node.lineno, node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("attnlab."):
                    yield node.lineno, a.name.split(".")[1]


def test_every_package_has_a_layer():
    tops = {p.name[:-3] if p.suffix == ".py" else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert tops <= set(LAYER), f"packages without a layer in this test: {sorted(tops - set(LAYER))}"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        pkg = rel[0] if len(rel) > 1 else rel[0][:-3]
        for line, target in _imports(path):
            if target != pkg and target in LAYER and LAYER[target] >= LAYER[pkg]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({pkg}) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_attention_core_stays_light():
    """``import attnlab.attention`` pulls in neither the config machinery (pydantic, YAML) nor peft
    or transformers; ``import attnlab.finetune`` pulls in neither peft nor transformers."""
    import subprocess
    import sys

    code = ("import sys, attnlab.attention; heavy = {'pydantic', 'yaml', 'peft', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy; import attnlab.finetune, attnlab.recipes; "
            "assert not {'peft', 'transformers'} & set(sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
