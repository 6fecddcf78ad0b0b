"""``Conv2D``: a 2-D convolution layer with PyTorch's parameter layout."""

from __future__ import annotations

from typing import Any

from xpcnn.errors import ShapeError
from xpcnn.layers.base import Layer, sub_seed, uniform_init
from xpcnn.ops.conv import check_lowering, conv2d_backward, conv2d_forward
from xpcnn.ops.shapes import output_hw, pair, resolve_padding


class Conv2D(Layer):
    """2-D convolution over ``(N, C, H, W)`` input.

    weight ``(out_channels, in_channels, kh, kw)``, bias ``(out_channels,)``; padding is an int,
    a pair, ``"same"`` or ``"valid"``. Output ``(N, out_channels, Ho, Wo)``.

    ``lowering`` picks how the convolution is computed: ``"auto"`` (default: the accelerated kernel
    for the backend and shapes where one applies, else the reference im2col), ``"columns"`` (im2col),
    or one of the NumPy kernels: ``"rows"`` (banded weights), ``"tiles"`` (banded weights for tiles of
    a few output columns), ``"direct"`` (compiled loops for few channels, numba, stride 1); see
    :mod:`xpcnn.kernels.numpy.lowering`. It changes speed only, never the result beyond rounding;
    a NumPy-only lowering on another backend raises ValueError at the first forward pass.

    Raises ValueError for non-positive sizes or an unknown ``padding`` or ``lowering``, and
    :class:`~xpcnn.errors.ShapeError` for an input with the wrong channel count or smaller than the kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True,
                 seed: int | tuple[int, ...] | None = None, lowering: str = "auto") -> None:
        super().__init__()
        self.lowering = check_lowering(lowering, "Conv2D")
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Conv2D: {label} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) <= 0:
            raise ValueError("Conv2D: kernel_size, stride and dilation must be positive")
        self.padding_spec = padding
        self.padding = resolve_padding(padding, self.kernel_size, self.dilation, self.stride)
        self.use_bias = bias
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        seeds = (None, None) if seed is None else (sub_seed(seed, 0), sub_seed(seed, 1))
        self.params["weight"] = uniform_init(seeds[0], (out_channels, in_channels, *self.kernel_size), fan_in)
        if bias:
            self.params["bias"] = uniform_init(seeds[1], (out_channels,), fan_in)
        self._ctx = None

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding_spec if isinstance(self.padding_spec, (int, str)) else list(self.padding_spec),
                "dilation": list(self.dilation), "bias": self.use_bias}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = input_shape
        if c != self.in_channels:
            raise ShapeError(f"{self.name}: expected {self.in_channels} input channels, got {c} "
                             f"(input shape {tuple(input_shape)})")
        ho, wo = output_hw((h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        if ho <= 0 or wo <= 0:
            raise ShapeError(
                f"{self.name}: input {h}x{w} (padded {self.padding}) is smaller than the "
                f"{self.kernel_size[0]}x{self.kernel_size[1]} kernel (dilation {self.dilation}); "
                "use a larger input, more padding or a smaller kernel")
        return (n, self.out_channels, ho, wo)

    def forward(self, x: Any) -> Any:
        self._expect_rank(x, 4, "(N, C, H, W)")
        self._namespace(x)
        self.output_shape(tuple(x.shape))
        y, self._ctx = conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                      self.stride, self.padding, self.dilation, self.lowering)
        return y

    #: ``backward`` takes ``add_to``: see :meth:`backward`.
    adds_input_grad = True

    def backward(self, grad_out: Any, need_input_grad: bool = True, add_to: Any | None = None) -> Any:
        """dL/d_in, plus ``add_to`` (shaped like the input) when given: a residual block hands its other
        path's input gradient here, which the NumPy direct kernels add as they compute (no extra pass)."""
        self._expect_cached(self._ctx)
        grad_x, grad_w, grad_b = conv2d_backward(grad_out, self._ctx, need_input_grad, add_to)
        self.grads["weight"] = grad_w
        if grad_b is not None:
            self.grads["bias"] = grad_b
        return grad_x

