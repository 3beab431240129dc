"""ACT, the Action Chunking Transformer (Zhao et al. 2023): a behaviour-cloning baseline on camera images.

From the current frame (optionally with the previous one) a small CNN makes a grid of feature tokens; a
transformer encoder mixes them with a latent token ``z``, and a transformer decoder turns ``chunk``
learned queries into the next ``chunk`` actions. ``z`` comes from a CVAE encoder over [CLS, action chunk]
in training (it absorbs what the image cannot tell, e.g. which of two ways a person went round the cube)
and is 0 at inference. The loss is L1 on the chunk plus ``kl_weight`` times the KL to the unit Gaussian.

:class:`ACTPolicy` runs a trained model on the real system with ACT's temporal ensembling: every step it
predicts a new chunk and acts with the exponentially weighted mean of all predictions for this step.

ACT has no proprioception here (the robot only has its camera), and images are 64x64, so the ResNet-18
backbone becomes a few stride-2 convolutions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldgrad.models.image import to_model


@dataclass(frozen=True)
class ACTConfig:
    """ACT model size and CVAE settings."""

    image_size: int = 64
    """side of the square RGB frames"""
    action_dim: int = 3
    chunk: int = 10
    """actions predicted per query (10 at 5 Hz = 2 s, ACT's 100 at 50 Hz)"""
    prev_frame: bool = False
    """also feed the previous frame (stacked on the channels), a cue for the robot's own motion"""
    cnn_depth: int = 32
    """channels of the first CNN stage"""
    cnn_mults: tuple[int, ...] = (1, 2, 4)
    """channel multipliers per stride-2 stage; 3 stages turn 64x64 into an 8x8 grid of tokens"""
    d_model: int = 256
    heads: int = 8
    enc_layers: int = 4
    """transformer encoder layers over [z, image tokens]"""
    dec_layers: int = 4
    """transformer decoder layers over the chunk queries"""
    cvae_layers: int = 4
    """layers of the CVAE encoder over [CLS, action chunk] (training only)"""
    ff_dim: int = 1024
    dropout: float = 0.1
    latent_dim: int = 32
    kl_weight: float = 10.0
    """beta of the KL term (ACT: 10)"""

    def __post_init__(self) -> None:
        stride = 2 ** len(self.cnn_mults)
        if self.image_size % stride:
            raise ValueError(f"act: image size {self.image_size} must be divisible by {stride} ({len(self.cnn_mults)} "
                             "stride-2 stages); change --model.cnn-mults")  # fmt: skip
        if self.d_model % self.heads:
            raise ValueError(f"act: d_model {self.d_model} must be divisible by heads {self.heads}")
        if min(self.chunk, self.action_dim, self.d_model, self.latent_dim, self.dec_layers, self.cvae_layers) < 1:
            raise ValueError("act: chunk, action_dim, d_model, latent_dim, dec_layers and cvae_layers must be >= 1")

    @property
    def grid(self) -> int:
        """Side of the image token grid."""
        return self.image_size // 2 ** len(self.cnn_mults)


ACT_PRESETS: dict[str, ACTConfig] = {
    "tiny": ACTConfig(cnn_depth=8, d_model=64, heads=4, enc_layers=1, dec_layers=1, cvae_layers=1, ff_dim=128),
    "cpu": ACTConfig(cnn_depth=16, d_model=128, heads=4, enc_layers=2, dec_layers=2, cvae_layers=2, ff_dim=512),
    # ACT's defaults (4 encoder, 7 decoder layers, 8 heads, latent 32, beta 10, dropout 0.1) at half the width.
    "paper": ACTConfig(cnn_depth=32, d_model=256, heads=8, enc_layers=4, dec_layers=7, cvae_layers=4, ff_dim=1024),
}


# -- losses (pure) -----------------------------------------------------------------------------------


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over the valid steps of the chunks: (B, k, A), (B, k, A), (B, k) bool -> scalar."""
    m = mask.to(pred.dtype).unsqueeze(-1)
    return ((pred - target).abs() * m).sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dimensions, averaged over the batch (as ACT)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()


def act_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L1 reconstruction of the chunk + ``beta`` * KL; returns (loss, detached parts for logging)."""
    l1 = masked_l1(pred, target, mask)
    kl = kl_to_standard_normal(mu, logvar)
    loss = l1 + beta * kl
    return loss, {"loss": loss.detach(), "l1": l1.detach(), "kl": kl.detach()}


# -- the model ---------------------------------------------------------------------------------------


class ImageTokens(nn.Module):
    """(B, C, H, W) in [-1, 1] -> (B, grid * grid, d_model) tokens with learned 2-D position embeddings."""

    def __init__(self, cfg: ACTConfig, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for m in cfg.cnn_mults:
            c_out = cfg.cnn_depth * m
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.GroupNorm(1, c_out), nn.SiLU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, cfg.d_model, 1)
        self.pos = nn.Parameter(torch.randn(cfg.grid * cfg.grid, cfg.d_model) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x)).flatten(2).transpose(1, 2) + self.pos


