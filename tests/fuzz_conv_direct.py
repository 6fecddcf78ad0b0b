"""Random geometries through the NumPy direct convolution kernels, against PyTorch in float32 and float64.

    python tests/fuzz_conv_direct.py [SEED] [TRIALS]

Not collected by pytest (each new geometry compiles kernels for seconds): a manual check after changing
:mod:`xpcnn.kernels.numpy.direct`. Each trial draws channels (1-64), kernel (1-5 per side), dilation (1-2),
uneven padding (0-3 per side, beyond the kernel's reach too), image size, batch, bias and dtype, runs the forward
pass and the backward pass (with ``add_to`` half of the time) at stride one, and compares the output and all
gradients with ``torch.nn.functional.conv2d`` of the explicitly padded input. Prints every mismatch and the count;
exits 1 on any.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import xpcnn
from xpcnn.kernels.numpy import conv
from xpcnn.ops.conv import conv2d_backward


def trial(rng: np.random.Generator) -> str | None:
    """One random geometry; a description of it when xpcnn and PyTorch disagree, else None."""
    c, o = int(rng.choice([1, 2, 3, 5, 8, 16, 17, 32, 48, 64])), int(rng.choice([1, 2, 3, 7, 8, 9, 16, 24, 32, 64]))
    (kh, kw), (dh, dw) = rng.integers(1, 6, 2).tolist(), rng.integers(1, 3, 2).tolist()
    pads = tuple(rng.integers(0, 4, 4).tolist())
    h = int(rng.integers(max(1, (kh - 1) * dh + 1 - pads[0] - pads[1]), 12))
    w = int(rng.integers(max(1, (kw - 1) * dw + 1 - pads[2] - pads[3]), 12))
    n, dtype = int(rng.integers(1, 4)), rng.choice([np.float32, np.float64])
    x, weight = rng.standard_normal((n, c, h, w)).astype(dtype), rng.standard_normal((o, c, kh, kw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if rng.random() < 0.5 else None
    y, ctx = conv.conv2d_forward(x, weight, bias, (1, 1), pads, (dh, dw), "direct")
    grad_y, addend = rng.standard_normal(y.shape).astype(dtype), rng.standard_normal(x.shape).astype(dtype)
    use_add = bool(rng.random() < 0.5)
    grad_x, grad_w, grad_b = conv2d_backward(grad_y, ctx, True, addend if use_add else None)

    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    tb = None if bias is None else torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (pads[2], pads[3], pads[0], pads[1])), tw, tb,
                                    dilation=(dh, dw))
    ty.backward(torch.tensor(grad_y))
    tol = 1e-9 if dtype == np.float64 else 2e-3
    pairs = [(y, ty.detach().numpy(), tol), (grad_w, tw.grad.numpy(), 10 * tol),
             (grad_x, tx.grad.numpy() + (addend if use_add else 0), 10 * tol)]
    if bias is not None:
        pairs.append((grad_b, tb.grad.numpy(), 10 * tol))
    if all(np.allclose(a, b, rtol=tol, atol=atol) for a, b, atol in pairs):
        return None
    return f"c={c} o={o} kernel={(kh, kw)} dilation={(dh, dw)} padding={pads} hw={(h, w)} n={n} {dtype.__name__}"


def main() -> int:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    xpcnn.enable_wide_vectors()
    rng = np.random.default_rng(seed)
    bad = [m for m in (trial(rng) for _ in range(trials)) if m is not None]
    for message in bad:
        print("MISMATCH", message)
    print(f"{trials} geometries, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
