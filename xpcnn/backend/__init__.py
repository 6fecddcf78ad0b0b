"""Backend helpers: the only package in xpcnn that names numpy, cupy, torch or jax."""

# threads first: it sets OpenBLAS's idle spin before anything loads NumPy.
from xpcnn.backend import threads  # isort: skip
from xpcnn.backend import compiled, direct, elementwise, random
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
from xpcnn.backend.threads import parallel_map
from xpcnn.backend.windows import (
                                      add_at,
                                      channels_first,
                                      channels_last,
                                      col2im,
                                      col2im_matmul,
                                      crop_hw,
                                      first_max_grad,
                                      im2col,
                                      im2col_transposed,
                                      pad_hw,
                                      spread_mean_grad,
                                      tanh_window_mean,
                                      window_index,
                                      window_max,
                                      window_mean,
)

__all__ = [
                                      "BACKENDS",
                                      "Placement",
                                      "add_at",
                                      "backend_name",
                                      "channels_first",
                                      "channels_last",
                                      "col2im",
                                      "col2im_matmul",
                                      "compiled",
                                      "crop_hw",
                                      "device_of",
                                      "direct",
                                      "elementwise",
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
                                      "parallel_map",
                                      "placement_of",
                                      "random",
                                      "resolve",
                                      "spread_mean_grad",
                                      "tanh_window_mean",
                                      "threads",
                                      "to_numpy",
                                      "window_index",
                                      "window_max",
                                      "window_mean",
]
