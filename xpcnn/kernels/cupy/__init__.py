"""CuPy (NVIDIA GPU) kernels: none yet; every op runs its portable reference on CuPy arrays.

A kernel goes in a module of this package, registered for its op like the NumPy ones
(``@register("conv2d_forward", "cupy", when=...)``, see :mod:`xpcnn.kernels.registry`), imported here,
and tested against the reference op it replaces. Planned (issue 15): an im2col gather kernel, fused
bias + activation, a fused optimizer step.
"""
