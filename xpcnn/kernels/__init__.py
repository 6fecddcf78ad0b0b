"""Accelerated kernels, per backend, behind one registry (:mod:`xpcnn.kernels.registry`).

The ops in :mod:`xpcnn.ops` are the portable reference; a kernel here replaces one of them for one
backend where its condition holds, with the same results (tests check each against its reference):

- ``numpy/``: numba-compiled loops, worker threads, the convolution lowerings and single-pass
  ``out=`` element-wise passes (CPU).
- ``cupy/``: where the GPU kernels go.

Only this package imports numba or threadpoolctl.
"""

from xpcnn.kernels.registry import Kernel, compile_seconds, dispatch, find, kernels, register, step_scope

__all__ = ["Kernel", "compile_seconds", "dispatch", "find", "kernels", "register", "step_scope"]
