"""A small convolutional image encoder (DreamerV3-style: stride-2 convs, norm, SiLU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ConvEncoderConfig:
    """Conv encoder: each stage halves the resolution and uses ``depth * mult`` channels."""

    depth: int = 32
    """channels of the first stage"""
    mults: tuple[int, ...] = (1, 2, 4, 4)
    """channel multipliers per stage (stride 2 each)"""
    out_dim: int = 256
    """size of the output embedding"""


class ConvEncoder(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, out_dim). H and W must be divisible by 2 ** len(mults)."""

    def __init__(self, cfg: ConvEncoderConfig, image_size: int) -> None:
        super().__init__()
        stride = 2 ** len(cfg.mults)
        if image_size % stride:
            raise ValueError(f"image size {image_size} must be divisible by {stride} for {len(cfg.mults)} stages")
        layers: list[nn.Module] = []
        c_in = 3
        for m in cfg.mults:
            c_out = cfg.depth * m
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.GroupNorm(1, c_out), nn.SiLU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in * (image_size // stride) ** 2, cfg.out_dim)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"encoder expects images (B, 3, {self.image_size}, {self.image_size}), got {tuple(x.shape)}; "
                "the store's image size must match the model's"
            )
        return self.proj(self.convs(x).flatten(1))
