"""Random crops with zero padding by slicing: one copy of each image's window into a zeroed output.

The reference (:func:`xpcnn.ops.crop.crop_windows`) gathers through an index array as large as the output
(8 bytes a pixel); on NumPy that index, the gather and the padding's ``where`` cost 1 to 10 ms for 128
3x32x32 images, as the allocator hands out fresh pages or not. Here the output is allocated zeroed once
and each image's part inside the unpadded picture is one slice copy: about 0.5 ms.
"""

from __future__ import annotations

from typing import Any

import numpy

from xpcnn.kernels.registry import register


def _zero_padding(x: Any, top: Any, left: Any, size: tuple[int, int], padding: int, mode: str) -> bool:
    return (mode == "constant" and type(x) is numpy.ndarray and x.ndim == 4 and x.dtype.kind == "f"
            and type(top) is numpy.ndarray and type(left) is numpy.ndarray)


@register("crop_windows", "numpy", when=_zero_padding)
def crop_windows(x: Any, top: Any, left: Any, size: tuple[int, int], padding: int, mode: str) -> Any:
    n, c, height, width = x.shape
    h, w = size
    out = numpy.zeros((n, c, h, w), dtype=x.dtype)
    for i, (t, s) in enumerate(zip(top.tolist(), left.tolist())):
        r0, c0 = t - padding, s - padding  # the window's corner in the unpadded image
        a, b = max(0, -r0), min(h, height - r0)  # output rows (columns) that lie inside the image
        d, e = max(0, -c0), min(w, width - c0)
        if a < b and d < e:
            out[i, :, a:b, d:e] = x[i, :, r0 + a:r0 + b, c0 + d:c0 + e]
    return out
