"""The torch modules that become the bundle's graphs (ONNX and TorchScript alike).

Each module is one deterministic path of a trained VAE, written so that the dynamo ONNX exporter
and ``torch.jit.script`` both accept it (no dataclasses in ``forward``, ints as attributes)::

    FramePreprocess  frames uint8 (B, H, W)       -> preprocessed float32 (B, H, W)
    RatePath         patches float32 (N, D)       -> log_rates, rates float32 (N, K)
    DecoderPath      latents float32 (N, K)       -> patches float32 (N, D)
    FramePath        frames uint8 (B, H, W)       -> preprocessed, log_rates, rates, reconstruction,
                                                     preprocessed_u8, reconstruction_u8

The rate formula is the model's own (its soft clamps rewritten in closed form, see ``RatePath``;
``RATE_FLOOR`` is imported from ``pvae.training.model``); the preprocessing is
``pvae.training.data.preprocess_image`` rebuilt from reflect padding, separable and low-rank
correlations and per-frame means, in float32 (see ``FramePreprocess``). The parity tests compare each
module with ``VAE.encode``/``VAE.decode`` and ``preprocess_image``, so a change there that is not
mirrored here fails loudly.

    >>> paths = build_paths(build_model(load_checkpoint("best.pt")), preprocessing)
    >>> log_rates, rates = paths.rates(torch.randn(8, 256))          # (8, K) each
"""

# No `from __future__ import annotations` here: TorchScript resolves the class-level attribute
# annotations (`enabled: bool`, ...) at runtime and rejects them as strings.

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvae.errors import CheckpointError
from pvae.training.data import (
    LCN_EPSILON,
    UINT8_MAX,
    ZSCORE_EPSILON,
    PatchConfig,
    gaussian_kernel,
    whitening_kernel,
)
from pvae.training.model import RATE_FLOOR, VAE, PoissonLatent

__all__ = [
    "DISPLAY_OFFSET",
    "DISPLAY_SCALE",
    "SUPPORTED_DECODERS",
    "SUPPORTED_ENCODERS",
    "DecoderPath",
    "ExportPaths",
    "FramePath",
    "FramePolicy",
    "FramePreprocess",
    "RatePath",
    "build_paths",
    "frame_policy",
    "to_display_u8",
]

#: uint8 display mapping of model-space images (z-scored, so mostly within +-4):
#: u8 = clip(round(DISPLAY_SCALE * x) + DISPLAY_OFFSET, 0, 255). Stored in the manifest "display". The scale is
#: a power of two and the offset an even integer, so this is ONNX QuantizeLinear(x, 1 / scale, offset) exactly
#: (the exporter writes it as that one op).
DISPLAY_OFFSET = 128.0
DISPLAY_SCALE = 32.0
#: Encoder and decoder kinds (ModelConfig.arch) that export; every kind the model offers today.
SUPPORTED_ENCODERS = ("lin", "conv", "conv+b")
SUPPORTED_DECODERS = ("lin", "conv")


def to_display_u8(x: Tensor, offset: float = DISPLAY_OFFSET, scale: float = DISPLAY_SCALE) -> Tensor:
    """The fixed display mapping clip(round(32 x) + 128, 0, 255) as uint8 (round half to even, as
    torch.round and ONNX QuantizeLinear both do; 32 x is exact, so this equals round(32 x + 128)
    except where that sum itself rounds). Constants are arguments: TorchScript cannot read
    module-level floats."""
    return torch.clamp(torch.round(x * scale) + offset, 0.0, 255.0).to(torch.uint8)


# ----------------------------------------------------------------------------- frame policy


