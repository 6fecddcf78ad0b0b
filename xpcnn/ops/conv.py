"""2-D convolution (cross-correlation, as PyTorch's ``conv2d``) as im2col and one matrix product.

This is the portable reference, written once against the Array API. Inside, activations are
channel-last ``(N, H, W, C)``: a window's ``kw*C`` values then lie side by side, im2col gathers
long runs, and the product ``patches @ W`` is the output in channel-last order, handed on as a
channel-first view. Where an accelerated kernel applies (:mod:`xpcnn.kernels.numpy.conv` on NumPy:
other lowerings, compiled direct loops, worker threads), :func:`conv2d_forward` runs it instead and
its context carries its own backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpcnn import backend as B
from xpcnn.errors import ShapeError
from xpcnn.kernels import dispatch
from xpcnn.ops.shapes import Pair, Padding, output_hw, unpadded_shape
from xpcnn.settings import current

#: Values of ``Conv2D(lowering=...)``: ``"auto"`` (the kernel registry chooses; the reference where no
#: kernel applies), ``"columns"`` (im2col), and the NumPy kernels' ``"rows"``, ``"tiles"``, ``"direct"``.
LOWERINGS = ("auto", "columns", "rows", "tiles", "direct")


def check_lowering(kind: str, where: str = "conv2d") -> str:
    """``kind`` if it is one of :data:`LOWERINGS`, else a ValueError naming ``where`` and the choices."""
    if kind not in LOWERINGS:
        raise ValueError(f"{where}: lowering must be one of {', '.join(map(repr, LOWERINGS))}, got {kind!r}")
    return kind


@dataclass
class ConvContext:
    """What the reference backward pass needs."""

    x_padded: Any          # (N, Hp, Wp, C)
    weight: Any            # (O, C, kh, kw)
    stride: Pair
    padding: Padding
    dilation: Pair
    out_hw: Pair
    has_bias: bool

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of the forward pass's input."""
        return unpadded_shape(tuple(self.x_padded.shape), self.padding)


def weight_matrix(weight: Any) -> Any:
    """``(O, C, kh, kw)`` weight as the ``(kh*kw*C, O)`` matrix that im2col patches multiply."""
    xp = B.namespace_of(weight)
    o, c, kh, kw = weight.shape
    return xp.permute_dims(xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (o, kh * kw * c)), (1, 0))


@dispatch("conv2d_forward")
def conv2d_forward(x: Any, weight: Any, bias: Any | None, stride: Pair, padding: Padding, dilation: Pair,
                   lowering: str = "auto") -> tuple[Any, Any]:
    """``y[n, o] = sum_c x[n, c] (*) weight[o, c] + bias[o]`` (cross-correlation).

    x: ``(N, C, H, W)``; weight: ``(O, C, kh, kw)``; bias: ``(O,)`` or None; stride, dilation:
    ``(h, w)``; padding: ``(top, bottom, left, right)`` zeros. Returns ``y`` ``(N, O, Ho, Wo)`` in
    ``x``'s dtype and the context for :func:`conv2d_backward`. Raises ValueError for a ``lowering``
    that only an accelerated kernel provides where none runs (another backend, or kernels switched off).
    """
    if check_lowering(lowering) not in ("auto", "columns"):
        why = "kernels are switched off" if not current().kernels else f"got {type(x).__module__} arrays"
        raise ValueError(f"conv2d: the {lowering!r} lowering is an accelerated kernel for NumPy arrays and cannot "
                         f"run here ({why}); use lowering='auto'")
    xp = B.namespace_of(x, weight)
    n = x.shape[0]
    o, _, kh, kw = weight.shape
    out_hw = output_hw(tuple(x.shape[2:]), (kh, kw), stride, padding, dilation)
    x_padded = B.pad_hw(B.channels_last(x), *padding)
    patches = B.im2col(x_padded, (kh, kw), out_hw, stride, dilation)  # (N*Ho*Wo, kh*kw*C)
    y = patches @ weight_matrix(weight)                                 # (N*Ho*Wo, O)
    if bias is not None:
        y = y + bias
    y = xp.reshape(y, (n, *out_hw, o))
    ctx = ConvContext(x_padded, weight, stride, padding, dilation, out_hw, bias is not None)
    return B.channels_first(y), ctx


def conv2d_backward(grad_y: Any, ctx: Any, need_input_grad: bool = True, add_to: Any | None = None
                    ) -> tuple[Any | None, Any, Any | None]:
    """Gradients of :func:`conv2d_forward` for ``grad_y`` ``(N, O, Ho, Wo)``: ``(grad_x (N, C, H, W)``
    (None unless ``need_input_grad``), ``grad_weight (O, C, kh, kw), grad_bias (O,)`` or None).
    ``add_to`` ``(N, C, H, W)``, when given, is added to ``grad_x`` (a residual block's other path: the
    NumPy direct kernels start their sums from it, no extra pass); it is never written. Raises
    :class:`~xpcnn.errors.ShapeError` when its shape is not the input's.

    ``grad_weight = patches.T @ g``; ``grad_x`` is col2im (the adjoint of im2col) of ``g @ W.T``."""
    if add_to is not None and tuple(add_to.shape) != ctx.input_shape:
        raise ShapeError(f"conv2d_backward: add_to has shape {tuple(add_to.shape)}, but the convolution's input "
                         f"had shape {ctx.input_shape}; pass a gradient shaped like that input")
    if not isinstance(ctx, ConvContext):  # an accelerated kernel's context runs its own backward pass
        return ctx.backward(grad_y, need_input_grad, add_to)
    xp = B.namespace_of(grad_y, ctx.x_padded)
    o, c, kh, kw = ctx.weight.shape
    g = xp.reshape(B.channels_last(grad_y), (-1, o))  # (N*Ho*Wo, O)
    patches = B.im2col(ctx.x_padded, (kh, kw), ctx.out_hw, ctx.stride, ctx.dilation)  # rebuilt: less memory
    grad_matrix = xp.permute_dims(patches, (1, 0)) @ g  # (kh*kw*C, O)
    grad_w = xp.permute_dims(xp.reshape(grad_matrix, (kh, kw, c, o)), (3, 2, 0, 1))
    grad_b = None
    if ctx.has_bias:  # a sum over N*Ho*Wo rows, as a product with ones: BLAS accumulates in blocks, more exactly
        grad_b = xp.reshape(xp.ones((1, g.shape[0]), dtype=g.dtype, device=B.device_of(g)) @ g, (o,))
    grad_x = None
    if need_input_grad:
        dx = B.col2im_matmul(g, weight_matrix(ctx.weight), tuple(ctx.x_padded.shape), (kh, kw), ctx.out_hw,
                             ctx.stride, ctx.dilation)
        grad_x = B.channels_first(B.crop_hw(dx, *ctx.padding))
        if add_to is not None:
            grad_x = grad_x + add_to
    return grad_x, grad_w, grad_b
