"""The layer protocol: ``forward(x)`` caches what ``backward(grad_out)`` needs.

Each layer holds ``params`` and, after ``backward``, ``grads``: dicts of arrays named as in
PyTorch (``weight``, ``bias``), so a PyTorch state dict maps onto a model one to one.
"""

from __future__ import annotations

import itertools
from typing import Any

from xpcnn import backend as B
from xpcnn.errors import ShapeError
from xpcnn.resources import check_parameter_memory

_seed_counter = itertools.count()
_base_seed = 0


def manual_seed(seed: int) -> None:
    """Seed the initial weights of layers built after this call (like ``torch.manual_seed``)."""
    global _seed_counter, _base_seed
    _base_seed = int(seed)
    _seed_counter = itertools.count()


def next_seed() -> tuple[int, int]:
    """The seed for the next layer built without an explicit one."""
    return (_base_seed, next(_seed_counter))


class Layer:
    """Base class. Subclasses set ``params`` in ``__init__`` and implement ``forward``/``backward``."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.training = True
        self.name = type(self).__name__
        self.placement: B.Placement | None = None

    # -- the protocol ---------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Compute the output for input ``x`` and cache what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        """Take dL/d_out, store parameter gradients in ``grads`` and return dL/d_in, shaped like the input.

        With ``need_input_grad=False`` a layer may skip computing dL/d_in and return None (the first
        layer of a model, whose input gradient nobody reads: it would cost a convolution)."""
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output for an input of ``input_shape`` (batch axis included)."""
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (JSON-ready)."""
        return {}

    def describe(self) -> str:
        """A short one-line description for :meth:`Sequential.summary`."""
        short = {k: (f"{v[0]}x{v[1]}" if isinstance(v, list) and len(v) == 2 else v) for k, v in self.config().items()}
        args = ", ".join(f"{k}={v}" for k, v in short.items() if k not in ("in_channels", "in_features"))
        return f"{type(self).__name__}({args})"

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    # -- nesting ------------------------------------------------------------------------------
    def children(self) -> list[tuple[str, Layer]]:
        """The layers nested directly in this one as ``(relative key, layer)``, e.g. ``("block.0", conv)``
        for a :class:`~xpcnn.layers.Residual`; empty for a plain layer."""
        return []

    def named_modules(self, prefix: str) -> list[tuple[str, Layer]]:
        """``(key, layer)`` for this layer (keyed ``prefix``) and every layer nested in it, depth first, keyed
        as in PyTorch's ``named_modules`` (``"3"``, ``"3.block.0"``, ...)."""
        found: list[tuple[str, Layer]] = [(prefix, self)]
        for key, child in self.children():
            found += child.named_modules(f"{prefix}.{key}")
        return found

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses ---------------------------------------------------------------
    def _namespace(self, x: Any) -> Any:
        """Namespace of ``x`` and the parameters, with a clear error if they do not share one."""
        arrays = [x, *self.params.values()]
        return B.namespace_of(*arrays, where=self.name)

    def _expect_rank(self, x: Any, rank: int, layout: str) -> None:
        if not hasattr(x, "shape") or len(x.shape) != rank:
            got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ShapeError(f"{self.name}: expected a {rank}-D input {layout}, got shape {got}")

    def _expect_cached(self, cache: Any) -> None:
        if cache is None:
            raise RuntimeError(f"{self.name}: backward() called before forward(); run forward first")

    def _put(self, host_array: Any) -> Any:
        """A host NumPy array as a parameter on this layer's placement (NumPy until moved)."""
        return host_array if self.placement is None else B.from_numpy(host_array, self.placement)


def sub_seed(seed: int | tuple[int, ...], k: int) -> tuple[int, ...]:
    """The ``k``-th derived seed of ``seed`` (one per parameter of a layer)."""
    return ((seed,) if isinstance(seed, int) else tuple(seed)) + (k,)


def uniform_init(seed: int | tuple[int, ...] | None, shape: tuple[int, ...], fan_in: int) -> Any:
    """PyTorch's default init for conv and linear layers: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, float32.

    Raises :class:`~xpcnn.errors.ResourceError` if ``shape`` needs more than this machine's memory (the values
    are drawn in float64 first)."""
    check_parameter_memory(shape, itemsize=8)
    key = next_seed() if seed is None else ((seed,) if isinstance(seed, int) else tuple(seed))
    bound = 1.0 / fan_in ** 0.5
    return B.random.uniform_host(key, shape, -bound, bound).astype("float32")
