"""No pipeline step calls another step's private method: what several steps do to a call attempt is the public
methods of :class:`shared.pipeline.call_ops.CallOps`, and what every step has is :class:`shared.pipeline.step.Step`."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "shared" / "pipeline"
STEPS = ("dispatch", "dial", "reconcile", "poll", "finalize", "maintenance", "call_ops")


def _tree(module: str) -> ast.Module:
    return ast.parse((PIPELINE / f"{module}.py").read_text(encoding="utf-8"))


def _methods(tree: ast.Module) -> set[str]:
    return {item.name for node in tree.body if isinstance(node, ast.ClassDef) for item in node.body
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}


def _private_calls(tree: ast.Module, owner: str) -> list[tuple[int, str]]:
    """``owner.<_name>(...)`` calls (``owner``: ``self`` or ``self.calls``), with their lines."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("_") and not node.func.attr.startswith("__")):
            continue
        if ast.unparse(node.func.value) == owner:
            found.append((node.lineno, node.func.attr))
    return found


def test_a_step_calls_only_its_own_private_methods_and_the_base_steps():
    shared_helpers = _methods(_tree("step"))
    wrong = []
    for module in STEPS:
        tree = _tree(module)
        own = _methods(tree)
        wrong += [f"shared/pipeline/{module}.py:{line} self.{name}" for line, name in _private_calls(tree, "self")
                  if name not in own and name not in shared_helpers]
        wrong += [f"shared/pipeline/{module}.py:{line} self.calls.{name}"
                  for line, name in _private_calls(tree, "self.calls")]
    assert wrong == [], "calls of another step's private method:\n" + "\n".join(wrong)


def test_the_check_sees_a_cross_step_call(tmp_path):
    tree = ast.parse("class Reconcile:\n    def reconcile(self):\n        return self._create() or self.calls._x()\n")
    assert _private_calls(tree, "self") == [(3, "_create")]
    assert _private_calls(tree, "self.calls") == [(3, "_x")]
    assert "_create" not in _methods(tree)
