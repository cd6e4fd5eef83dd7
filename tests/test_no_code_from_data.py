"""No path in attnlab runs code that comes with data: nothing unpickles a file, YAML is read with
safe loaders only, no ``eval``/``exec``, no ``trust_remote_code``.

Every .py file of the package is parsed (ast, so docstrings and comments that mention
``torch.load`` are not calls, and ``model.eval()`` is not the builtin) and these are refused:

* ``pickle.load``/``loads``/``Unpickler`` and their kin (``dill``, ``cloudpickle``, ``joblib.load``,
  ``pandas.read_pickle``, ``shelve.open``, ``marshal.load(s)``), called or merely referenced;
* ``torch.load`` without ``weights_only=True``, spelled out as the constant;
* ``numpy.load`` with ``allow_pickle`` anything but ``False``;
* ``yaml.load``/``load_all`` unless the loader is ``yaml.SafeLoader``/``CSafeLoader``/``BaseLoader``
  or a class of the same module derived from one; ``yaml.unsafe_load``/``full_load``; any mention of
  ``yaml.Loader``/``FullLoader``/``UnsafeLoader`` (their C twins too);
* calls of the builtins ``eval`` and ``exec``;
* ``trust_remote_code`` set to anything but ``False`` (a keyword, or a key of a dict literal).

Names are resolved through the file's imports (``import torch as t``, ``from pickle import loads``).
What a static reading cannot see (``getattr(pickle, name)``) is out of its reach.
"""

import ast
from pathlib import Path

import pytest

import attnlab

PACKAGE = Path(attnlab.__file__).parent

UNPICKLERS = {
    f"{m}.{f}" for m in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle") for f in ("load", "loads", "Unpickler")
} | {"joblib.load", "pandas.read_pickle", "shelve.open", "marshal.load", "marshal.loads", "torch.serialization._load"}
PICKLE_MODULES = {"dill", "cloudpickle", "jsonpickle"}  # importing one is already a sign
UNSAFE_YAML = {f"yaml.{n}" for n in (
    "unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "Loader", "FullLoader", "UnsafeLoader", "CLoader",
    "CFullLoader", "CUnsafeLoader", "UnsafeConstructor", "FullConstructor", "constructor.UnsafeConstructor",
    "constructor.FullConstructor")}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
CODE_RUNNERS = {"eval", "exec", "builtins.eval", "builtins.exec"}
# safe only in a call that passes the guard (visit_Call); any other use, e.g. `read = torch.load`, is refused
GUARDED = {"torch.load": "without weights_only=True", "torch.serialization.load": "without weights_only=True",
           "yaml.load": "without a safe loader", "yaml.load_all": "without a safe loader"}