def _encoder(cfg: ACTConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout, batch_first=True,
                                       norm_first=True)  # fmt: skip
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False)


class ACT(nn.Module):
    """The Action Chunking Transformer.

    ``forward(frames, actions=None, mask=None)``: frames uint8 (B, H, W, 3), or (B, 2, H, W, 3) with
    ``prev_frame`` (previous, current); actions (B, chunk, A) and mask (B, chunk) bool in training.
    Returns (predicted chunk (B, chunk, A) in action units, mu, logvar); mu and logvar are None (z = 0)
    when no actions are given. Actions are normalized inside with the ``action_mean``/``action_std``
    buffers (set from the training data, saved with the weights).
    """

    def __init__(self, cfg: ACTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.images = ImageTokens(cfg, 6 if cfg.prev_frame else 3)
        # CVAE encoder: [CLS, action tokens] -> (mu, logvar) of z
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.cvae_pos = nn.Parameter(torch.randn(1, 1 + cfg.chunk, d) * 0.02)
        self.cvae = _encoder(cfg, cfg.cvae_layers)
        self.latent_out = nn.Linear(d, 2 * cfg.latent_dim)
        # main transformer: [z, image tokens] -> memory; chunk queries -> actions
        self.latent_in = nn.Linear(cfg.latent_dim, d)
        self.z_pos = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.encoder = _encoder(cfg, cfg.enc_layers) if cfg.enc_layers > 0 else None
        self.queries = nn.Parameter(torch.randn(1, cfg.chunk, d) * 0.02)
        layer = nn.TransformerDecoderLayer(d, cfg.heads, cfg.ff_dim, cfg.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.dec_layers, norm=nn.LayerNorm(d))
        self.action_out = nn.Linear(d, cfg.action_dim)
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim))
        self.register_buffer("action_std", torch.ones(cfg.action_dim))

    def set_action_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Sets the normalization of actions (per dimension); a floor on std keeps near-constant axes sane."""
        self.action_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.action_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-2))

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_mean) / self.action_std

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        want = (2, c.image_size, c.image_size, 3) if c.prev_frame else (c.image_size, c.image_size, 3)
        if frames.dtype != torch.uint8 or tuple(frames.shape[1:]) != want:
            raise ValueError(
                f"ACT expects uint8 frames (B, {', '.join(map(str, want))}), got {frames.dtype} "
                f"{tuple(frames.shape)}; the store's image size must match --model.image-size"
            )
        x = to_model(frames)
        return x.flatten(1, 2) if c.prev_frame else x  # (B, 2, 3, H, W) -> (B, 6, H, W)

    def encode_latent(self, actions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of z given a chunk (B, k, A) and its valid steps (B, k); padded steps are not attended."""
        tokens = torch.cat([self.cls.expand(len(actions), -1, -1), self.action_in(self.normalize(actions))], 1)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], 1)  # True = ignore
        out = self.cvae(tokens + self.cvae_pos, src_key_padding_mask=pad)
        mu, logvar = self.latent_out(out[:, 0]).chunk(2, -1)
        return mu, logvar

    def forward(
        self, frames: torch.Tensor, actions: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        B = frames.shape[0]
        mu = logvar = None
        if actions is None:
            z = torch.zeros(B, self.cfg.latent_dim, device=frames.device)
        else:
            mask = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device) if mask is None else mask
            mu, logvar = self.encode_latent(actions, mask)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterization
        memory = torch.cat([self.latent_in(z)[:, None] + self.z_pos, self.images(self._pixels(frames))], 1)
        if self.encoder is not None:
            memory = self.encoder(memory)
        out = self.decoder(self.queries.expand(B, -1, -1), memory)
        pred = self.action_out(out) * self.action_std + self.action_mean
        return pred, mu, logvar

    def loss(
        self, frames: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss on a batch; the L1 is taken on normalized actions, as in ACT."""
        pred, mu, logvar = self(frames, actions, mask)
        assert mu is not None and logvar is not None
        return act_loss(self.normalize(pred), self.normalize(actions), mask, mu, logvar, self.cfg.kl_weight)

    @torch.no_grad()
    def predict(self, frames: torch.Tensor) -> torch.Tensor:
        """Chunks at inference (z = 0), clipped to the action box: (B, chunk, A)."""
        return self(frames)[0].clamp(-1.0, 1.0)


# -- temporal ensembling and the policy --------------------------------------------------------------


def ensemble_weights(n: int, m: float) -> np.ndarray:
    """ACT's normalized weights w_i = exp(-m * i) for ``n`` predictions of one step, w_0 for the oldest."""
    w = np.exp(-m * np.arange(n, dtype=np.float64))
    return w / w.sum()


def ensemble_action(predictions: np.ndarray, m: float) -> np.ndarray:
    """The weighted mean of (n, A) predictions of the same step, oldest first."""
    predictions = np.asarray(predictions, dtype=np.float64)
    return (ensemble_weights(len(predictions), m)[:, None] * predictions).sum(0)


class ACTPolicy:
    """A trained ACT on a stream of camera frames (the harness's policy protocol).

    Args:
        model: the trained :class:`ACT`.
        ensemble_m: temporal ensembling rate m (ACT: 0.01; larger favours older predictions more); None
            turns ensembling off: the policy then runs each chunk open loop and queries every ``chunk`` steps.
        name: shown in evaluation tables.
    """

    def __init__(self, model: ACT, ensemble_m: float | None = 0.01, name: str = "act") -> None:
        self.model, self.ensemble_m, self.name = model.eval(), ensemble_m, name
        self.device = next(model.parameters()).device
        self.reset(0)

    def reset(self, seed: int = 0) -> None:
        self._t = 0
        self._chunks: deque[tuple[int, np.ndarray]] = deque(maxlen=self.model.cfg.chunk)  # (step made, chunk)
        self._prev: np.ndarray | None = None  # inference is deterministic (z = 0): the seed is not needed

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        size = self.model.cfg.image_size
        if obs.dtype != np.uint8 or obs.shape != (size, size, 3):
            raise ValueError(f"ACTPolicy.act wants one uint8 ({size}, {size}, 3) frame, got {obs.shape} {obs.dtype}")
        k = self.model.cfg.chunk
        if self.ensemble_m is not None or self._t % k == 0:
            # The first frame of an episode is its own previous frame, as at the start of an intent segment.
            frames = np.stack([obs if self._prev is None else self._prev, obs]) if self.model.cfg.prev_frame else obs
            x = torch.as_tensor(frames, device=self.device)[None]
            self._chunks.append((self._t, self.model.predict(x)[0].cpu().numpy()))
        self._prev = obs.copy()  # the env may reuse its image buffer
        t = self._t
        self._t += 1
        if self.ensemble_m is None:
            start, chunk = self._chunks[-1]
            return chunk[t - start].astype(np.float32)
        preds = np.stack([c[t - s] for s, c in self._chunks if t - s < k])  # the deque keeps them oldest first
        return ensemble_action(preds, self.ensemble_m).astype(np.float32)

    __call__ = act

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", ensemble_m: float | None = 0.01) -> ACTPolicy:
        """Loads ``policy.safetensors`` written by ``worldgrad train-bc`` (config and weights in one file)."""
        from worldgrad.runtime.checkpoint import load_checkpoint
        from worldgrad.runtime.run import config_from_dict

        state = load_checkpoint(path)
        if state.get("kind") != "act_policy":
            raise ValueError(f"{path} is not an ACT policy written by train-bc (kind act_policy); pass that file")
        model = ACT(config_from_dict(ACTConfig, state["config"])).to(device)
        model.load_state_dict(state["model"])
        return cls(model, ensemble_m=ensemble_m, name=f"act:{path}")


def export_act_policy(path: str | Path, model: ACT, extra: dict[str, object] | None = None) -> Path:
    """Writes the self-contained policy file (kind ``act_policy``): config, weights and action statistics."""
    from worldgrad.runtime.checkpoint import save_checkpoint
    from worldgrad.runtime.run import config_to_dict

    return save_checkpoint(path, {"kind": "act_policy", "config": config_to_dict(model.cfg),
                                  "model": model.state_dict(), **(extra or {})})  # fmt: skip
