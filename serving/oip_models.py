"""The models pvae-serve exposes over the Open Inference Protocol, as metadata and Triton configs.

Four models over one bundle (K = n_latents, D = patch_size**2); pvae.serving.oip documents their
tensors. :func:`model_specs` describes them once; ModelMetadata, ModelConfig (and the Triton model
repository that ``pvae-export --triton`` writes) are rendered from that description.

    >>> specs = model_specs(n_latents=512, patch_dim=256)
    >>> [t.name for t in specs["pvae_rates"].outputs]
    ['rates', 'log_rates']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pvae.bundle import SAMPLER_MAX_RATE
from pvae.inference import grpc_service_pb2 as oip
from pvae.inference import model_config_pb2 as mc
from pvae.serving.options import MAX_SEED, FloatFormat

__all__ = [
    "DATATYPES",
    "FLOAT_DATATYPE",
    "FRAME_CHANNELS",
    "MODEL_NAMES",
    "MODEL_VERSION",
    "PLATFORM",
    "SERVICE_NAME",
    "ModelSpec",
    "TensorSpec",
    "model_config",
    "model_metadata",
    "model_parameters",
    "model_specs",
]

#: The full service name, as health checks and reflection know it.
SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: The only version of each model (a server serves one bundle).
MODEL_VERSION = "1"
#: Exposed models, in listing order.
MODEL_NAMES = ("pvae_rates", "pvae_counts", "pvae_frame", "pvae_preprocess")
#: OIP datatype -> (numpy dtype, typed-contents field or None when only raw is accepted, config enum).
DATATYPES: dict[str, tuple[np.dtype[Any], str | None, int]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents", mc.TYPE_FP32),
    "FP16": (np.dtype("<f2"), None, mc.TYPE_FP16),
    "INT64": (np.dtype("<i8"), "int64_contents", mc.TYPE_INT64),
    "INT32": (np.dtype("<i4"), "int_contents", mc.TYPE_INT32),
    "UINT8": (np.dtype("u1"), "uint_contents", mc.TYPE_UINT8),
}
#: Datatype of rates and log-rates on the wire for each float format.
FLOAT_DATATYPE = {FloatFormat.FP16: "FP16", FloatFormat.FP32: "FP32"}
#: What ModelMetadata and ModelConfig call the platform of the exposed models.
PLATFORM = "onnxruntime_onnx"
#: Channels a colour ``frame`` may have (its third dimension).
FRAME_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an exposed model, as ModelMetadata and ModelConfig describe it."""

    name: str
    datatype: str
    """OIP datatype string (FP32, FP16, INT64, INT32, UINT8); outputs FP16 may be returned as FP32."""
    shape: tuple[int, ...]
    """-1 for a dimension the request chooses."""
    optional: bool = False
    description: str = ""
    """What the tensor holds or expects (ModelConfig parameter ``input.NAME`` / ``output.NAME``)."""
    colour: bool = False
    """A frame: [H, W] gray, or also [H, W, C] with C in FRAME_CHANNELS."""


