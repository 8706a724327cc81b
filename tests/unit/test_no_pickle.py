"""Nothing in libs/ or services/ may unpickle: pickle executes code from the bytes it reads.

Models, checkpoints and messages are JSON and .npy/.npz (loaded with allow_pickle=False).
The scan parses the code (docstrings that say "never pickle" are fine) and also greps
for ``allow_pickle=True`` in any spelling.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = (REPO / "libs", REPO / "services")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal", "jsonpickle"}  # fmt: skip
UNSAFE_CALLS = {"read_pickle", "to_pickle", "Unpickler", "loads_pickle"}
ALLOW_PICKLE_TRUE = re.compile(r"allow_pickle\s*=\s*(True|1|not\s+False)")


def sources() -> list[Path]:
    files = [p for root in ROOTS for p in root.rglob("*.py") if ".venv" not in p.parts]
    assert len(files) > 50, "the scan found too few files: wrong root?"
    return files


def unsafe_uses(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in UNSAFE_CALLS:
                found.append(f"{where} {name}(...)")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{where} allow_pickle={ast.unparse(kw.value)}")
    return found


def test_no_module_in_libs_or_services_unpickles():
    problems = [use for path in sources() for use in unsafe_uses(path)]
    assert problems == []


def test_allow_pickle_true_appears_nowhere_in_libs_or_services():
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ALLOW_PICKLE_TRUE.search(line)
    ]
    assert hits == []


def test_the_scan_catches_what_it_is_meant_to(tmp_path: Path):
    sample = tmp_path / "libs" / "bad.py"
    sample.parent.mkdir()
    sample.write_text(
        "import pickle\nfrom joblib import load\nimport numpy as np\n"
        "np.load('x.npy', allow_pickle=True)\nflag = True\nnp.load('y', allow_pickle=flag)\n"
        "import pandas as pd\npd.read_pickle('z')\n"
    )
    uses = unsafe_uses(sample, root=tmp_path)
    assert len(uses) == 5, uses
