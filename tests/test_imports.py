"""Only xpcnn.backend may import numpy, cupy, torch, jax or numba; everything else stays generic."""

from __future__ import annotations

import ast
from pathlib import Path

import xpcnn

FORBIDDEN = {"numpy", "cupy", "cupyx", "torch", "jax", "jaxlib", "numba"}
PACKAGE = Path(xpcnn.__file__).parent


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
            if node.module.split(".")[0] == "array_api_compat":  # e.g. `from array_api_compat import numpy`
                roots |= {alias.name for alias in node.names}
    return roots


def test_only_backend_helpers_import_array_libraries() -> None:
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "backend":
            continue
        bad = imported_roots(path) & FORBIDDEN
        if bad:
            offenders[str(relative)] = sorted(bad)
    assert offenders == {}, f"array libraries imported outside xpcnn/backend: {offenders}"


def test_checker_sees_imports(tmp_path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy as np\nfrom torch import nn\nfrom array_api_compat import numpy\n")
    assert imported_roots(sample) >= {"numpy", "torch"}