@dataclass(frozen=True)
class ModelSpec:
    """One exposed model."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


def model_specs(n_latents: int, patch_dim: int, patch_shape: tuple[int, int] | None = None,
                min_side: int | None = None) -> dict[str, ModelSpec]:
    """The four models for a bundle with ``n_latents`` latents and ``patch_dim``-pixel patches
    (``patch_shape`` (ph, pw) and ``min_side`` only enter the descriptions)."""
    k = n_latents
    ph, pw = patch_shape or (math.isqrt(patch_dim), patch_dim // max(math.isqrt(patch_dim), 1))
    side = min_side or max(ph, pw)
    grid = (f"R = ceil(H / {ph}) rows and C = ceil(W / {pw}) columns of {ph}x{pw} patches, row-major "
            "(patch r*C + c); the response parameters grid_rows and grid_cols hold R and C")
    floats = ('float16 by default; request parameter float_format "fp32" returns FP32, equal to the graph '
              "bit for bit")
    frame_help = (f"one uint8 frame: [H, W] grayscale, or [H, W, 3] / [H, W, 4] colour (to gray by BT.601 luma; "
                  f'request parameter channel_order "bgr", the default, or "rgb"); each side at least {side} pixels')
    frame = TensorSpec("frame", "UINT8", (-1, -1), description=frame_help, colour=True)
    rates = TensorSpec("rates", "FP16", (-1, k), description=f"Poisson firing rates per patch and latent, {floats}")
    log_rates = TensorSpec("log_rates", "FP16", (-1, k), description=f"natural log of the rates, {floats}")
    counts = TensorSpec("counts", "INT32", (-1, k),
                        description="exact Poisson spike counts, drawn with the seed the response parameter seed "
                                    "reports")
    patches_help = (f"whitened model-space patches, float32 [N, {patch_dim}] ({ph}x{pw}, flattened row by row): "
                    "not pixels. A frame's patches come from the model pvae_preprocess; raw pixels give "
                    "meaningless rates")
    specs = (
        ModelSpec("pvae_rates", (TensorSpec("patches", "FP32", (-1, patch_dim), description=patches_help),),
                  (rates, log_rates),
                  "model-space patches -> Poisson firing rates and log-rates (the deterministic rate path); "
                  "get a frame's patches from pvae_preprocess"),
        ModelSpec("pvae_counts",
                  (TensorSpec("rates", "FP32", (-1, k), description=f"Poisson means [N, {k}], finite, in "
                              f"[0, {SAMPLER_MAX_RATE:g}] (pvae_rates' rates as FP32)"),
                   TensorSpec("seed", "INT64", (1,), description=f"sampler seed 0 .. {MAX_SEED} (required): the "
                              "same rates and seed give the same counts on every device")),
                  (counts,),
                  "rates and a seed -> exact Poisson spike counts (the bundle's counter-based sampler)"),
        ModelSpec("pvae_frame",
                  (frame, TensorSpec("seed", "INT64", (1,), True, description="sampler seed 0 .. "
                                     f"{MAX_SEED} (optional: a random one is drawn and reported)")),
                  (TensorSpec(rates.name, rates.datatype, rates.shape, description=f"{rates.description}; {grid}"),
                   log_rates, counts,
                   TensorSpec("reconstruction", "UINT8", (-1, -1), description="the mean reconstruction [H, W], "
                              "model space shown as clip(round(128 + 32 x), 0, 255)")),
                  "one uint8 frame -> patch-wise rates, spike counts and the mean reconstruction"),
        ModelSpec("pvae_preprocess", (frame,),
                  (TensorSpec("patches", "FP32", (-1, patch_dim), description=f"the frame's whitened model-space "
                              f"patches, float32 [R*C, {patch_dim}]: {grid}; the input pvae_rates expects"),),
                  "one uint8 frame -> its whitened model-space patches for pvae_rates (the frame graph's own "
                  "preprocessing: /255, whitening, local contrast normalisation, z-score; reflect-padded at the "
                  "bottom and right to whole patches)"),
    )
    return {spec.name: spec for spec in specs}


def model_metadata(model: ModelSpec, platform: str = PLATFORM) -> oip.ModelMetadataResponse:
    """ModelMetadata of an exposed model."""
    tensor = oip.ModelMetadataResponse.TensorMetadata
    return oip.ModelMetadataResponse(
        name=model.name, versions=[MODEL_VERSION], platform=platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs])


def model_config(model: ModelSpec, group: mc.ModelInstanceGroup, platform: str = PLATFORM,
                 backend: str = "onnxruntime", description: str | None = None) -> mc.ModelConfig:
    """Triton's description of an exposed model: no batch dimension (each request is one call), one
    instance ``group``, not decoupled. An empty ``backend`` leaves the field unset."""
    return mc.ModelConfig(
        name=model.name, platform=platform, backend=backend, max_batch_size=0,
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
        input=[mc.ModelInput(name=t.name, data_type=DATATYPES[t.datatype][2], dims=t.shape, optional=t.optional)
               for t in model.inputs],
        output=[mc.ModelOutput(name=t.name, data_type=DATATYPES[t.datatype][2], dims=t.shape)
                for t in model.outputs],
        instance_group=[group],
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=False),
        parameters=model_parameters(model, description))


def model_parameters(model: ModelSpec, description: str | None = None) -> dict[str, mc.ModelParameter]:
    """ModelConfig parameters that describe a model: ``description``, and ``input.NAME`` / ``output.NAME``
    for each tensor that has a description."""
    texts = {"description": model.description if description is None else description}
    texts.update({f"input.{t.name}": t.description for t in model.inputs if t.description})
    texts.update({f"output.{t.name}": t.description for t in model.outputs if t.description})
    return {key: mc.ModelParameter(string_value=text) for key, text in texts.items()}
