"""Pictures of results: model input | reconstruction | spike-count map, side by side, one BGR image.

Like is compared with like: the model reconstructs its *input*, the whitened and contrast-normalised
frame, not the camera picture, so that is what sits beside the reconstruction.

- (optional) camera: the frame as sent (BT.601 gray, as the server converts colour);
- model input: the whitened, contrast-normalised frame the encoder sees;
- reconstruction: the mean reconstruction decoded from the rates, in the same display scale;
- spike counts: total spikes per patch, one P x P block per patch, inferno colour map on a log
  scale whose top follows the recent maximum (so the colours do not flicker frame to frame).

Model-space images travel as uint8 ``clip(round(32 v) + 128, 0, 255)``. With ``stretch`` both
model-space panels are shown with one shared gain that maps the 99th percentile of |v| in the model
input to full scale, so a faint reconstruction is visible without favouring either panel.

A label bar names the panels and shows the frame number, its spike total and the explained variance
of the frame, 1 - sum (v_in - v_rec)^2 / sum v_in^2 in model space (from the 8-bit images). The image
size is kept even, which the mp4v encoder needs.

    >>> renderer = SideBySide()
    >>> picture = renderer.render(result)          # result from stream(..., keep_inputs=True)
"""

from __future__ import annotations

import cv2
import numpy as np

from .frames import to_gray
from .results import FrameResult

__all__ = ["LABEL_BAR_HEIGHT", "SideBySide", "explained_variance", "model_space", "spike_map_image"]

#: Height of the label bar above the panels, in pixels.
LABEL_BAR_HEIGHT = 22
#: Gap between panels, in pixels.
PANEL_GAP = 4
#: Colours (BGR).
BACKGROUND = (24, 24, 24)
LABEL_COLOUR = (235, 235, 235)
ERROR_COLOUR = (40, 40, 200)
#: Label font (Hershey simplex at this scale is ~12 px tall).
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
#: The colour map of the spike panel (perceptually uniform, dark = silent).
SPIKE_COLOURMAP = cv2.COLORMAP_INFERNO
#: The spike scale decays by this factor per frame towards the current maximum (~1 s at 30 fps).
SCALE_DECAY = 0.97
#: Smallest top of the spike scale (spikes per patch), so a silent frame is not stretched to full colour.
MIN_SCALE = 4.0


#: Model-space images are uint8 128 + 32 v (the server's display scale, serving/ and export/).
MODEL_SPACE_OFFSET, MODEL_SPACE_GAIN = 128.0, 32.0
#: Percentile of |v| in the model input that --stretch maps to full scale.
STRETCH_PERCENTILE = 99.0


def model_space(image: np.ndarray) -> np.ndarray:
    """A uint8 model-space image back to float64 values v (approximately; clipped at about +-4)."""
    return (image.astype(np.float64) - MODEL_SPACE_OFFSET) / MODEL_SPACE_GAIN


def explained_variance(preprocessed: np.ndarray | None, reconstruction: np.ndarray | None) -> float | None:
    """1 - sum (v_in - v_rec)^2 / sum v_in^2 over a frame, from the uint8 model-space images; None
    when either is missing or the input is flat. 1 is perfect, 0 is no better than all zeros."""
    if preprocessed is None or reconstruction is None or preprocessed.shape != reconstruction.shape:
        return None
    target = model_space(preprocessed)
    energy = float((target * target).sum())
    if energy <= 0:
        return None
    return 1.0 - float(((target - model_space(reconstruction)) ** 2).sum()) / energy


def _stretched(image: np.ndarray, scale: float) -> np.ndarray:
    level = np.clip(model_space(image) / scale, -1.0, 1.0)
    return np.round(MODEL_SPACE_OFFSET + 127.0 * level).astype(np.uint8)


def _even(value: int) -> int:
    return value + (value % 2)


