"""Compiled average pooling over windows that tile a channel-last NumPy array (numba).

With the window and channel count as literals in the source (:mod:`xpcnn.kernels.numpy.generated`),
LLVM unrolls the window sum and vectorizes it across channels, which the same loops over run-time
sizes do not (measured: bench/results/optimization-log.md, step 47).
Each window of an output row is summed in row-major order, then divided by its size, as
NumPy's strided-slice path does.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from xpcnn.kernels.numpy.generated import compile_source


def mean_pool_tiled(x: Any, kernel: tuple[int, int], out: Any) -> Any:
    """Mean over windows that tile channel-last ``x`` ``(N, Hp, Wp, C)`` exactly, written into ``out``
    ``(N, Ho, Wo, C)`` (float NumPy arrays of one dtype, C-contiguous); returns ``out``."""
    n, hp, wp, c = x.shape
    _kernel("forward", *kernel, c, x.dtype.name)(x.reshape(-1), out.reshape(-1), out.reshape(-1), n, hp, wp)
    return out


def mean_pool_tiled_grad(g: Any, kernel: tuple[int, int], out: Any) -> Any:
    """Gradient of :func:`mean_pool_tiled`: ``g`` ``(N, Ho, Wo, C)`` divided by the window size and
    spread over each window of ``out`` ``(N, Hp, Wp, C)``; returns ``out``."""
    n, hp, wp, c = out.shape
    _kernel("backward", *kernel, c, g.dtype.name)(g.reshape(-1), out.reshape(-1), out.reshape(-1), n, hp, wp)
    return out


def mean_pool_tiled_tanh_grad(g: Any, y: Any, kernel: tuple[int, int], out: Any) -> Any:
    """Gradient of ``mean_pool_tiled(tanh(x))`` with respect to ``x``, given ``y = tanh(x)``
    ``(N, Hp, Wp, C)``: :func:`mean_pool_tiled_grad` of ``g`` times ``1 - y*y``, into ``out``; returns ``out``."""
    n, hp, wp, c = out.shape
    _kernel("tanh_backward", *kernel, c, g.dtype.name)(g.reshape(-1), y.reshape(-1), out.reshape(-1), n, hp, wp)
    return out


@cache
def _kernel(kind: str, kh: int, kw: int, c: int, dtype: str) -> Any:
    return compile_source(_source(kind, kh, kw, c), f"void({dtype}[::1], {dtype}[::1], {dtype}[::1], int64, int64, int64)")


def _source(kind: str, kh: int, kw: int, c: int) -> str:
    """Source of one kernel ``kernel(a, b, out, n, hp, wp)`` over flat arrays: the forward pass pools
    ``a`` into ``out`` (``b`` unused); the backward passes spread ``a`` (the output gradient) over
    ``out``, ``"tanh_backward"`` times ``1 - b*b``."""
    offsets = [f"{i} * rowlen + {j * c}" for i in range(kh) for j in range(kw)]
    lines = ["def kernel(a, b, out, n, hp, wp):",
             f"    ho, wo, rowlen = hp // {kh}, wp // {kw}, wp * {c}",
             f"    count, one = out.dtype.type({kh * kw}), out.dtype.type(1)",
             "    for image in range(n):",
             "        for oy in range(ho):",
             f"            big = (image * hp + oy * {kh}) * rowlen",
             f"            small = (image * ho + oy) * wo * {c}",
             "            for ox in range(wo):",
             f"                at = big + ox * {kw * c}",
             f"                for ch in range({c}):"]
    inner = " " * 20
    if kind == "forward":
        total = " + ".join(f"a[U(at + {offset} + ch)]" for offset in offsets)
        lines.append(inner + f"out[U(small + ox * {c} + ch)] = ({total}) / count")
    else:
        lines.append(inner + f"v = a[U(small + ox * {c} + ch)] / count")
        for offset in offsets:
            here = f"U(at + {offset} + ch)"
            factor = f" * (one - b[{here}] * b[{here}])" if kind == "tanh_backward" else ""
            lines.append(inner + f"out[{here}] = v{factor}")
    return "\n".join(lines)
