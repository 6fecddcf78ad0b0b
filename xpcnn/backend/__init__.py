"""Backend helpers: namespaces, devices, portable window helpers, random numbers, host files, timing.

With :mod:`xpcnn.kernels`, the only packages of xpcnn that name numpy, cupy, torch or jax.
"""

from xpcnn.backend import random
from xpcnn.backend.devices import Placement, from_numpy, move, placement_of, resolve, to_numpy
from xpcnn.backend.namespaces import (
    BACKENDS,
    accumulation_dtype,
    backend_name,
    backend_of,
    check_dtype,
    device_of,
    is_available,
    is_jax,
    namespace_for,
    namespace_of,
)
from xpcnn.backend.windows import (
    add_at,
    channels_first,
    channels_last,
    col2im,
    col2im_matmul,
    crop_hw,
    im2col,
    im2col_transposed,
    pad_hw,
    window_index,
)

__all__ = [
    "BACKENDS",
    "Placement",
    "accumulation_dtype",
    "add_at",
    "backend_name",
    "backend_of",
    "channels_first",
    "check_dtype",
    "channels_last",
    "col2im",
    "col2im_matmul",
    "crop_hw",
    "device_of",
    "from_numpy",
    "im2col",
    "im2col_transposed",
    "is_available",
    "is_jax",
    "move",
    "namespace_for",
    "namespace_of",
    "pad_hw",
    "placement_of",
    "random",
    "resolve",
    "to_numpy",
    "window_index",
]
