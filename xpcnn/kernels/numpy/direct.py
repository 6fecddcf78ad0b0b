"""Direct convolution for up to a few dozen channels: compiled (numba) loops over channel-last NumPy arrays.

A GEMM lowering of a convolution with a handful of channels multiplies thin matrices (or
wastes arithmetic on a banded weight), and with a few dozen it first copies every window into a
patch matrix. Here each output pixel block is accumulated in registers straight from the input:
``R`` neighbouring output pixels times a group of ``G`` output channels (all ``O`` of them, or
groups of up to two vectors: ``R * G`` accumulators), and every input value read is broadcast
against a vector of ``G`` weights. The register block only exists if ``R`` and ``G`` are
compile-time constants, so the loops are generated as Python source per ``(O, G, R)`` (the other
sizes stay run-time arguments) and compiled by :func:`xpcnn.kernels.numpy.generated.compile_source`
with LLVM's SLP vectorizer on, which turns the ``G`` scalar accumulators of a pixel into
vector registers: 512-bit ones where the CPU has AVX-512 (see
:func:`xpcnn.kernels.numpy.compiled.vector_lanes`), which double both the arithmetic per instruction
and the register file that holds the block.

Two kernels cover training: the forward pass (also the input gradient at stride one: a
convolution of the padded output gradient with the flipped, transposed kernel) and the weight
gradient, which keeps the gradients of a group of kernel taps in registers along a row of
output pixels (see :func:`_tap_group`). Neither needs a padded copy of the batch: each copies one
image at a time into a zero-bordered scratch image of its thread (see :func:`_correlate`).
Kernels compile on first use for a shape family (one to three seconds each with few channels,
7-14 s for the 384-accumulator blocks of 32-64 channels), and numba caches their machine code
on disk for later processes (:func:`xpcnn.kernels.numpy.generated.cache_dir`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy

from xpcnn.kernels.numpy import compiled
from xpcnn.kernels.numpy.generated import compile_source
from xpcnn.kernels.numpy.threads import split_batch
from xpcnn.settings import current

#: Output channels one register block covers at most, in vectors: wider layers run in groups.
GROUP_VECTORS = 2


def supports(x: Any, weight_shape: tuple[int, int, int, int], stride: tuple[int, int]) -> str | None:
    """None when the direct kernels can run this convolution of ``x``, else why not (for an error message)."""
    o, c = weight_shape[:2]
    if type(x) is not numpy.ndarray:
        return f"it runs on NumPy arrays only, got {type(x).__module__}.{type(x).__name__}"
    if not compiled.available():
        return "it needs numba, which is not installed (pip install numba)"
    if x.dtype not in (numpy.float32, numpy.float64):
        return f"it takes float32 or float64 input, got {x.dtype}"
    if max(o, c) > max_channels():
        return f"it takes at most {max_channels()} channels in and out, got {c} in and {o} out"
    if tuple(stride) != (1, 1):
        return f"its input gradient needs stride 1, got {tuple(stride)}"
    return None


def max_channels() -> int:
    """The most channels (in and out: the input gradient is a convolution with them swapped) the direct
    kernels take: the ``direct_max_channels`` setting, else 4 vectors of outputs (64 channels with
    512-bit vectors, else 32): up to it they measured faster than the best GEMM lowering, beyond it
    slower (bench/results/optimization-log.md, steps 38-41)."""
    most = current().direct_max_channels
    return most if most is not None else 4 * _lanes()


def conv_forward(x: Any, weight: Any, bias: Any | None, padding: tuple[int, int, int, int],
                 out_hw: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Any:
    """Cross-correlation of channel-last ``x`` ``(N, H, W, C)``, zero-padded by ``padding`` (top, bottom,
    left, right), with ``weight`` ``(O, C, kh, kw)``, plus ``bias`` ``(O,)`` when given: the ``(N, Ho, Wo,
    O)`` output, C-contiguous, in ``x``'s dtype. The padded input never exists as a whole array: see
    :func:`_correlate`."""
    o = weight.shape[0]
    taps = numpy.ascontiguousarray(numpy.transpose(weight, (2, 3, 1, 0)), x.dtype)  # (kh, kw, C, O)
    shift = numpy.zeros(o, x.dtype) if bias is None else numpy.ascontiguousarray(bias, x.dtype)
    return _correlate(numpy.ascontiguousarray(x), taps, shift, out_hw, stride, dilation, padding)


def conv_input_grad(grad_y: Any, weight: Any, padding: tuple[int, int, int, int], input_hw: tuple[int, int],
                    dilation: tuple[int, int], add_to: Any | None = None) -> Any:
    """Gradient ``(N, H, W, C)`` of the input of a stride-1 :func:`conv_forward` with ``padding``, from
    ``grad_y`` ``(N, Ho, Wo, O)``: the output gradient, padded by the kernel's reach less the forward
    padding, correlated with the kernel flipped in space and transposed in channels. Only the ``H x W``
    pixels of the unpadded input are computed (a ``3x3`` conv on ``8x8`` images would otherwise compute
    ``10x10``), C-contiguous; where a padding exceeds the kernel's reach, the padded input's gradient is
    computed and cropped (a strided view). ``add_to`` ``(N, H, W, C)``, when given, is added to the result:
    the kernel starts its sums from it instead of from zero (a residual block's other path: no extra pass)."""
    _, c, kh, kw = weight.shape
    (dh, dw), (h, w) = dilation, input_hw
    reach_h, reach_w = (kh - 1) * dh, (kw - 1) * dw
    top, bottom, left, right = padding
    taps = numpy.ascontiguousarray(numpy.transpose(weight[:, :, ::-1, ::-1], (2, 3, 0, 1)), grad_y.dtype)
    zeros, grad_y = numpy.zeros(c, grad_y.dtype), numpy.ascontiguousarray(grad_y)
    if max(top, bottom) > reach_h or max(left, right) > reach_w:
        full = _correlate(grad_y, taps, zeros, (h + top + bottom, w + left + right), (1, 1), dilation,
                          (reach_h, reach_h, reach_w, reach_w))
        grad = full[:, top:top + h, left:left + w, :]
        return grad if add_to is None else grad + add_to
    return _correlate(grad_y, taps, zeros, (h, w), (1, 1), dilation,
                      (reach_h - top, reach_h - bottom, reach_w - left, reach_w - right), add_to)


def conv_weight_grad(x: Any, grad_y: Any, kernel: tuple[int, int], padding: tuple[int, int, int, int],
                     stride: tuple[int, int], dilation: tuple[int, int]) -> Any:
    """Gradient ``(O, C, kh, kw)`` of the weight of :func:`conv_forward`, from its channel-last input
    ``(N, H, W, C)`` (padded by ``padding`` inside the kernel, as there) and the output gradient
    ``(N, Ho, Wo, O)``."""
    x = numpy.ascontiguousarray(x)
    grad_y = numpy.ascontiguousarray(grad_y, x.dtype)
    n, h, w, c = x.shape
    _, ho, wo, o = grad_y.shape
    kh, kw = kernel
    top, bottom, left, right = padding
    cols, chans = _tap_group(c, o, kw)
    run = _weight_grad_kernel(c, o, cols, chans, x.dtype.name)
    partials: dict[int, Any] = {}

    def part(first: int, last: int) -> None:
        taps = numpy.zeros((kh, kw, c, o), x.dtype)
        run(x.reshape(-1), grad_y.reshape(-1), taps.reshape(-1), h, w, top, left, h + top + bottom,
            w + left + right, kh, kw, ho, wo, stride[0], stride[1], dilation[0], dilation[1], first, last)
        partials[first] = taps

    _run_split(part, n, 2 * 2 * n * ho * wo * o * c * kh * kw)  # counted double: see _run_split
    taps = sum(partials[k] for k in sorted(partials))
    return numpy.transpose(taps, (3, 2, 0, 1))


def _correlate(x: Any, taps: Any, shift: Any, out_hw: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int], padding: tuple[int, int, int, int], init: Any | None = None) -> Any:
    """``(N, Ho, Wo, O)`` correlation of ``x`` ``(N, H, W, C)``, zero-padded by ``padding`` (top, bottom,
    left, right), with ``taps`` ``(kh, kw, C, O)``, plus ``shift`` ``(O,)``, plus ``init`` ``(N, Ho, Wo, O)``
    when given (the sums start from it; with 2-7 outputs, computed as 8, it is added afterwards).

    The kernel copies one image at a time into a zero-bordered scratch image of its thread, which stays
    in cache, instead of a padded copy of the whole batch passing through memory; rows of padding are
    never read (an input gradient's padded output gradient is mostly such rows: lenet5's 16->6, 8 of
    18)."""
    n, h, w, c = x.shape
    kh, kw, _, o = taps.shape
    ho, wo = out_hw
    top, bottom, left, right = padding
    computed = _computed_channels(o)
    if computed > o:  # zero weights for the extra channels, which the kernel computes but never stores
        taps = numpy.concatenate([taps, numpy.zeros((kh, kw, c, computed - o), taps.dtype)], axis=3)
        shift = numpy.concatenate([shift, numpy.zeros(computed - o, shift.dtype)])
    group, block = _register_block(computed, wo)
    run = _forward_kernel(o, computed, group, block, c == 1, x.dtype.name)
    out = numpy.empty((n, ho, wo, o), x.dtype)
    seeded = init is not None and computed == o
    start = numpy.ascontiguousarray(init, x.dtype).reshape(-1) if seeded else shift

    def part(first: int, last: int) -> None:
        run(x.reshape(-1), taps.reshape(-1), shift, start, out.reshape(-1), h, w, top, left, h + top + bottom,
            w + left + right, c, kh, kw, ho, wo, stride[0], stride[1], dilation[0], dilation[1], int(seeded),
            first, last)

    taps_read = _rows_read(ho, kh, stride[0], dilation[0], (top, top + h)) * kw
    _run_split(part, n, 2 * n * wo * computed * c * taps_read)
    if init is not None and not seeded:
        out += init
    return out


