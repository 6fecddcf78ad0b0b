"""Element-wise activations: each forward returns the output, each backward takes what it cached.

Any shape; the output has the input's shape and dtype.
"""

from __future__ import annotations

from typing import Any

from xpcnn import backend as B
from xpcnn.kernels import dispatch


@dispatch("relu")
def relu_forward(x: Any) -> Any:
    """``max(x, 0)``."""
    return B.namespace_of(x).maximum(x, 0.0)


@dispatch("relu_grad")
def relu_backward(grad_y: Any, y: Any) -> Any:
    """Gradient of ReLU given its output ``y``: ``grad_y * (y > 0)`` (no gradient where ``y == 0``, as PyTorch)."""
    xp = B.namespace_of(grad_y, y)
    return grad_y * xp.astype(y > 0, grad_y.dtype)  # a multiply by a 0/1 mask: NumPy's `where` is ~7x slower


def leaky_relu_forward(x: Any, slope: float) -> Any:
    """``x`` where positive, ``slope * x`` elsewhere."""
    return B.namespace_of(x).where(x > 0, x, x * slope)


def leaky_relu_backward(grad_y: Any, x: Any, slope: float) -> Any:
    """Gradient of leaky ReLU given its input ``x``."""
    xp = B.namespace_of(grad_y, x)
    return grad_y * (xp.astype(x > 0, grad_y.dtype) * (1.0 - slope) + slope)


def tanh_forward(x: Any) -> Any:
    """Hyperbolic tangent."""
    return B.namespace_of(x).tanh(x)


@dispatch("tanh_grad")
def tanh_backward(grad_y: Any, y: Any) -> Any:
    """Gradient of tanh given its output ``y``: ``grad_y * (1 - y**2)``."""
    return grad_y * (1.0 - y * y)


def sigmoid_forward(x: Any) -> Any:
    """Logistic sigmoid, computed without overflow for large ``|x|``."""
    xp = B.namespace_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(grad_y: Any, y: Any) -> Any:
    """Gradient of the sigmoid given its output ``y``: ``grad_y * y * (1 - y)``."""
    return grad_y * y * (1.0 - y)


# -- GELU ------------------------------------------------------------------------------------------------------
# The Array API has no erf, so the normal CDF is written here with Cody/Moshier's rational approximations of erf
# and erfc (the Cephes library's ``ndtr``, the coefficients SciPy's ``scipy.special.ndtr`` uses). In float64,
# against ``math.erfc``: absolute error at most 2.3e-16 everywhere, relative error below 1e-14 for x >= -5 and
# below 2e-13 for x >= -20 (tests/test_gradients.py checks both); float32 arithmetic rounds to within a few
# float32 ulps of the true value, as PyTorch's float32 erf does.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)
_SQRT_HALF = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_TANH_BETA = 0.79788456080286535588  # sqrt(2 / pi)
_TANH_KAPPA = 0.044715


def _polynomial(x: Any, coefficients: tuple[float, ...], monic: bool = False) -> Any:
    """Horner's rule, highest power first; ``monic`` adds a leading coefficient 1 (Cephes' ``p1evl``)."""
    y = x + coefficients[0] if monic else x * 0.0 + coefficients[0]
    for c in coefficients[1:]:
        y = y * x + c
    return y


def normal_cdf(x: Any) -> Any:
    """The standard normal CDF ``Phi(x) = (1 + erf(x / sqrt(2))) / 2``, element-wise, accurate in both tails
    (the lower tail as ``erfc(|x| / sqrt(2)) / 2``, without cancellation)."""
    xp = B.namespace_of(x)
    z = x * _SQRT_HALF
    a = xp.minimum(xp.abs(z), 30.0)  # exp(-a**2) is 0 beyond 27: the clamp only keeps the polynomials finite
    small = xp.minimum(xp.maximum(z, -1.0), 1.0)
    s2 = small * small
    central = 0.5 + 0.5 * small * _polynomial(s2, _ERF_T) / _polynomial(s2, _ERF_U, monic=True)
    ratio = xp.where(a < 8.0, _polynomial(a, _ERFC_P) / _polynomial(a, _ERFC_Q, monic=True),
                     _polynomial(a, _ERFC_R) / _polynomial(a, _ERFC_S, monic=True))
    tail = 0.5 * xp.exp(-(a * a)) * ratio  # erfc(|z|) / 2
    return xp.where(xp.abs(z) < 1.0, central, xp.where(z > 0, 1.0 - tail, tail))


def gelu_forward(x: Any, approximate: str = "none") -> tuple[Any, Any]:
    """GELU as PyTorch's ``gelu(x, approximate)``: ``x * Phi(x)`` (``"none"``) or
    ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x**3)))`` (``"tanh"``). Returns ``(y, cache)``: ``Phi(x)``
    or the tanh term, which :func:`gelu_backward` reuses."""
    xp = B.namespace_of(x)
    if approximate == "tanh":
        t = xp.tanh(_TANH_BETA * (x + _TANH_KAPPA * (x * x * x)))
        return 0.5 * x * (1.0 + t), t
    cdf = normal_cdf(x)
    return x * cdf, cdf


def gelu_backward(grad_y: Any, x: Any, cache: Any, approximate: str = "none") -> Any:
    """Gradient of :func:`gelu_forward` given its input ``x`` and ``cache``: ``Phi(x) + x * phi(x)`` (exact), or
    PyTorch's derivative of the tanh form."""
    xp = B.namespace_of(grad_y, x)
    if approximate == "tanh":
        inner_grad = _TANH_BETA * (1.0 + 3.0 * _TANH_KAPPA * (x * x))
        return grad_y * (0.5 * (1.0 + cache) + 0.5 * x * (1.0 - cache * cache) * inner_grad)
    return grad_y * (cache + x * (_INV_SQRT_2PI * xp.exp(-0.5 * (x * x))))
