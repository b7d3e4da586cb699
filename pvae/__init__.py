"""pvae: the Poisson Variational Autoencoder, from training to a streaming gRPC service.

Subpackages (each maps onto a top-level folder of the repository):

- ``pvae.training``: model, sampling, loss, schedules, data, checkpoints, training loop, evaluation.
- ``pvae.export``: checkpoint -> ONNX / TorchScript bundle, with parity verification.
- ``pvae.serving``: the gRPC streaming encoder service.
- ``pvae.clients``: Python client library and CLI.
"""

from importlib.metadata import PackageNotFoundError, version

from pvae.errors import (
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    InputError,
    MissingDependencyError,
    PVAEError,
)

try:
    __version__ = version("pvae")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = [
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "InputError",
    "MissingDependencyError",
    "PVAEError",
    "__version__",
]
