"""A/B of a residual block's input-gradient sum: the conv's backward then a separate in-place add, against the
conv's kernel starting its sums from the shortcut gradient (``conv2d_backward(..., add_to=)``).

    PYTHONPATH=. python bench/residual_grad_ab.py

Stride-1 3x3 convolutions of resnet20's three stages at batch 128, NumPy direct kernels with 512-bit vectors
where the CPU has them, on 1 and on 2 worker threads; prints the median milliseconds of 5 alternating runs of 10
calls each.
"""

from __future__ import annotations

import time

import numpy as np  # numpy first, as users run it

import xpcnn


def main() -> None:
    xpcnn.enable_wide_vectors()
    for threads in (1, 2):
        for c, h in [(16, 32), (32, 16), (64, 8)]:
            with xpcnn.settings(num_threads=threads):
                times = measure(c, h)
            print(f"128x{c}x{h}x{h}, {threads} thread(s): "
                  + ", ".join(f"{k} {np.median(v):.2f} ms" for k, v in times.items()))


def measure(c: int, h: int) -> dict[str, list[float]]:
    """Milliseconds per call of both variants for a ``c``-channel 3x3 conv on ``h x h`` images, 5 runs each."""
    from xpcnn.kernels.numpy import conv
    from xpcnn.kernels.numpy.threads import single_threaded_blas
    from xpcnn.ops.arithmetic import accumulate
    from xpcnn.ops.conv import conv2d_backward
    rng = np.random.default_rng(0)

    def nhwc(shape: tuple[int, int, int, int]) -> np.ndarray:  # channel-last memory, (N, C, H, W) view
        return rng.standard_normal(shape).astype(np.float32).transpose(0, 3, 1, 2)

    x, grad_y, shortcut = nhwc((128, h, h, c)), nhwc((128, h, h, c)), nhwc((128, h, h, c))
    weight = 0.1 * rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    _, ctx = conv.conv2d_forward(x, weight, None, (1, 1), (1, 1, 1, 1), (1, 1), "auto")

    def apart() -> np.ndarray:
        grad_x = conv2d_backward(grad_y, ctx, True)[0]
        return accumulate(grad_x, shortcut, protected=grad_y)

    def seeded() -> np.ndarray:
        return conv2d_backward(grad_y, ctx, True, shortcut)[0]

    np.testing.assert_allclose(apart(), seeded(), rtol=1e-4, atol=1e-4)
    times: dict[str, list[float]] = {"apart": [], "seeded": []}
    with single_threaded_blas():
        for _ in range(5):
            for name, fn in (("apart", apart), ("seeded", seeded)):
                start = time.perf_counter()
                for _ in range(10):
                    fn()
                times[name].append((time.perf_counter() - start) / 10 * 1e3)
    return times


if __name__ == "__main__":
    main()
