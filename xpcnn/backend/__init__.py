"""Backend helpers: the only package in xpcnn that names numpy, cupy, torch or jax."""

from xpcnn.backend import compiled, random
from xpcnn.backend.devices import Placement, from_numpy, move, placement_of, resolve, to_numpy
from xpcnn.backend.namespaces import (
                                      BACKENDS,
                                      backend_name,
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
                                      crop_hw,
                                      first_max_grad,
                                      im2col,
                                      im2col_transposed,
                                      pad_hw,
                                      window_index,
)

__all__ = [
                                      "BACKENDS",
                                      "Placement",
                                      "add_at",
                                      "backend_name",
                                      "channels_first",
                                      "channels_last",
                                      "col2im",
                                      "compiled",
                                      "crop_hw",
                                      "device_of",
                                      "first_max_grad",
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
