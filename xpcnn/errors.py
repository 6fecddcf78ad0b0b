"""Error types raised by xpcnn; each message says what was wrong and what to do."""

from __future__ import annotations


class XpcnnError(Exception):
    """Base class for every error xpcnn raises on purpose."""


class ShapeError(XpcnnError, ValueError):
    """An array has the wrong rank, size or channel count for a layer."""


class BackendMismatchError(XpcnnError, TypeError):
    """Arrays from two backends (or two devices) met in one operation."""


class BackendUnavailableError(XpcnnError, RuntimeError):
    """A backend library is not installed or cannot run here."""


class DeviceUnavailableError(XpcnnError, RuntimeError):
    """A device was named that does not exist or cannot be used here."""


class LabelError(XpcnnError, ValueError):
    """Class labels are not integers in [0, num_classes)."""


class DataError(XpcnnError, ValueError):
    """A data file is missing, corrupt or truncated."""


class CheckpointError(XpcnnError, ValueError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


class ResourceError(XpcnnError, MemoryError):
    """A model, batch or array would need more memory than this machine has (refused before allocating it)."""


class DTypeError(XpcnnError, TypeError):
    """An array has a dtype the operation does not take (integer logits, integer images into a model)."""


class XpcnnWarning(UserWarning):
    """Base class for xpcnn's warnings: something looks wrong, but xpcnn carries on (the ``xpcnn`` command
    prints each as one line on stderr)."""


class DataWarning(XpcnnWarning):
    """A data file or image is unusual (a dataset file with an unknown checksum, a blank image)."""


class DistributedError(XpcnnError, RuntimeError):
    """Data-parallel training cannot start or go on: no MPI, ranks started differently, a rank that stopped
    answering."""
