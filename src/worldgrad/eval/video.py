"""Episode videos for people: frames upscaled with nearest-neighbour and a caption strip."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np


def annotate(frame: np.ndarray, text: str, scale: int = 4) -> np.ndarray:
    """Upscales a (H, W, 3) uint8 frame by ``scale`` and writes ``text`` in a strip above it."""
    big = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    strip = np.full((22, big.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, big], axis=0)


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Writes an mp4 (H.264 through imageio-ffmpeg), or a gif when ``path`` ends in .gif."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1.0 / fps, loop=0)
    else:
        # macro_block_size=1 keeps odd sizes (e.g. 256 + caption) without rescaling.
        imageio.mimsave(path, list(frames), fps=fps, codec="libx264", macro_block_size=1, quality=7)
    return path