@dataclass(frozen=True)
class FramePolicy:
    """How a frame of any size becomes a grid of patches and back (stored as manifest "frame_policy").

    Frames whose sides are not multiples of the patch size are reflect-padded (reflect-101, ONNX Pad
    mode="reflect") at the bottom and right up to the next multiple, encoded, decoded, untiled and
    cropped back to H x W: R = ceil(H / patch_height) rows and C = ceil(W / patch_width) columns of
    patches in row-major order (patch index = r * C + c). A 640x480 VGA frame gives 40 x 30 = 1200.
    """

    patch_shape: tuple[int, int]
    """(height, width) of one patch: the model's input shape."""
    min_side: int
    """Smallest frame side: one whole patch, and larger than every reflect pad (kernel half-widths
    and the grid pad), which reflect padding requires."""
    preprocessing: bool
    """Whether the frame graph applies the training preprocessing (whitening, LCN, z-score)."""

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(R, C): patch rows and columns of an H x W frame."""
        return math.ceil(height / self.patch_shape[0]), math.ceil(width / self.patch_shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "pad_mode": "reflect",
            "pad_sides": "bottom,right",
            "patch_shape": list(self.patch_shape),
            "patch_grid": "R = ceil(H / patch_height), C = ceil(W / patch_width); row-major, index r*C + c",
            "crop": "reconstructions are untiled and cropped back to H x W",
            "min_side": self.min_side,
            "preprocessing": self.preprocessing,
        }


def frame_policy(patch_shape: tuple[int, int], preprocessing: PatchConfig | None) -> FramePolicy:
    """The frame policy of a model with this patch shape and preprocessing."""
    # A reflect pad of p needs a side > p. The grid pad is at most patch side - 1, so a side of at
    # least one patch satisfies it; the whitening and LCN kernels pad by their half-widths.
    min_side = max(patch_shape)
    if preprocessing is not None:
        min_side = max(min_side, preprocessing.whiten_size // 2 + 1, preprocessing.lcn_size // 2 + 1)
    return FramePolicy(tuple(patch_shape), min_side, preprocessing is not None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- modules


#: Output phases of the polyphase correlations in FramePreprocess: one strided Conv computes a block
#: of neighbouring outputs as as many output channels. The whitening uses WHITEN_PHASES x WHITEN_PHASES
#: blocks (16 channels), the separable Gaussian rows of LCN_PHASES columns.
WHITEN_PHASES = 4
LCN_PHASES = 16


def polyphase_kernel(kernel: np.ndarray, phase_rows: int, phase_cols: int) -> Tensor:
    """A (kh, kw) correlation kernel as a float32 (phase_rows * phase_cols, 1, kh + phase_rows - 1,
    kw + phase_cols - 1) Conv weight whose output channel a * phase_cols + b is the kernel shifted down
    by a rows and right by b columns (zeros elsewhere).

    A Conv with this weight and stride (phase_rows, phase_cols) computes output (phase_rows * i + a,
    phase_cols * j + b) as channel a * phase_cols + b of position (i, j): the same sums as a plain
    correlation, but every output channel is useful, so ONNX Runtime's blocked (NCHWc) CPU convolution
    does no wasted work; a single-channel output would be padded to a whole block of channels.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    height, width = kernel.shape
    weight = np.zeros((phase_rows * phase_cols, 1, height + phase_rows - 1, width + phase_cols - 1), np.float32)
    for a in range(phase_rows):
        for b in range(phase_cols):
            weight[a * phase_cols + b, 0, a : a + height, b : b + width] = kernel
    return torch.as_tensor(weight)


def _vertical_kernel(profile: np.ndarray, phases: int) -> Tensor:
    """A 1-D column profile (k,) as a float32 (phases, 1, k, 1) depthwise Conv weight."""
    column = np.asarray(profile, dtype=np.float32).reshape(1, 1, -1, 1)
    return torch.as_tensor(np.repeat(column, phases, axis=0))


def gaussian_profile(size: int, sigma: float) -> np.ndarray:
    """The 1-D factor g of ``gaussian_kernel(size, sigma)`` = outer(g, g) (float64, sums to 1)."""
    window = gaussian_kernel(size, sigma)
    profile = window.sum(axis=1)  # outer(g, g).sum(axis=1) = g * sum(g) = g
    return profile / profile.sum()