@cache
def _rows_read(ho: int, kh: int, sh: int, dh: int, rows: tuple[int, int]) -> int:
    """(output row, kernel row) pairs whose input row lies inside ``rows``: the rows the kernel reads."""
    return sum(rows[0] <= y * sh + i * dh < rows[1] for y in range(ho) for i in range(kh))


def _run_split(part: Any, n: int, flops: int) -> None:
    """``part`` over the batch, split over the worker threads when the kernel has ``flops`` enough to
    pay for waking them (the ``direct_split_min_flops`` setting; weight gradients count their FLOPs
    double, as one thread measured slower for them; bench/results/optimization-log.md, step 48)."""
    split_batch(part, n, threaded=flops >= current().direct_split_min_flops)


def _computed_channels(o: int) -> int:
    """Output channels a forward block computes for ``o`` stored ones: two to seven as eight. LLVM
    vectorizes a block of 6 accumulators per pixel into partial vectors, which measured slower than a
    whole 256-bit vector of 8 (bench/results/optimization-log.md, step 44)."""
    return 8 if 1 < o < 8 else o


def _lanes() -> int:
    """Float32 lanes of one vector register of numba's code (16 or 8)."""
    return compiled.vector_lanes()


def _registers(o: int) -> int:
    """Accumulator vectors a kernel may keep in registers: 28 where they are 512-bit vectors (AVX-512 has
    32 registers), else 12 (AVX2 has 16; on AVX-512, blocks of up to 8 channels, one 256-bit vector each,
    measured faster with 12 than with 24)."""
    return 28 if _lanes() >= 16 and o > 8 else 12


