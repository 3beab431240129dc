"""The local world model: a DreamerV3-style RSSM (v1 / NM512 layout) with a reward head.

State = (deter, stoch, logits): a GRU state h, a set of ``stoch`` categoricals of ``classes`` each (one-hot
samples with straight-through gradients, 1 % unimix) and their logits. The posterior filters images; the
prior predicts one step ahead. DMO uses :meth:`RSSM.step_prior` for its Jacobians: there the stochastic
part is the prior's class **probabilities** (``sample=False``), a smooth function of (h, z, a), so the
backward model's derivative is deterministic; its value is replaced by the forward posterior anyway.

Losses (pure functions below): pixel MSE summed over the image, symlog two-hot cross-entropy for the
reward, KL balancing (dynamics 0.5 on KL(sg(post) || prior), representation 0.1 on KL(post || sg(prior)))
with free bits (each term clipped below at 1 nat per step before averaging).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RSSMConfig:
    """Sizes of the local model (``paper``: DreamerV3 v1 size S)."""

    image_size: int = 64
    action_dim: int = 2
    cnn_depth: int = 16
    """channels of the first conv stage (doubling per stage); S: 32"""
    deter: int = 128
    """GRU state size; S: 512"""
    hidden: int = 128
    """MLP width; S: 512"""
    stoch: int = 16
    """number of categorical latents; S: 32"""
    classes: int = 16
    """classes per latent; S: 32"""
    unimix: float = 0.01
    reward_bins: int = 255
    free_nats: float = 1.0
    dyn_scale: float = 0.5
    rep_scale: float = 0.1
    conv_norm: Literal["channel", "group", "none"] = "channel"
    """norm after each conv: channel (DreamerV3's layer norm over channels per pixel), group (GroupNorm, 8
    groups) or none; on Push-T's sparse images the channel norm learns the objects far more slowly"""
    motion_weight: float = 0.0
    """extra reconstruction weight on pixels that changed since the previous frame (see ``motion_weights``):
    a small moving object, like Push-T's agent (a dozen of 4,096 pixels), otherwise costs the decoder almost
    nothing to leave out, and then the features do not carry it"""
    keypoints: int = 0
    """> 0: this many spatial-softmax keypoints (Levine et al. 2016) of the first conv stage's maps join the
    embedding as (x, y) coordinates. The flattened 4x4 maps keep where things are only implicitly, and a
    reconstruction-trained encoder loses the agent-to-object geometry a policy needs (Push-T's relation probes);
    coordinates make the geometry explicit, as image policies in robot learning do"""
    keypoint_temperature: float = 1.0
    """initial temperature of the keypoints' softmax (learned); lower starts them sharper"""
    keypoint_weight: float = 0.0
    """> 0 (with ``keypoints``): an MLP head reconstructs the frame's keypoints from the features, the targets
    with their gradient stopped, so the latent (and the prior that predicts it) must carry the coordinates, as
    DreamerV3 decodes vector observations next to the image. On Push-T the features then hold the keypoints, yet
    a small head reads the agent-to-T relation from them no better than without (docs/pusht_policy_journal.md,
    stop 29): the coordinates have to reach the heads explicitly"""
    filter_sample: bool = True
    """the filter (``observe_step``: the policy's latents, in training and when deployed) samples the posterior;
    False uses its class probabilities, a smoother latent (``train-policy --mean-posteriors``). Training the model
    always samples"""

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"RSSM image size must be a power of two >= 8, got {self.image_size}")
        if self.keypoints < 0:
            raise ValueError(f"RSSM keypoints must be >= 0 (0: none), got {self.keypoints}")
        if self.keypoint_temperature <= 0:
            raise ValueError(f"RSSM keypoint_temperature must be > 0, got {self.keypoint_temperature}")
        if self.keypoint_weight < 0 or (self.keypoint_weight > 0 and not self.keypoints):
            raise ValueError(f"RSSM keypoint_weight {self.keypoint_weight} needs keypoints > 0 and a weight >= 0")
        if self.conv_norm not in _CONV_NORMS:
            raise ValueError(f"RSSM conv_norm must be channel, group or none, got {self.conv_norm!r}")


