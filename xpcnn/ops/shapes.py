"""Small shape helpers shared by the convolution and pooling ops."""

from __future__ import annotations

Pair = tuple[int, int]
Padding = tuple[int, int, int, int]  # top, bottom, left, right


def pair(value: int | tuple[int, int], name: str = "value") -> Pair:
    """``3 -> (3, 3)``; ``(3, 2) -> (3, 2)``; rejects non-positive or malformed values."""
    if isinstance(value, int) and not isinstance(value, bool):
        result = (value, value)
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        result = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return result


def resolve_padding(padding: int | tuple[int, int] | str, kernel: Pair, dilation: Pair,
                    stride: Pair) -> Padding:
    """Padding spec (int, pair, ``"same"`` or ``"valid"``) as ``(top, bottom, left, right)``.

    ``"same"`` keeps H and W at stride 1 and, like PyTorch, puts an odd extra row or column
    at the bottom or right.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' needs stride 1 (as in PyTorch); give explicit padding instead")
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding") if not isinstance(padding, int) or padding >= 0 else (-1, -1)
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return (ph, ph, pw, pw)


def unpadded_shape(padded_shape: tuple[int, int, int, int], padding: Padding) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of an input whose channel-last copy, padded by ``padding``, is ``(N, Hp, Wp, C)``."""
    n, hp, wp, c = padded_shape
    return (n, c, hp - padding[0] - padding[1], wp - padding[2] - padding[3])


def output_hw(in_hw: Pair, kernel: Pair, stride: Pair, padding: Padding, dilation: Pair) -> Pair:
    """Output height and width of a sliding window (no ceil mode), possibly <= 0 if it does not fit."""
    h = (in_hw[0] + padding[0] + padding[1] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    w = (in_hw[1] + padding[2] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return (h, w)
