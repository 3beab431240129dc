"""The global world model for Push-T: an EDM-preconditioned pixel diffusion U-Net (DIAMOND-style).

The denoiser predicts the next frame from the last ``context`` frames (concatenated on channels) and
the last ``context`` continuous actions (a linear embedding, fed with the noise level through adaptive
group norm: the only way conditioning enters the network, as in DIAMOND). Sampling is a few Euler or
Heun steps with clamping and 8-bit quantization of every denoised estimate, which keeps long rollouts
on the image manifold.

Differences from DIAMOND, all options with DIAMOND's behaviour available:
- ``stem`` > 1 folds s x s pixel blocks into channels (pixel-unshuffle) before the U-Net and unfolds at
  the end, so a 64x64 frame is processed at 32x32: about 4x cheaper per step at the same width. This is
  what makes a useful CPU model possible (the T and agent edges survive because the fold is lossless).
- Actions enter through one Linear over all ``context`` actions (DIAMOND: one embedding per step,
  flattened), a strict superset for continuous actions.
- ``motion_weight`` > 0 up-weights the loss on pixels that differ from the last context frame. A starved
  model first drops the small moving agent (4 px wide at 64x64); the weight makes it pay for that.
- Quantization rounds to the nearest level (DIAMOND truncates, a bias of half a level per step).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture and EDM settings of the denoiser."""

    image_size: int = 64
    """frame height and width"""
    context: int = 4
    """past frames and past actions the next frame is conditioned on (4 = 0.8 s at 5 Hz)"""
    action_dim: int = 2
    """continuous action dimension (actions in [-1, 1])"""
    channels: tuple[int, ...] = (32, 32, 64, 64)
    """U-Net width per level (each level but the last halves the resolution)"""
    depths: tuple[int, ...] = (1, 1, 1, 1)
    """residual blocks per encoder level (the decoder has one more, as in DIAMOND)"""
    cond_dim: int = 256
    """width of the noise-level + action conditioning vector"""
    stem: int = 1
    """pixel-unshuffle factor before the U-Net (2: the U-Net runs at half resolution)"""
    mid_attention: bool = False
    """self-attention in the two middle blocks (DIAMOND's Atari config has it)"""
    sigma_data: float = 0.5
    sigma_offset: float = 0.3
    """offset noise std (a per-image, per-channel constant shift added at training)"""
    train_log_sigma_mean: float = -0.4
    train_log_sigma_std: float = 1.2
    train_sigma_min: float = 2e-3
    train_sigma_max: float = 20.0
    motion_weight: float = 0.0
    """extra loss weight on pixels that changed since the last context frame (0: plain EDM loss)"""

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.depths):
            raise ValueError(f"channels {self.channels} and depths {self.depths} need one entry per level")
        levels = len(self.channels) - 1
        if self.image_size % (self.stem * 2**levels):
            raise ValueError(
                f"image size {self.image_size} must be divisible by stem*2^(levels-1) = {self.stem * 2**levels}; "
                "change --model.stem, the number of levels or the image size"
            )


@dataclass(frozen=True)
class SamplerConfig:
    """Few-step EDM sampler (Karras sigma schedule, no churn)."""

    steps: int = 3
    """denoising steps per frame (network calls: steps for Euler, about 2*steps - 1 for Heun)"""
    order: int = 1
    """1: Euler, 2: Heun"""
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    unit_init: bool = True
    """start from N(0, 1) noise as DIAMOND does (not sigma_max * N(0, 1)); with 3 steps the sampler then acts
    as a nearly deterministic predictor, which is what DIAMOND's results were obtained with"""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.order not in (1, 2):
            raise ValueError(f"sampler needs steps >= 1 and order 1 or 2, got {self.steps}, {self.order}")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamps to [-1, 1] and rounds to the 256 levels of an 8-bit image."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


def karras_sigmas(cfg: SamplerConfig) -> list[float]:
    """The decreasing noise levels of the sampler, with a trailing 0."""
    if cfg.steps == 1:
        return [cfg.sigma_max, 0.0]
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    return [(hi + i / (cfg.steps - 1) * (lo - hi)) ** cfg.rho for i in range(cfg.steps)] + [0.0]


