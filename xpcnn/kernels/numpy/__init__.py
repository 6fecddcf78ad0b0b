"""NumPy (CPU) kernels: numba-compiled loops, worker threads, the convolution lowerings, ``out=`` passes.

Importing this package registers them (the registry does so the first time an op meets a NumPy
array); numba and threadpoolctl load only when a kernel first needs them.

- :mod:`~xpcnn.kernels.numpy.conv`: the convolution (lowerings, direct loops, threads)
- :mod:`~xpcnn.kernels.numpy.linear`: the dense layer's products on the worker threads
- :mod:`~xpcnn.kernels.numpy.pooling`: pooling's window passes
- :mod:`~xpcnn.kernels.numpy.elementwise`: ReLU, tanh's gradient, dropout in single passes
- :mod:`~xpcnn.kernels.numpy.batchnorm`: BatchNorm2D's forward and backward in two compiled passes each
- :mod:`~xpcnn.kernels.numpy.optimizers`: the Adam step in one compiled pass
- :mod:`~xpcnn.kernels.numpy.crop`: random crops with zero padding by slicing
"""

from xpcnn.kernels.numpy import batchnorm, conv, crop, elementwise, linear, optimizers, pooling  # noqa: F401  (registration)
from xpcnn.kernels.numpy.compiled import enable_wide_vectors
from xpcnn.kernels.numpy.threads import single_threaded_blas

__all__ = ["enable_wide_vectors", "single_threaded_blas"]
