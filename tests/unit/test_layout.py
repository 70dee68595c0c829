"""The layout's promise: ``shared`` is the domain, importable without a broker, a web server or child processes.

Every ``shared`` module is imported in a fresh interpreter. None may pull in ``aiohttp.web`` or ``dramatiq``
(directly or through another module), none may import ``subprocess`` or anything from ``workers`` itself
(``subprocess`` is loaded by ``asyncio``, which the MongoDB driver uses, so that one is checked on each
module's own imports).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import shared

SHARED = Path(shared.__file__).parent
ROOT = SHARED.parent
FILES = sorted(SHARED.rglob("*.py"))
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in FILES)
#: The subpackages of ``shared`` by role (DESIGN.md, "Code layout").
ROLES = ("domain", "stores", "pipeline", "provider", "cache")


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
    for path in FILES:
        imports = _own_imports(path)
        bad = {m for m in imports if m.split(".")[0] in ("subprocess", "dramatiq", "workers") or m == "aiohttp.web"}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_list_of_modules_is_the_package() -> None:
    assert "shared.pipeline" in MODULES and "shared.domain.calling_window" in MODULES and len(MODULES) > 40
    assert {p.name for p in SHARED.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ROLES)


def test_the_import_contracts_hold() -> None:
    """The layers of DESIGN.md ("Code layout"), as import-linter contracts in pyproject.toml."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_the_code_map_names_every_module_under_its_package() -> None:
    """DESIGN.md's code map has one entry per subpackage naming each of its modules, and one for the top level."""
    design = (ROOT / "DESIGN.md").read_text()
    section = design.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    entries = {m.group(1): m.group(2) for m in re.finditer(r"^- `shared/(\w+)/` — (.*?)(?=^- |^\S|\Z)", section,
                                                           re.M | re.S)}
    top = re.search(r"^- top level — (.*?)(?=^- |^\S|\Z)", section, re.M | re.S)
    assert set(entries) == set(ROLES) and top is not None
    for path in FILES:
        rel = path.relative_to(SHARED)
        if len(rel.parts) == 1:
            if rel.name != "__init__.py":
                assert f"`{rel.name}`" in top.group(1), f"DESIGN.md's code map does not name shared/{rel}"
        elif rel.name != "__init__.py" or rel.parts[0] == "pipeline":
            assert f"`{rel.name}`" in entries[rel.parts[0]], f"DESIGN.md's code map does not name shared/{rel}"