def spike_map_image(spikes: np.ndarray, height: int, width: int, scale: float) -> np.ndarray:
    """(R, C) spikes per patch -> uint8 (height, width, 3) BGR blocks, log-scaled to ``scale``."""
    level = np.log1p(spikes.astype(np.float64)) / np.log1p(max(scale, 1.0))  # (R, C) in [0, ~1]
    grey = np.clip(np.round(255 * level), 0, 255).astype(np.uint8)
    rows, cols = spikes.shape
    patch_h, patch_w = -(-height // rows), -(-width // cols)  # patches cover the frame (ceil division)
    blocks = np.repeat(np.repeat(grey, patch_h, axis=0), patch_w, axis=1)[:height, :width]
    return cv2.applyColorMap(np.ascontiguousarray(blocks), SPIKE_COLOURMAP)


def _bgr(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


class SideBySide:
    """Renders results into one picture (stateful: the spike colour scale follows recent frames).

    ``show_camera`` adds the frame as sent in front; ``stretch`` shows the model-space panels with a
    shared contrast stretch. ``last_explained_variance`` holds the value of the last rendered frame.
    """

    def __init__(self, show_camera: bool = False, stretch: bool = False) -> None:
        self.show_camera = show_camera
        self.stretch = stretch
        self.last_explained_variance: float | None = None
        self._scale = MIN_SCALE

    @property
    def labels(self) -> tuple[str, ...]:
        """Panel titles, left to right."""
        first = ("camera",) if self.show_camera else ()
        model = ("model input (stretched)", "reconstruction (stretched)") if self.stretch else (
            "model input", "reconstruction")
        return (*first, *model, "spike counts")

    def render(self, result: FrameResult, frame: np.ndarray | None = None) -> np.ndarray | None:
        """uint8 (H', W', 3) BGR for a frame's result; None for a pure drop report.

        ``frame`` is the input frame (default ``result.input``). Missing outputs leave their panel dark.
        """
        if result.is_drop_report:
            return None
        source = frame if frame is not None else result.input
        height = result.height or (source.shape[0] if source is not None else 0)
        width = result.width or (source.shape[1] if source is not None else 0)
        if height == 0 or width == 0:
            return None
        blank = np.zeros((height, width, 3), dtype=np.uint8)
        panels: list[np.ndarray] = []
        if self.show_camera:
            fits = source is not None and source.shape[:2] == (height, width)
            panels.append(_bgr(to_gray(source)) if fits and source is not None else blank)
        pre, rec = result.preprocessed, result.reconstruction
        self.last_explained_variance = explained_variance(pre, rec)
        if self.stretch and pre is not None:
            scale = max(float(np.percentile(np.abs(model_space(pre)), STRETCH_PERCENTILE)), 1.0 / MODEL_SPACE_GAIN)
            pre = _stretched(pre, scale)
            rec = _stretched(rec, scale) if rec is not None else None
        panels.append(_bgr(pre) if pre is not None else blank)
        panels.append(_bgr(rec) if rec is not None else blank)
        spikes = result.spike_map
        if spikes is not None:
            peak = float(spikes.max()) if spikes.size else 0.0
            self._scale = max(MIN_SCALE, peak, self._scale * SCALE_DECAY)
            panels.append(spike_map_image(spikes, height, width, self._scale))
        else:
            panels.append(blank)
        return self._compose(panels, result)

    def _compose(self, panels: list[np.ndarray], result: FrameResult) -> np.ndarray:
        height, width = panels[0].shape[:2]
        total_w = _even(len(panels) * width + (len(panels) - 1) * PANEL_GAP)
        total_h = _even(LABEL_BAR_HEIGHT + height)
        canvas = np.empty((total_h, total_w, 3), dtype=np.uint8)
        canvas[:] = BACKGROUND
        baseline = LABEL_BAR_HEIGHT - 7
        for index, (panel, label) in enumerate(zip(panels, self.labels, strict=True)):
            left = index * (width + PANEL_GAP)
            canvas[LABEL_BAR_HEIGHT:LABEL_BAR_HEIGHT + height, left:left + width] = panel
            cv2.putText(canvas, label, (left + 4, baseline), FONT, FONT_SCALE, LABEL_COLOUR, 1, cv2.LINE_AA)
        if result.error is not None:
            status, colour = f"#{result.sequence} error: {result.error.code.name}", ERROR_COLOUR
        else:
            spikes = int(result.counts.sum()) if result.counts is not None else None
            status = f"#{result.sequence}" + (f"  {spikes} spikes" if spikes is not None else "")
            if self.last_explained_variance is not None:
                status += f"  EV {self.last_explained_variance:.2f}"
            colour = LABEL_COLOUR
        (text_w, _), _ = cv2.getTextSize(status, FONT, FONT_SCALE, 1)
        cv2.putText(canvas, status, (max(0, total_w - text_w - 4), baseline), FONT, FONT_SCALE, colour, 1,
                    cv2.LINE_AA)
        return canvas
