"""Image conventions shared by every model: uint8 (..., H, W, 3) on disk, float (..., 3, H, W) in [-1, 1] in nets."""

from __future__ import annotations

import numpy as np
import torch


def to_model(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1]. Float input is assumed converted already."""
    x = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames, device=device)
    if x.dtype != torch.uint8:
        return x
    if x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (..., H, W, 3), got {tuple(x.shape)}")
    return x.movedim(-1, -3).float().div(127.5).sub(1.0)


def changed_pixels(a: np.ndarray, b: np.ndarray, threshold: int = 24) -> np.ndarray:
    """Pixels whose colour differs by more than ``threshold`` (any channel) between uint8 frames (B, H, W, 3)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1)
    return (diff > threshold).sum((1, 2))