def _vectors(channels: int) -> int:
    return -(-channels // _lanes())


def _block_most(o: int) -> int:
    """Pixels (forward) or kernel taps (weight gradient) whose ``o`` accumulators fit the registers."""
    return max(1, _registers(o) // _vectors(o))


def _register_block(o: int, wo: int) -> tuple[int, int]:
    """Output channels and pixels of one forward register block: all ``o`` channels while they fill at
    most :data:`GROUP_VECTORS` vectors, else the largest such group of whole vectors dividing ``o`` (more
    pixels per block: each weight vector loaded then feeds more FMAs); pixels as many as the registers
    hold, spread evenly over the row."""
    most_channels = GROUP_VECTORS * _lanes()
    groups = [d for d in range(_lanes(), most_channels + 1, _lanes()) if o % d == 0]
    group = o if o <= most_channels or not groups else max(groups)
    most = _block_most(group)
    blocks = -(-wo // most)
    return group, -(-wo // blocks)


def _forward_source(o: int, computed: int, group: int, block: int, one_channel: bool = False) -> str:
    """Source of the forward kernel over flat arrays: ``block`` output pixels by ``group`` of the
    ``computed`` output channels of ``taps`` at a time; the last block of a row ends at the row's end
    (overlapping the one before when ``block`` does not divide it). When only the first ``o`` channels
    are wanted, a row goes through a scratch row of all ``computed`` (whole-vector stores: LLVM
    vectorizes the accumulators as wide as the stores it starts from), then its first ``o`` to ``out``.
    With ``one_channel`` input the channel loop is compiled away (a first conv on grey images: 1.2-1.8x
    faster than with the channel count as a run-time argument; with 6-16 channels a literal count measured
    even or slower)."""
    narrow = computed > o
    lines = ["def kernel(x, taps, shift, init, out, h, w, pt, pl, hp, wp, c, kh, kw, ho, wo, sh, sw, dh, dw, seeded,"
             " first, last):"]
    lines += ["    c = 1"] if one_channel else []
    lines += ["    step = sw * c",
              f"    scratch = numpy.empty(wo * {computed}, dtype=out.dtype)" if narrow else "    scratch = out",
              "    r0, r1 = pt, pt + h"]
    lines += _padded_image_source(" " * 4)
    lines += ["        for y in range(ho):",
              "            row0 = " + ("0" if narrow else f"(n * ho + y) * wo * {o}"),
              f"            for g0 in range(0, {computed}, {group}):",
              f"                for start in range(0, wo, {block}):",
              f"                    x0 = min(start, wo - {block})"]
    lines += _pixel_block_source(computed, group, block, " " * 20, seeded=not narrow)
    if narrow:
        lines += [f"            base = (n * ho + y) * wo * {o}",
                  "            for p in range(wo):"]
        lines += [f"                out[U(base + p * {o} + {k})] = scratch[U(p * {computed} + {k})]" for k in range(o)]
    return "\n".join(lines)


def _pixel_block_source(stride: int, group: int, pixels: int, pad: str, seeded: bool = False) -> list[str]:
    """A register block of ``pixels`` output pixels by ``group`` channels, written to ``scratch`` (whose
    pixels are ``stride`` values apart) from offset ``row0``; its sums start from ``shift``, or with
    ``seeded`` (a run-time flag of the kernel, where ``scratch`` is ``out``) from ``init``, laid out as ``out``."""
    start = [pad + "; ".join(f"a{r}_{k} = shift[g0 + {k}]" for k in range(group)) for r in range(pixels)]
    if seeded:
        inner = pad + "    "
        start = ([pad + "if seeded:", inner + f"base = row0 + x0 * {stride} + g0"]
                 + [inner + "; ".join(f"a{r}_{k} = init[U(base + {r * stride + k})]" for k in range(group))
                    for r in range(pixels)]
                 + [pad + "else:"] + ["    " + line for line in start])
    lines = list(start)
    lines += [pad + "for i in range(kh):",
              pad + "    xrow = y * sh + i * dh",
              pad + "    if xrow < r0 or xrow >= r1:",
              pad + "        continue",
              pad + "    row = image + (xrow * wp + x0 * sw) * c",
              pad + "    for j in range(kw):",
              pad + "        at = row + j * dw * c",
              pad + f"        tap = (i * kw + j) * c * {stride} + g0",
              pad + "        for ch in range(c):"]
    inner = pad + " " * 12
    lines += [inner + f"w{k} = taps[U(tap + ch * {stride} + {k})]" for k in range(group)]
    for r in range(pixels):
        lines.append(inner + f"v = src[U(at + {r} * step + ch)]")
        lines += [inner + f"a{r}_{k} += v * w{k}" for k in range(group)]
    lines.append(pad + f"base = row0 + x0 * {stride} + g0")
    lines += [pad + f"scratch[U(base + {r * stride + k})] = a{r}_{k}" for r in range(pixels) for k in range(group)]
    return lines


def _padded_image_source(pad: str) -> list[str]:
    """Lines that open the loop over images ``n`` and set ``src`` and ``image`` (the flat array a kernel
    reads and the offset of image ``n`` in it, whose padded size is ``hp x wp``): ``x`` itself when there
    is no padding, else a scratch image with a zero border, into whose interior each image of ``x``
    ``(N, h, w, c)`` is copied (``pt`` rows and ``pl`` columns in)."""
    return [pad + "padded = pt != 0 or pl != 0 or hp != h or wp != w",
            pad + "src = numpy.zeros(hp * wp * c, dtype=x.dtype) if padded else x",
            pad + "image = 0",
            pad + "for n in range(first, last):",
            pad + "    if padded:",
            pad + "        for yy in range(h):",
            pad + "            s0 = (n * h + yy) * w * c",
            pad + "            d0 = ((yy + pt) * wp + pl) * c",
            pad + "            for k in range(w * c):",
            pad + "                src[U(d0 + k)] = x[U(s0 + k)]",
            pad + "    else:",
            pad + "        image = n * hp * wp * c"]


def _tap_group(c: int, o: int, kw: int) -> tuple[int, int]:
    """Kernel columns and channels whose weight gradients one pass along an output row accumulates:
    whole columns of all ``c`` channels while they fit the registers, else a divisor of ``c``."""
    most = _block_most(o)
    if c <= most:
        return max(d for d in range(1, kw + 1) if kw % d == 0 and d * c <= most), c
    return 1, max(d for d in range(1, most + 1) if c % d == 0)


def _weight_grad_source(c: int, o: int, cols: int, chans: int) -> str:
    """Source of the weight-gradient kernel: for each output row, kernel row and group of ``cols``
    kernel columns by ``chans`` channels, the group's ``(cols*chans, O)`` gradients stay in registers
    while the pass runs along the row (one load of the output gradient feeds ``cols*chans`` FMAs)."""
    group = [(jj, cc) for jj in range(cols) for cc in range(chans)]
    lines = ["def kernel(x, g, taps, h, w, pt, pl, hp, wp, kh, kw, ho, wo, sh, sw, dh, dw, first, last):",
             f"    c = {c}",
             f"    step = sw * {c}",
             f"    colstep = dw * {c}"]
    lines += _padded_image_source(" " * 4)
    lines += ["        for y in range(ho):",
              f"            grow = (n * ho + y) * wo * {o}",
              "            for i in range(kh):",
              "                xrow = y * sh + i * dh",
              "                if xrow < pt or xrow >= pt + h:",
              "                    continue",
              f"                row = image + xrow * wp * {c}",
             f"                for j0 in range(0, kw, {cols}):",
             f"                    for c0 in range(0, {c}, {chans}):",
             "                        at = row + j0 * colstep + c0",
             f"                        tap = ((i * kw + j0) * {c} + c0) * {o}"]
    pad = " " * 24
    for t, (jj, cc) in enumerate(group):
        lines.append(pad + "; ".join(f"a{t}_{k} = taps[U(tap + {(jj * c + cc) * o + k})]" for k in range(o)))
    lines.append(pad + "for p in range(wo):")
    lines += [pad + f"    g{k} = g[U(grow + p * {o} + {k})]" for k in range(o)]
    lines.append(pad + "    here = at + p * step")
    for t, (jj, cc) in enumerate(group):
        lines.append(pad + f"    v = src[U(here + {jj} * colstep + {cc})]")
        lines += [pad + f"    a{t}_{k} += v * g{k}" for k in range(o)]
    for t, (jj, cc) in enumerate(group):
        lines += [pad + f"taps[U(tap + {(jj * c + cc) * o + k})] = a{t}_{k}" for k in range(o)]
    return "\n".join(lines)


@cache
def _forward_kernel(o: int, computed: int, group: int, block: int, one_channel: bool, dtype: str) -> Any:
    ints = ", ".join(["int64"] * 18)
    return compile_source(_forward_source(o, computed, group, block, one_channel),
                    f"void({dtype}[::1], {dtype}[::1], {dtype}[::1], {dtype}[::1], {dtype}[::1], {ints})")


@cache
def _weight_grad_kernel(c: int, o: int, cols: int, chans: int, dtype: str) -> Any:
    ints = ", ".join(["int64"] * 16)
    return compile_source(_weight_grad_source(c, o, cols, chans),
                    f"void({dtype}[::1], {dtype}[::1], {dtype}[::1], {ints})")
