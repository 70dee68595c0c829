"""The layout's promise: ``shared`` is the domain, importable without a broker, a web server or child processes.

Every ``shared`` module is imported in a fresh interpreter. None may pull in ``aiohttp.web`` or ``dramatiq``
(directly or through another module), none may import ``subprocess`` or anything from ``workers`` itself
(``subprocess`` is loaded by ``asyncio``, which the MongoDB driver uses, so that one is checked on each
module's own imports).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import shared

SHARED = Path(shared.__file__).parent
MODULES = sorted(f"shared.{p.stem}" for p in SHARED.glob("*.py") if p.stem != "__init__")


def _own_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_shared_modules_load_no_web_server_and_no_broker() -> None:
    code = ("import importlib, json, sys\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dramatiq', 'workers')"
            " or m == 'aiohttp.web' or m.startswith('aiohttp.web_'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_no_shared_module_imports_subprocess_or_workers() -> None:
    for path in sorted(SHARED.glob("*.py")):
        imports = _own_imports(path)
        bad = {m for m in imports if m.split(".")[0] in ("subprocess", "dramatiq", "workers") or m == "aiohttp.web"}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_list_of_modules_is_the_package() -> None:
    assert "shared.pipeline" in MODULES and "shared.calling_window" in MODULES and len(MODULES) > 30