class FourierFeatures(nn.Module):
    """Fixed random Fourier features of a scalar (DIAMOND's noise embedding)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(1, dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x[:, None] * self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class AdaGroupNorm(nn.Module):
    """Group norm without affine parameters, then a scale and shift predicted from the conditioning vector."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.groups = max(1, channels // 32)
        self.linear = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.groups, eps=1e-5)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int, cond_dim: int, head_dim: int = 8) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = AdaGroupNorm(channels, cond_dim)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x, cond)).view(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class ResBlock(nn.Module):
    """AdaGN -> SiLU -> conv -> AdaGN -> SiLU -> conv (zero-init), plus a 1x1 skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, attention: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = AdaGroupNorm(c_in, cond_dim), AdaGroupNorm(c_out, cond_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity: stable deep training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attn = SelfAttention2d(c_out, cond_dim) if attention else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        x = self.skip(x) + h
        return x if self.attn is None else self.attn(x, cond)


class UNet(nn.Module):
    """DIAMOND's U-Net: dense skips (every encoder output feeds one decoder block), AdaGN conditioning."""

    def __init__(self, c_in: int, c_out: int, cfg: DenoiserConfig) -> None:
        super().__init__()
        ch, cd = cfg.channels, cfg.cond_dim
        self.conv_in = nn.Conv2d(c_in, ch[0], 3, padding=1)
        skips = [ch[0]]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = ch[0]
        for i, (width, depth) in enumerate(zip(ch, cfg.depths, strict=True)):
            blocks = nn.ModuleList()
            for _ in range(depth):
                blocks.append(ResBlock(c, width, cd))
                c = width
                skips.append(c)
            self.down.append(blocks)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, cd, cfg.mid_attention) for _ in range(2)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.depths[i] + 1):
                blocks.append(ResBlock(c + skips.pop(), ch[i], cd))
                c = ch[i]
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(max(1, c // 32), c)
        self.conv_out = nn.Conv2d(c, c_out, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        hs = [x]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                x = block(x, cond)
                hs.append(x)
            if i < len(self.downsample):
                x = self.downsample[i](x)
                hs.append(x)
        for block in self.mid:
            x = block(x, cond)
        for j, blocks in enumerate(self.up):
            for block in blocks:
                x = block(torch.cat([x, hs.pop()], dim=1), cond)
            if j < len(self.upsample):
                x = self.upsample[j](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(x)))


@dataclass(frozen=True)
class Preconditioning:
    """EDM's c_in, c_skip, c_out and c_noise at an (offset-aware) noise level; tensors of shape (B, 1, 1, 1)."""

    c_in: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_noise: torch.Tensor
    """(B,)"""


def precondition(sigma: torch.Tensor, sigma_data: float, sigma_offset: float) -> Preconditioning:
    """EDM preconditioning with DIAMOND's offset noise folded into the effective noise level."""
    s = (sigma**2 + sigma_offset**2).sqrt()
    denom = (s**2 + sigma_data**2).sqrt()
    view = (-1, 1, 1, 1)
    return Preconditioning(
        c_in=(1 / denom).view(view),
        c_skip=(sigma_data**2 / denom**2).view(view),
        c_out=(s * sigma_data / denom).view(view),
        c_noise=s.log() / 4,
    )


class Denoiser(nn.Module):
    """D(x_noisy, sigma | past frames, past actions) = c_skip x + c_out F(c_in x, c_noise, frames, actions)."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        s2 = cfg.stem**2
        self.unet = UNet((cfg.context + 1) * 3 * s2, 3 * s2, cfg)
        self.noise_emb = FourierFeatures(cfg.cond_dim)
        self.action_emb = nn.Linear(cfg.context * cfg.action_dim, cfg.cond_dim)
        self.cond_mlp = nn.Sequential(
            nn.Linear(cfg.cond_dim, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim)
        )

    def check_inputs(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        c, s = self.cfg, self.cfg.image_size
        if frames.shape[1:] != (c.context, 3, s, s) or actions.shape[1:] != (c.context, c.action_dim):
            raise ValueError(
                f"denoiser expects context frames (B, {c.context}, 3, {s}, {s}) and actions (B, {c.context}, "
                f"{c.action_dim}), got {tuple(frames.shape)} and {tuple(actions.shape)}"
            )

    def inner(
        self, x: torch.Tensor, c_noise: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """The raw network F: x (B, 3, H, W) already scaled by c_in; frames (B, T, 3, H, W) in [-1, 1]."""
        cond = self.cond_mlp(self.noise_emb(c_noise) + self.action_emb(actions.flatten(1)))
        h = torch.cat([frames.flatten(1, 2) / self.cfg.sigma_data, x], dim=1)
        if self.cfg.stem > 1:
            h = F.pixel_unshuffle(h, self.cfg.stem)
        out = self.unet(h, cond)
        return F.pixel_shuffle(out, self.cfg.stem) if self.cfg.stem > 1 else out

    def forward(
        self, x_noisy: torch.Tensor, sigma: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """The denoised estimate of the next frame (not clamped); sigma has shape (B,)."""
        p = precondition(sigma, self.cfg.sigma_data, self.cfg.sigma_offset)
        return p.c_skip * x_noisy + p.c_out * self.inner(p.c_in * x_noisy, p.c_noise, frames, actions)

    def sample_sigma(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training noise levels: log-normal, clipped."""
        c = self.cfg
        z = torch.randn(n, device=device, generator=generator)
        return (z * c.train_log_sigma_std + c.train_log_sigma_mean).exp().clamp(c.train_sigma_min, c.train_sigma_max)

    def loss(
        self,
        target: torch.Tensor,
        frames: torch.Tensor,
        actions: torch.Tensor,
        sigma: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM loss of predicting ``target`` (B, 3, H, W) in [-1, 1]; returns (loss, denoised estimate)."""
        return edm_loss(self, target, frames, actions, sigma)


def edm_loss(
    model: Denoiser,
    target: torch.Tensor,
    frames: torch.Tensor,
    actions: torch.Tensor,
    sigma: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE between F and its ideal output (x0 - c_skip x) / c_out: EDM's loss with its weight folded in.

    Offset noise (a per-image, per-channel constant) is added on top of sigma * eps, as DIAMOND does.
    ``motion_weight`` up-weights pixels that differ from the last context frame (weights normalized to mean 1).
    Returns the loss and the (detached, unclamped) denoised estimate, used by the autoregressive step.
    """
    cfg = model.cfg
    b = target.shape[0]
    if sigma is None:
        sigma = model.sample_sigma(b, target.device)
    p = precondition(sigma, cfg.sigma_data, cfg.sigma_offset)
    noise = torch.randn_like(target) * sigma.view(-1, 1, 1, 1)
    offset = cfg.sigma_offset * torch.randn(b, target.shape[1], 1, 1, device=target.device, dtype=target.dtype)
    x_noisy = target + noise + offset
    out = model.inner(p.c_in * x_noisy, p.c_noise, frames, actions)
    ideal = (target - p.c_skip * x_noisy) / p.c_out
    err = (out - ideal) ** 2
    if cfg.motion_weight > 0:
        changed = ((target - frames[:, -1]).abs().amax(dim=1, keepdim=True) > 0.05).float()
        w = 1 + cfg.motion_weight * changed
        err = err * (w / w.mean(dim=(1, 2, 3), keepdim=True))
    denoised = (p.c_skip * x_noisy + p.c_out * out).detach()
    return err.mean(), denoised


def quantize_st(x: torch.Tensor) -> torch.Tensor:
    """:func:`quantize` in the forward pass, identity gradient in the backward pass (straight-through)."""
    return x + (quantize(x) - x).detach()


def _sample(
    model: Denoiser,
    frames: torch.Tensor,
    actions: torch.Tensor,
    cfg: SamplerConfig,
    noise: torch.Tensor | None,
    q: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    b, _, c, h, w = frames.shape
    x = noise if noise is not None else torch.randn(b, c, h, w, device=frames.device, dtype=frames.dtype)
    sigmas = karras_sigmas(cfg)
    if not cfg.unit_init:
        x = x * sigmas[0]
    ones = torch.ones(b, device=frames.device, dtype=frames.dtype)
    for sigma, nxt in itertools.pairwise(sigmas):
        denoised = q(model(x, ones * sigma, frames, actions))
        d = (x - denoised) / sigma
        x_next = x + d * (nxt - sigma)
        if cfg.order == 2 and nxt > 0:
            d2 = (x_next - q(model(x_next, ones * nxt, frames, actions))) / nxt
            x_next = x + (d + d2) / 2 * (nxt - sigma)
        x = x_next
    return q(x)


@torch.no_grad()
def sample_next(
    model: Denoiser,
    frames: torch.Tensor,
    actions: torch.Tensor,
    cfg: SamplerConfig,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next frame (B, 3, H, W), quantized to 8 bits, from context frames (B, T, 3, H, W) and actions (B, T, A).

    Args:
        noise: the initial noise (B, 3, H, W); drawn from the global generator when None. Pass it to make a
            batched rollout reproduce single-environment rollouts exactly.
    """
    return _sample(model, frames, actions, cfg, noise, quantize)


def sample_next_differentiable(
    model: Denoiser,
    frames: torch.Tensor,
    actions: torch.Tensor,
    cfg: SamplerConfig,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`sample_next` with the autograd graph kept through every denoising step (the BPTT baseline).

    Quantization passes gradients straight through (rounding has zero derivative almost everywhere).
    This is what differentiating "through the diffusion model" costs; DMO exists to avoid it.
    """
    return _sample(model, frames, actions, cfg, noise, quantize_st)