def _is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Finder(ast.NodeVisitor):
    """Collects ``(line, what)`` for each unsafe use in one module."""

    def __init__(self, tree: ast.Module):
        self.found: list[tuple[int, str]] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted name it was imported as
        self.classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        self.allowed: set[int] = set()  # ids of torch.load / yaml.load nodes in calls that pass the rule
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PICKLE_MODULES:
                        self.found.append((node.lineno, f"import {a.name}"))
                    self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module.split(".")[0] in PICKLE_MODULES:
                    self.found.append((node.lineno, f"from {node.module} import ..."))
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        self.visit(tree)

    def name(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for (``t.load`` -> ``torch.load``), else None."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.name(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def safe_loader(self, node: ast.AST | None, seen=()) -> bool:
        name = self.name(node) if node is not None else None
        if name in SAFE_YAML_LOADERS:
            return True
        cls = self.classes.get(name) if isinstance(node, ast.Name) else None
        if cls is None or name in seen:
            return False
        return any(self.safe_loader(b, (*seen, name)) for b in cls.bases)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.name(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name in ("torch.load", "torch.serialization.load") and _is_const(kw.get("weights_only"), True):
            self.allowed.add(id(node.func))
        elif name in ("yaml.load", "yaml.load_all"):
            if self.safe_loader(kw.get("Loader", node.args[1] if len(node.args) > 1 else None)):
                self.allowed.add(id(node.func))
        elif name in ("numpy.load",) and "allow_pickle" in kw and not _is_const(kw["allow_pickle"], False):
            self.found.append((node.lineno, "numpy.load(allow_pickle=...)"))
        elif name in CODE_RUNNERS and isinstance(node.func, (ast.Name, ast.Attribute)):
            if not (isinstance(node.func, ast.Name) and node.func.id in self.aliases):  # a name imported as eval
                self.found.append((node.lineno, f"{name}()"))
        if "trust_remote_code" in kw and not _is_const(kw["trust_remote_code"], False):
            self.found.append((node.lineno, "trust_remote_code=..."))
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and not _is_const(v, False):
                self.found.append((node.lineno, "{'trust_remote_code': ...}"))
        self.generic_visit(node)

    def _reference(self, node: ast.AST) -> None:
        name = self.name(node)
        if name in UNPICKLERS or name in UNSAFE_YAML:
            self.found.append((node.lineno, name))
        elif name in GUARDED and id(node) not in self.allowed:
            self.found.append((node.lineno, f"{name} {GUARDED[name]}"))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._reference(node)
        self.generic_visit(node)  # its prefixes (`pickle` of `pickle.loads`) name nothing unsafe

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.aliases:  # `from pickle import loads` then `loads(...)`
            self._reference(node)


def findings(source: str, filename: str = "<snippet>") -> list[str]:
    """Each unsafe use in ``source``, as ``"file:line: what"``."""
    finder = _Finder(ast.parse(source, filename))
    return [f"{filename}:{line}: {what}" for line, what in sorted(set(finder.found))]


def test_no_file_of_the_package_runs_code_from_data():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50 and PACKAGE / "config.py" in files  # the walk really covers the package
    bad = [f for path in files
           for f in findings(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not bad, "code from data:\n" + "\n".join(bad)


# --- the detector itself --------------------------------------------------------------------------

FLAGGED = [
    "import torch\ntorch.load(f)",
    "import torch\ntorch.load(f, weights_only=False)",
    "import torch\ntorch.load(f, weights_only=trusted)",
    "import torch as t\nt.load(f, map_location='cpu')",
    "from torch import load\nload(f)",
    "import torch\nread = torch.load\nread(f, weights_only=True)",
    "import torch\nprint(len(torch.load(f)))",
    "import yaml\nparse = yaml.load",
    "import yaml\nyaml.load(s)",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.load(s, yaml.FullLoader)",
    "import yaml\nyaml.load_all(s, Loader=yaml.UnsafeLoader)",
    "import yaml\nyaml.unsafe_load(s)",
    "import yaml\nyaml.full_load(s)",
    "from yaml import load\nload(s)",
    "import yaml\nclass L(yaml.Loader):\n    pass\nyaml.load(s, Loader=L)",
    "import yaml\nyaml.add_constructor('!x', f, Loader=yaml.Loader)",
    "import pickle\npickle.load(f)",
    "import pickle\npickle.loads(b)",
    "import pickle as p\np.Unpickler(f).load()",
    "from pickle import loads\nloads(b)",
    "import pickle\nparse = pickle.loads",
    "import cloudpickle",
    "import dill\ndill.loads(b)",
    "import joblib\njoblib.load(path)",
    "import pandas as pd\npd.read_pickle(path)",
    "import numpy as np\nnp.load(f, allow_pickle=True)",
    "eval(s)",
    "print(str(eval(s)).strip())",
    "exec(code, {})",
    "import builtins\nbuiltins.exec(code)",
    "AutoModel.from_pretrained(p, trust_remote_code=True)",
    "AutoModel.from_pretrained(p, trust_remote_code=cfg.trust)",
    "AutoModel.from_pretrained(p, **{'trust_remote_code': True})",
]
CLEAN = [
    "model.eval()",
    "model.train(False).eval()",
    "cursor.exec(query)",
    "def evaluate():\n    pass\nevaluate()",
    "import torch\ntorch.load(f, weights_only=True)",
    "import torch\ntorch.load(str(p), map_location='cpu', weights_only=True)",
    "import yaml\nyaml.safe_load(s)",
    "import yaml\nyaml.safe_dump(d)",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(s, yaml.CSafeLoader)",
    "import yaml\nclass L(yaml.SafeLoader):\n    pass\nclass M(L):\n    pass\nyaml.load(s, Loader=M)",
    "import numpy as np\nnp.load(f)",
    "import numpy as np\nnp.load(f, allow_pickle=False)",
    "import pickletools\npickletools.genops(f)",
    "AutoModel.from_pretrained(p, trust_remote_code=False)",
    "x = 'torch.load(f); yaml.load(s); eval(s); pickle.loads(b)'",
    "# torch.load(f) eval(s)\n'''yaml.load(s) in a docstring'''",
    "from .readers import load\nload(f)",
]


@pytest.mark.parametrize("snippet", FLAGGED)
def test_the_detector_flags(snippet):
    assert findings(snippet), snippet


@pytest.mark.parametrize("snippet", CLEAN)
def test_the_detector_passes(snippet):
    assert findings(snippet) == [], snippet
