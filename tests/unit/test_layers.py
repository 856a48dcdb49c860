"""The layers of ARCHITECTURE.md section 3: medpo_ray/ is a pure library (never Ray, never the Ray layer or
the driver, not even inside a function), and actors/ never imports the driver."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at any depth of its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            out.add(str(node.args[0].value).split(".")[0])
    return out


def offenders(package: str, forbidden: set[str]) -> dict[str, set[str]]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path) & forbidden
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_the_library_imports_no_ray_and_no_ray_layer():
    assert offenders("medpo_ray", {"ray", "actors", "driver"}) == {}


def test_actors_never_import_the_driver():
    assert offenders("actors", {"driver"}) == {}


def test_the_check_sees_every_kind_of_import(tmp_path):
    # The detector itself: a module-level, a nested and a dynamic import are all found.
    f = tmp_path / "m.py"
    f.write_text("import os\ndef f():\n    from ray.util import queue\n    import actors.pool\n"
                 "importlib.import_module('driver.loop')\n")
    assert imported_modules(f) == {"os", "ray", "actors", "driver"}