class FramePreprocess(nn.Module):
    """frames uint8 (B, H, W) -> model-space frames float32 (B, H, W), as ``preprocess_image``.

    frames / 255 -> centring -> whitening correlation -> local contrast normalisation -> per-frame
    z-score, all with reflect-101 borders (F.pad mode="reflect" exports as ONNX Pad mode="reflect").
    With ``config=None`` (models trained on images in [0, 1]) it only scales to [0, 1].

    The correlations are exact (no approximation of either kernel), arranged for speed:

    - whitening (15x15, rank 8, not separable): one polyphase Conv over 4 x 4 output blocks
      (``polyphase_kernel``) and a pixel shuffle (DepthToSpace) back;
    - Gaussian windows (13x13 = outer(g, g)): a horizontal polyphase Conv with the 1-D g over blocks of
      16 columns, then a vertical depthwise Conv with g on the 16 phase channels.

    Measured on a 2-core CPU (ONNX Runtime 1.32, one VGA frame, 1 thread, docs/benchmarks.md): the 15x15
    as a plain Conv ~12-25 ms, as the sum of its 8 separable SVD passes ~15 ms, polyphase 1 x 16
    ~2.4 ms, 4 x 4 ~1.8 ms; a Gaussian as a plain Conv ~12-25 ms, polyphase-separable ~0.6 ms.

        >>> pre = FramePreprocess(PatchConfig())
        >>> pre(torch.zeros(2, 48, 64, dtype=torch.uint8)).shape    # (2, 48, 64)
    """

    whiten_weight: Tensor
    whiten_bias: Tensor
    lcn_row_weight: Tensor
    lcn_column_weight: Tensor
    lcn_bias: Tensor
    enabled: bool
    pixel_scale: float
    whiten_phases: int
    lcn_phases: int
    whiten_pad: int
    lcn_pad: int
    lcn_epsilon: float
    zscore_epsilon: float
    zscore_floor: float

    def __init__(self, config: PatchConfig | None) -> None:
        super().__init__()
        self.enabled = config is not None
        self.pixel_scale = UINT8_MAX
        self.whiten_phases = WHITEN_PHASES
        self.lcn_phases = LCN_PHASES
        whiten = whitening_kernel(config.whiten_f0, config.whiten_size) if config else np.zeros((1, 1))
        profile = gaussian_profile(config.lcn_size, config.lcn_sigma) if config else np.ones(1)
        p, q = self.whiten_phases, self.lcn_phases
        # (p*p, 1, kw + p - 1, kw + p - 1), scaled by 1 / 255: forward feeds it pixels in [0, 255]
        self.register_buffer("whiten_weight", polyphase_kernel(whiten / UINT8_MAX, p, p))
        self.register_buffer("lcn_row_weight", polyphase_kernel(profile[None, :], 1, q))  # (q, 1, 1, kl + q - 1)
        self.register_buffer("lcn_column_weight", _vertical_kernel(profile, q))  # (q, 1, kl, 1)
        # Explicit zero biases: without one the exporter derives the bias from the input (CastLike), and
        # ONNX Runtime's NCHWc layout pass, which needs a constant bias, then leaves the Conv unblocked.
        self.register_buffer("whiten_bias", torch.zeros(p * p))
        self.register_buffer("lcn_bias", torch.zeros(q))
        self.whiten_pad = whiten.shape[0] // 2
        self.lcn_pad = profile.shape[0] // 2
        self.lcn_epsilon = LCN_EPSILON
        self.zscore_epsilon = ZSCORE_EPSILON
        self.zscore_floor = float(config.zscore_floor) if config else 0.0

    def _whiten(self, x: Tensor) -> Tensor:
        """Correlate (B, 1, H, W) with the whitening kernel, reflect-101 border; 4 x 4 polyphase."""
        height, width = x.shape[2], x.shape[3]
        pad, phases = self.whiten_pad, self.whiten_phases
        # Reflect-101 border, then phases - 1 zero rows and columns below and right, so that the strided
        # Conv covers every pixel with ceil(H / p) x ceil(W / p) whole blocks; the zeros only reach outputs
        # that the crop below removes. The zero pad's amounts are constants, so ONNX Runtime folds it into
        # the Conv's own pads (its Pad + Conv fusion): one copy of the frame instead of two.
        padded = F.pad(F.pad(x, [pad, pad, pad, pad], mode="reflect"), [0, phases - 1, 0, phases - 1])
        blocks = F.conv2d(padded, self.whiten_weight, self.whiten_bias, stride=(phases, phases))  # (B, p*p, ., .)
        return F.pixel_shuffle(blocks, phases)[:, :, :height, :width]  # channel a*p + b -> offset (a, b)

    def _smooth(self, x: Tensor) -> Tensor:
        """Correlate (B, 1, H, W) with the LCN Gaussian, reflect-101 border; separable, rows polyphase."""
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        pad, phases = self.lcn_pad, self.lcn_phases
        # Reflect-101 border, then phases - 1 zero columns on the right, so that the row Conv covers every
        # column with G = ceil(W / q) whole groups (the zeros only reach the cropped columns); a constant
        # zero pad, which ONNX Runtime folds into the Conv (see _whiten).
        padded = F.pad(F.pad(x, [pad, pad, pad, pad], mode="reflect"), [0, phases - 1, 0, 0])
        rows = F.conv2d(padded, self.lcn_row_weight, self.lcn_bias, stride=(1, phases))  # (B, q, H + 2 pad, G)
        out = F.conv2d(rows, self.lcn_column_weight, self.lcn_bias, groups=phases)  # (B, q, H, G)
        # channel j of column i is output column q * i + j
        out = out.permute(0, 2, 3, 1).reshape(batch, 1, height, -1)  # (B, 1, H, q * G)
        return out[:, :, :, :width]

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.to(torch.float32).unsqueeze(1)  # (B, 1, H, W) in [0, 255]
        if not self.enabled:
            return x.squeeze(1) / self.pixel_scale
        # 0. centre (the whitening kernel has zero DC gain: this only removes float32 cancellation)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        # 1. whitening; the 1 / 255 of the [0, 1] pixel scale is folded into whiten_weight (linear)
        x = self._whiten(x)  # (B, 1, H, W)
        # 2. local contrast normalisation: centre by the local mean, divide by max(local std, its mean)
        local_mean = self._smooth(x)
        centred = x - local_mean
        local_var = self._smooth(centred * centred)
        local_std = torch.sqrt(torch.clamp(local_var, min=0.0))  # clamp absorbs filtering round-off
        floor = local_std.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1) per-frame mean of s
        x = centred / (torch.maximum(local_std, floor) + self.lcn_epsilon)
        # 3. per-frame z-score (std with ddof=0), the divisor floored at zscore_floor
        x = x - x.mean(dim=(2, 3), keepdim=True)
        std = torch.sqrt((x * x).mean(dim=(2, 3), keepdim=True))  # (B, 1, 1, 1)
        # squeezed before the division, so the division writes the (B, H, W) output itself (a Squeeze
        # of an output would be a copy)
        return x.squeeze(1) / (torch.clamp(std, min=self.zscore_floor) + self.zscore_epsilon).squeeze(1)