def motion_weights(target: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-pixel reconstruction weights (B, T, H, W, 1) for float frames (B, T, H, W, 3) in [0, 1]:
    ``1 + scale * max_c |x_t - x_{t-1}|`` (1 on each sequence's first frame). Only the frames are read."""
    change = (target[:, 1:] - target[:, :-1]).abs().amax(-1, keepdim=True)
    return 1.0 + scale * torch.cat([torch.zeros_like(change[:, :1]), change], dim=1)


class State(NamedTuple):
    deter: torch.Tensor
    """(B, deter)"""
    stoch: torch.Tensor
    """(B, stoch * classes): one-hot samples (posterior, or prior with sample=True) or probabilities"""
    logits: torch.Tensor
    """(B, stoch, classes): unimixed log-probabilities"""


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding of scalars ``x`` (...,) over sorted ``bins`` (K,): weights on the two nearest bins."""
    x = x.clamp(bins[0], bins[-1])
    hi = torch.searchsorted(bins, x.contiguous(), right=False).clamp(1, len(bins) - 1)
    lo = hi - 1
    w_hi = (x - bins[lo]) / (bins[hi] - bins[lo])
    out = torch.zeros(*x.shape, len(bins), device=x.device, dtype=x.dtype)
    out.scatter_(-1, lo[..., None], (1 - w_hi)[..., None])
    out.scatter_add_(-1, hi[..., None], w_hi[..., None])
    return out


def twohot_symlog_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the head's bins and the two-hot code of symlog(target); (...,) per element."""
    return -(two_hot(symlog(target), bins) * F.log_softmax(logits, dim=-1)).sum(-1)


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The head's prediction symexp(sum_k p_k b_k): differentiable in the logits."""
    return symexp((F.softmax(logits, dim=-1) * bins).sum(-1))


def categorical_kl(lhs_logits: torch.Tensor, rhs_logits: torch.Tensor) -> torch.Tensor:
    """KL(lhs || rhs) of (..., stoch, classes) categoricals, summed over the latents: (...,)."""
    p = lhs_logits.exp()
    return (p * (lhs_logits - rhs_logits)).sum(-1).sum(-1)


def kl_balance(
    post_logits: torch.Tensor, prior_logits: torch.Tensor, dyn_scale: float, rep_scale: float, free_nats: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DreamerV3 KL balancing with free bits; returns (loss (...,), dyn KL (...,), rep KL (...,)).

    dyn = KL(sg(post) || prior) trains the prior toward the posterior; rep = KL(post || sg(prior)) keeps the
    posterior predictable. Each is clipped below at ``free_nats`` per step (no gradient below it).
    """
    dyn = categorical_kl(post_logits.detach(), prior_logits)
    rep = categorical_kl(post_logits, prior_logits.detach())
    loss = dyn_scale * dyn.clamp(min=free_nats) + rep_scale * rep.clamp(min=free_nats)
    return loss, dyn, rep


def unimix_logits(raw: torch.Tensor, unimix: float) -> torch.Tensor:
    """log(0.99 softmax(raw) + 0.01 / C): keeps every class probability above 1 % / C."""
    probs = F.softmax(raw, dim=-1)
    probs = (1 - unimix) * probs + unimix / raw.shape[-1]
    return probs.log()


def straight_through_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-hot samples (..., classes) whose gradient is that of the probabilities: sg(onehot) + p - sg(p)."""
    probs = logits.exp()
    idx = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(probs.shape[:-1])
    onehot = F.one_hot(idx, probs.shape[-1]).to(probs.dtype)
    return onehot + probs - probs.detach()


def _dense(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.LayerNorm(o), nn.SiLU())


class LayerNormGRU(nn.Module):
    """DreamerV3's GRU: one linear over [x, h], layer norm, update gate biased toward keeping h (u = sigmoid(u - 1))."""

    def __init__(self, inp: int, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inp + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, c, u = self.norm(self.linear(torch.cat([x, h], -1))).chunk(3, -1)
        r, u = torch.sigmoid(r), torch.sigmoid(u - 1)
        return u * torch.tanh(r * c) + (1 - u) * h


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every pixel (DreamerV3's conv norm)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


_CONV_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "channel": ChannelNorm,
    "group": lambda c: nn.GroupNorm(min(8, c), c),
    "none": lambda c: nn.Identity(),
}
"""norm after each conv by ``RSSMConfig.conv_norm`` (which is checked against these names)"""


class SpatialSoftmax(nn.Module):
    """K keypoints of (B, C, H, W) maps: a 1x1 conv to K maps, a softmax over each map's pixels (learned
    temperature), and each map's expected (x, y) in [-1, 1]; returns (B, 2K)."""

    def __init__(self, channels: int, k: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, k, 1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        logits = self.proj(x).flatten(2) / self.log_temperature.exp()
        p = torch.softmax(logits, -1).reshape(b, -1, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        return torch.cat([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


class RSSM(nn.Module):
    """Encoder, recurrent state-space model, decoder and reward head."""

    def __init__(self, cfg: RSSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stages = int(math.log2(cfg.image_size // 4))
        chans = [cfg.cnn_depth * 2**i for i in range(stages)]
        enc: list[nn.Module] = []
        c_in = 3
        for c in chans:
            enc += [nn.Conv2d(c_in, c, 4, 2, 1), _CONV_NORMS[cfg.conv_norm](c), nn.SiLU()]
            c_in = c
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.keypoint_net = SpatialSoftmax(chans[0], cfg.keypoints, cfg.keypoint_temperature) if cfg.keypoints else None
        self._conv_dim = chans[-1] * 16
        self.embed_dim = self._conv_dim + 2 * cfg.keypoints
        z = cfg.stoch * cfg.classes
        self.feature_dim = cfg.deter + z
        self.img_in = _dense(z + cfg.action_dim, cfg.hidden)
        self.gru = LayerNormGRU(cfg.hidden, cfg.deter)
        self.img_out = nn.Sequential(_dense(cfg.deter, cfg.hidden), nn.Linear(cfg.hidden, z))
        self.obs_out = nn.Sequential(_dense(cfg.deter + self.embed_dim, cfg.hidden), nn.Linear(cfg.hidden, z))
        self.dec_in = nn.Linear(self.feature_dim, chans[-1] * 16)
        dec: list[nn.Module] = []
        for c_hi, c_lo in zip(chans[::-1], [*chans[::-1][1:], 3], strict=True):
            dec.append(nn.ConvTranspose2d(c_hi, c_lo, 4, 2, 1))
            if c_lo != 3:
                dec += [_CONV_NORMS[cfg.conv_norm](c_lo), nn.SiLU()]
        self.decoder = nn.Sequential(*dec)
        self.keypoint_head: nn.Module | None = None
        if cfg.keypoint_weight > 0:
            kp_out = nn.Linear(cfg.hidden, 2 * cfg.keypoints)
            self.keypoint_head = nn.Sequential(_dense(self.feature_dim, cfg.hidden), kp_out)
        self.reward_head = nn.Sequential(_dense(self.feature_dim, cfg.hidden), nn.Linear(cfg.hidden, cfg.reward_bins))
        nn.init.zeros_(self.reward_head[-1].weight)  # predicts 0 at init (DreamerV3)
        nn.init.zeros_(self.reward_head[-1].bias)
        self.register_buffer("bins", torch.linspace(-20, 20, cfg.reward_bins))

    # --- the API the policy optimizer uses -------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        c, dev = self.cfg, self.bins.device
        logits = torch.full((batch, c.stoch, c.classes), -math.log(c.classes), device=dev)
        return State(torch.zeros(batch, c.deter, device=dev), torch.zeros(batch, c.stoch * c.classes, device=dev),
                     logits)  # fmt: skip

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) (or float in [0, 1]) -> embeddings (..., E). Call under no_grad for a constant."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2) - 0.5
        if self.keypoint_net is None:
            return self.encoder(x).reshape(*lead, self.embed_dim)
        first = self.encoder[:3](x)  # the first conv stage: conv, norm, activation
        embed = torch.cat([self.encoder[3:](first), self.keypoint_net(first)], -1)
        return embed.reshape(*lead, self.embed_dim)

    def _deter(self, state: State, action: torch.Tensor) -> torch.Tensor:
        return self.gru(self.img_in(torch.cat([state.stoch, action], -1)), state.deter)

    def _stoch(self, logits: torch.Tensor, sample: bool) -> torch.Tensor:
        z = straight_through_sample(logits) if sample else logits.exp()
        return z.flatten(-2)

    def step_prior(self, state: State, action: torch.Tensor, sample: bool = False) -> State:
        """One-step prediction from (state, action); differentiable in both (probabilities when not sampling)."""
        deter = self._deter(state, action)
        logits = unimix_logits(self.img_out(deter).unflatten(-1, (self.cfg.stoch, self.cfg.classes)), self.cfg.unimix)
        return State(deter, self._stoch(logits, sample), logits)

    def posterior(self, deter: torch.Tensor, embed: torch.Tensor, sample: bool = True) -> State:
        raw = self.obs_out(torch.cat([deter, embed], -1)).unflatten(-1, (self.cfg.stoch, self.cfg.classes))
        logits = unimix_logits(raw, self.cfg.unimix)
        return State(deter, self._stoch(logits, sample), logits)

    def observe_step(
        self, state: State, action: torch.Tensor, embed: torch.Tensor, sample: bool | None = None
    ) -> State:
        """The posterior after ``action`` given the embedding of the frame that followed it (``sample`` None: the
        config's ``filter_sample``)."""
        sample = self.cfg.filter_sample if sample is None else sample
        return self.posterior(self._deter(state, action), embed, sample)

    def observe(
        self, embeds: torch.Tensor, actions: torch.Tensor, state: State | None = None, sample: bool = True
    ) -> tuple[State, State]:
        """Filters a sequence: embeds (B, T, E) and actions (B, T, A), action t following frame t.

        Returns (posteriors, priors), each a :class:`State` of (B, T, ...) tensors; the prior of step t is the
        prediction from step t - 1 (from ``state``, default the initial state, with a zero action at t = 0).
        """
        b, t = embeds.shape[:2]
        state = self.initial_state(b) if state is None else state
        prev = torch.zeros_like(actions[:, 0])
        posts, priors = [], []
        for k in range(t):
            prior = self.step_prior(state, prev, sample=sample)
            state = self.posterior(prior.deter, embeds[:, k], sample)
            posts.append(state)
            priors.append(prior)
            prev = actions[:, k]
        return State(*(torch.stack(x, 1) for x in zip(*posts, strict=True))), State(
            *(torch.stack(x, 1) for x in zip(*priors, strict=True))
        )

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state.deter, state.stoch], -1)

    def reward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted reward (...,) of the state (the reward label of its frame); differentiable."""
        return twohot_mean(self.reward_head(features), self.bins)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features (..., F) -> images (..., H, W, 3) as floats in about [0, 1]."""
        lead = features.shape[:-1]
        s = self.cfg.image_size
        x = self.dec_in(features.reshape(-1, features.shape[-1])).reshape(-1, self._conv_dim // 16, 4, 4)
        return (self.decoder(x) + 0.5).permute(0, 2, 3, 1).reshape(*lead, s, s, 3)

    # --- training -------------------------------------------------------------------------------
    def loss(
        self, frames: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, reward_scale: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], State]:
        """World-model loss on sequences: frames uint8 (B, T, H, W, 3), actions (B, T, A), rewards (B, T);
        ``reward_scale`` 0 leaves the reward head out (it is still logged)."""
        embed = self.encode(frames)
        posts, priors = self.observe(embed, actions)
        feats = self.features(posts)
        target = frames.float() / 255.0
        err = (self.decode(feats) - target) ** 2
        recon = err.sum((-3, -2, -1))
        if self.cfg.motion_weight > 0:
            weighted = (motion_weights(target, self.cfg.motion_weight) * err).sum((-3, -2, -1))
        else:
            weighted = recon
        rew = twohot_symlog_loss(self.reward_head(feats), rewards, self.bins)
        kl, dyn, rep = kl_balance(posts.logits, priors.logits, self.cfg.dyn_scale, self.cfg.rep_scale,
                                  self.cfg.free_nats)  # fmt: skip
        # the first prior is a guess from the initial state: leave it out of the KL
        total = (weighted + reward_scale * rew).mean() + kl[:, 1:].mean()
        logs = {"loss": total.detach(), "recon": recon.mean().detach(), "reward_loss": rew.mean().detach(),
                "kl_dyn": dyn[:, 1:].mean().detach(), "kl_rep": rep[:, 1:].mean().detach()}  # fmt: skip
        if self.keypoint_head is not None:
            kp = embed[..., -2 * self.cfg.keypoints :].detach()
            kp_loss = ((self.keypoint_head(feats) - kp) ** 2).sum(-1).mean()
            total = total + self.cfg.keypoint_weight * kp_loss
            logs |= {"loss": total.detach(), "keypoint_loss": kp_loss.detach()}
        return total, logs, posts
