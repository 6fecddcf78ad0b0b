"""The layering: only xpcnn.backend, xpcnn.kernels and xpcnn.distributed (host buffers for MPI, CuPy's NCCL)
import array libraries, only xpcnn.kernels imports numba or threadpoolctl, only xpcnn.distributed imports mpi4py
(and only when distributed training is asked for); everything else stays generic."""

from __future__ import annotations

import ast
from pathlib import Path

import xpcnn

ARRAY_LIBRARIES = {"numpy", "cupy", "cupyx", "torch", "jax", "jaxlib"}
ACCELERATORS = {"numba", "llvmlite", "threadpoolctl"}
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


def offenders(forbidden: set[str], allowed_under: set[str]) -> dict[str, list[str]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in allowed_under:
            continue
        if bad := imported_roots(path) & forbidden:
            found[str(relative)] = sorted(bad)
    return found


def test_only_backend_and_kernels_import_array_libraries() -> None:
    assert offenders(ARRAY_LIBRARIES, {"backend", "kernels", "distributed"}) == {}


def test_only_distributed_imports_mpi4py_and_not_on_import() -> None:
    assert offenders({"mpi4py"}, {"distributed"}) == {}
    for path in (PACKAGE / "distributed").glob("*.py"):  # inside functions only: MPI starts when asked for
        body = ast.parse(path.read_text()).body
        top_level = [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not any("mpi4py" in ast.dump(node) or "cupy" in ast.dump(node) for node in top_level), path


def test_only_kernels_import_numba_or_threadpoolctl() -> None:
    assert offenders(ACCELERATORS, {"kernels"}) == {}


def test_checker_sees_imports(tmp_path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy as np\nfrom torch import nn\nfrom array_api_compat import numpy\nimport numba\n"
                      "from threadpoolctl import ThreadpoolController\n")
    assert imported_roots(sample) >= {"numpy", "torch", "numba", "threadpoolctl"}