#: The rate path clamps -u (u: the encoder output) at this before Exp, so that e**-u stays finite.
#: It only binds for u < -80, where the rate is the floor RATE_FLOOR in torch and here alike; the
#: exported log-rate then bottoms out near log r - 80 instead of following log r + u further down.
NEG_ENCODING_LIMIT = 80.0


class RatePath(nn.Module):
    """The deterministic rate path x -> (log lambda, lambda) of a P-VAE (the paper's encoder and clamps).

    patches float32 (N, D) -> log_rates (N, K), rates (N, K). The model's formula (``pvae.training.model``)
    is log dr = sc_c1(u), log lambda = sc_c2(log r + log dr), lambda = exp(log lambda) + floor, with
    u = enc(x), sc_c(v) = c - softplus(c - v) = c + log sigmoid(v - c), c1 = 10, c2 = 5.3. Substituting
    sigmoid(z) = 1 / (1 + e**-z) twice gives the same numbers in closed form:

        exp(log lambda) = r / (e**-c1 + r e**-c2 + e**-u) = scale_k / (offset_k + e**-u)

    per latent k, with scale = r and offset = e**-c1 + r e**-c2 computed once in float64. So the graph is
    MatMul (by -W for the linear encoder, whose sign is folded into the weight) -> Min -> Exp -> Add ->
    Div -> (Log for log_rates, Add floor for rates): one Exp and one Log per element instead of two
    softplus chains. ONNX Runtime's CPU ``Softplus`` and ``Log`` kernels are scalar (Softplus ~60x, Log
    ~10x the cost of the vectorised Exp at 1200 x 512), so the fewer of them the better.

        >>> log_rates, rates = RatePath.from_model(model)(torch.randn(8, 256))
    """

    prior_log_rate: Tensor
    rate_scale: Tensor
    rate_offset: Tensor
    neg_weight_t: Tensor
    linear: bool
    input_dim: int
    log_modulation_clamp: float
    log_rate_clamp: float
    rate_floor: float
    neg_encoding_limit: float

    def __init__(
        self,
        encoder: nn.Module,
        prior_log_rate: Tensor,
        input_dim: int,
        log_modulation_clamp: float,
        log_rate_clamp: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        prior = prior_log_rate.detach().double().clone()  # (K,) log r
        self.register_buffer("prior_log_rate", prior.float())
        self.input_dim = input_dim
        self.log_modulation_clamp = float(log_modulation_clamp)
        self.log_rate_clamp = float(log_rate_clamp)
        self.rate_floor = RATE_FLOOR
        self.neg_encoding_limit = NEG_ENCODING_LIMIT
        offset = math.exp(-self.log_modulation_clamp) + torch.exp(prior - self.log_rate_clamp)
        self.register_buffer("rate_scale", torch.exp(prior).float())  # (K,) r
        self.register_buffer("rate_offset", offset.float())  # (K,)
        # A bias-free linear encoder: u = x W^T, so -u = x (-W^T), one MatMul with the sign folded in.
        self.linear = isinstance(encoder, nn.Linear) and encoder.bias is None
        weight = torch.zeros(0, 0)
        if isinstance(encoder, nn.Linear) and self.linear:
            weight = encoder.weight.detach().float()
        self.register_buffer("neg_weight_t", (-weight).t().contiguous())  # (D, K), or empty

    @classmethod
    def from_model(cls, model: VAE, encoder: nn.Module | None = None) -> "RatePath":
        """The rate path of ``model``; ``encoder`` overrides the encoder (e.g. a traced copy)."""
        latent = model.latent
        if not isinstance(latent, PoissonLatent):
            raise CheckpointError(
                f"only Poisson latents export (rate path + sampler); this model's latent family is {model.cfg.latent!r}"
            )
        return cls(
            model.encoder if encoder is None else encoder,
            latent.log_rate,
            model.cfg.input_dim,
            latent.log_modulation_clamp,
            latent.log_rate_clamp,
        )

    def rates_from_neg_encoding(self, neg_u: Tensor) -> tuple[Tensor, Tensor]:
        """(log lambda, lambda) from -u (N, K) float32, by the closed form of the class docstring."""
        shifted = torch.exp(torch.clamp(neg_u, max=self.neg_encoding_limit)) + self.rate_offset  # (N, K)
        rate = self.rate_scale / shifted  # exp(log lambda)
        return torch.log(rate), rate + self.rate_floor

    def neg_encoding(self, x: Tensor) -> Tensor:
        """-u for patches (..., D) -> (..., K). The linear encoder (its sign folded into its weight) keeps
        the leading axes as they are, so the frame path's (B, R*C, D) patches need no reshape copy;
        other encoders see (N, D) rows."""
        if self.linear:
            return torch.matmul(x, self.neg_weight_t)
        rows = -self.encoder(x.reshape(-1, self.input_dim)).float()  # (N, K)
        return rows.reshape(x.shape[:-1] + rows.shape[-1:])

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        x = patches.reshape(patches.shape[0], self.input_dim)  # (N, D)
        return self.rates_from_neg_encoding(self.neg_encoding(x))  # (N, K) each


class DecoderPath(nn.Module):
    """latents float32 (N, K) (counts or rates) -> patches float32 (N, D).

    >>> patches = DecoderPath(model.decoder)(rates)                 # (N, 256)
    """

    input_dim: int
    linear: bool

    def __init__(self, decoder: nn.Module, input_dim: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.input_dim = input_dim
        self.linear = isinstance(decoder, nn.Linear)

    def forward(self, latents: Tensor) -> Tensor:
        return self.decoder(latents).reshape(latents.shape[0], self.input_dim)  # (N, D)

    def decode(self, latents: Tensor) -> Tensor:
        """latents (..., K) -> (..., D). A linear decoder keeps the leading axes (no reshape copy)."""
        if self.linear:
            return self.decoder(latents)
        rows = self.decoder(latents.reshape(-1, latents.shape[-1])).reshape(-1, self.input_dim)  # (N, D)
        return rows.reshape(latents.shape[:-1] + rows.shape[-1:])


class FramePath(nn.Module):
    """Frames in, everything the server returns out; preprocessing, tiling and untiling included.

    frames uint8 (B, H, W) ->
      preprocessed float32 (B, H, W)           the model-space frame
      log_rates, rates float32 (B, R*C, K)     per patch, row-major (see FramePolicy)
      reconstruction float32 (B, H, W)         the decoded rates (mean reconstruction), cropped
      preprocessed_u8, reconstruction_u8 uint8 (B, H, W)  display mapping (to_display_u8)

        >>> outputs = FramePath(FramePreprocess(cfg), rate_path, decoder_path, (16, 16))(frames)
    """

    patch_height: int
    patch_width: int
    display_offset: float
    display_scale: float

    def __init__(
        self, preprocess: FramePreprocess, rate_path: RatePath, decoder_path: DecoderPath, patch_shape: tuple[int, int]
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.rate_path = rate_path
        self.decoder_path = decoder_path
        self.patch_height = int(patch_shape[0])
        self.patch_width = int(patch_shape[1])
        self.display_offset = DISPLAY_OFFSET
        self.display_scale = DISPLAY_SCALE

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        ph, pw = self.patch_height, self.patch_width
        batch, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
        preprocessed = self.preprocess(frames)  # (B, H, W)
        # Reflect-pad bottom/right up to whole patches (FramePolicy); pads are < one patch.
        pad_bottom = (ph - height % ph) % ph
        pad_right = (pw - width % pw) % pw
        padded = F.pad(preprocessed.unsqueeze(1), [0, pad_right, 0, pad_bottom], mode="reflect")
        rows = (height + pad_bottom) // ph
        cols = (width + pad_right) // pw
        # Tile: (B, 1, R*ph, C*pw) -> (B, R, ph, C, pw) -> (B, R, C, ph, pw) -> (B, R*C, ph*pw). The rate path
        # and decoder keep these three axes, so the outputs need no reshape (each would be a copy).
        patches = padded.reshape(batch, rows, ph, cols, pw).permute(0, 1, 3, 2, 4)
        patches = patches.reshape(batch, rows * cols, ph * pw)
        log_rates, rates = self.rate_path.rates_from_neg_encoding(self.rate_path.neg_encoding(patches))
        decoded = self.decoder_path.decode(rates)  # (B, R*C, ph*pw): the mean reconstruction
        # Untile: the inverse permutation, then crop the pad away.
        canvas = decoded.reshape(batch, rows, cols, ph, pw).permute(0, 1, 3, 2, 4)
        reconstruction = canvas.reshape(batch, rows * ph, cols * pw)[:, :height, :width]
        return (
            preprocessed,
            log_rates,  # (B, R*C, K)
            rates,
            reconstruction,
            to_display_u8(preprocessed, self.display_offset, self.display_scale),
            to_display_u8(reconstruction, self.display_offset, self.display_scale),
        )


# ----------------------------------------------------------------------------- assembly


@dataclass
class ExportPaths:
    """The three deterministic paths of one model, in eval mode, sharing the model's weights."""

    rates: RatePath
    decoder: DecoderPath
    frame: FramePath
    policy: FramePolicy


def check_exportable(model: VAE) -> None:
    """Raise CheckpointError unless the model's family and architecture can be exported."""
    cfg = model.cfg
    if cfg.latent != "poisson" or not isinstance(model.latent, PoissonLatent):
        raise CheckpointError(
            f"cannot export latent family {cfg.latent!r}: only 'poisson' (the P-VAE) has "
            "a rate path and an exact sampler"
        )
    if cfg.encoder not in SUPPORTED_ENCODERS or cfg.decoder not in SUPPORTED_DECODERS:
        raise CheckpointError(
            f"cannot export architecture {cfg.arch!r}: supported encoders "
            f"{', '.join(SUPPORTED_ENCODERS)}, decoders {', '.join(SUPPORTED_DECODERS)}"
        )


def build_paths(
    model: VAE, preprocessing: PatchConfig | None, encoder: nn.Module | None = None, decoder: nn.Module | None = None
) -> ExportPaths:
    """Wrap a VAE (eval mode) into its exportable paths. ``encoder``/``decoder`` replace the model's
    own (TorchScript passes traced copies here, since the conv nets are traceable, not scriptable)."""
    check_exportable(model)
    patch_shape = (int(model.cfg.input_shape[0]), int(model.cfg.input_shape[1]))
    if preprocessing is not None and (preprocessing.patch_size, preprocessing.patch_size) != patch_shape:
        raise CheckpointError(
            f"preprocessing patch_size {preprocessing.patch_size} does not match the model's input shape {patch_shape}"
        )
    rate_path = RatePath.from_model(model, encoder)
    decoder_path = DecoderPath(model.decoder if decoder is None else decoder, model.cfg.input_dim)
    frame = FramePath(FramePreprocess(preprocessing), rate_path, decoder_path, patch_shape)
    paths = ExportPaths(rate_path, decoder_path, frame, frame_policy(patch_shape, preprocessing))
    for module in (paths.rates, paths.decoder, paths.frame):
        module.eval()
    return paths
