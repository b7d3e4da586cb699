"""The project's exception tree. Every user-facing mistake raises one of these, and each
console script turns it into a one-line message and a non-zero exit (see ``pvae.cli``).

    PVAEError
    ├── ConfigError             a config field is out of range or unknown
    ├── DataError               a dataset is missing, empty or unreadable
    ├── CheckpointError         a checkpoint is missing, truncated, foreign or unsafe
    ├── BundleError             an export bundle is missing, corrupt or inconsistent
    ├── DeviceError             the requested device (e.g. CUDA) is not available
    ├── InputError              a request has a bad shape, dtype, size or encoding
    ├── TrainingDivergedError   a training loss became NaN or infinite (the last good checkpoint is kept)
    └── MissingDependencyError  an optional extra is not installed
"""


class PVAEError(Exception):
    """Base class of every error that pvae raises on purpose."""


class ConfigError(PVAEError, ValueError):
    """A configuration field is invalid; the message names the field and the limit."""


class DataError(PVAEError):
    """A dataset is missing, empty or unreadable."""


class CheckpointError(PVAEError):
    """A checkpoint file is missing, truncated, foreign or unsafe to load."""


class BundleError(PVAEError):
    """An export bundle is missing, corrupt or inconsistent with its manifest."""


class DeviceError(PVAEError):
    """The requested compute device is not available."""


class InputError(PVAEError, ValueError):
    """An input has a bad shape, dtype, size or encoding."""


class TrainingDivergedError(PVAEError):
    """A training run produced a NaN or infinite loss or gradient; nothing after it was saved."""


class MissingDependencyError(PVAEError, ImportError):
    """An optional dependency (an extra such as ``pvae[train]``) is not installed."""
