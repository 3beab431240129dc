"""SAPO's pieces: a tanh-squashed Gaussian actor with a Monte-Carlo entropy, automatic temperature, an
ensemble critic, TD-lambda targets and the entropy-regularized short-horizon return (paper eqs. 4-6).

Pure functions where possible; the networks are small MLPs over the local model's features. Details follow
the public SAPO code (Xing et al., ICLR 2025): entropy as a fresh one-sample estimate ``-log_prob(rsample())``
with the stable tanh log-determinant, rescaled by the target entropy ``H_target = -0.5 |A|``; temperature
loss ``alpha |H_target| (H - H_target)``; two critics, min for targets and mean for the actor's bootstrap.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(sizes: list[int], out: int) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU blocks, then a linear head."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
    layers.append(nn.Linear(sizes[-1], out))
    return nn.Sequential(*layers)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u) / du| = 2 (log 2 - u - softplus(-2u)), stable for large |u|; summed over the last dim."""
    return (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)


@dataclass(frozen=True)
class SquashedSample:
    action: torch.Tensor
    """(B, A) in (-1, 1), reparameterized (differentiable w.r.t. the actor's parameters and input)"""
    log_prob: torch.Tensor
    """(B,) log density of ``action``"""


class SquashedNormal:
    """tanh(N(mean, std^2)): the actor's distribution over actions in (-1, 1)^A."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor) -> None:
        self.mean, self.log_std = mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def log_prob_pre_tanh(self, u: torch.Tensor) -> torch.Tensor:
        std = self.log_std.exp()
        normal = -0.5 * ((u - self.mean) / std) ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)
        return normal.sum(-1) - tanh_log_det(u)

    def rsample(self, generator: torch.Generator | None = None) -> SquashedSample:
        eps = torch.randn(self.mean.shape, device=self.mean.device, dtype=self.mean.dtype, generator=generator)
        u = self.mean + self.log_std.exp() * eps
        return SquashedSample(torch.tanh(u), self.log_prob_pre_tanh(u))

    def entropy_mc(self) -> torch.Tensor:
        """A fresh one-sample Monte-Carlo estimate of the entropy, (B,); differentiable (reparameterized)."""
        return -self.rsample().log_prob

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean)


class Actor(nn.Module):
    """features -> tanh-squashed Gaussian with a state-dependent std."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: tuple[int, ...] = (128, 64, 32)) -> None:
        super().__init__()
        self.net = mlp([feature_dim, *hidden], 2 * action_dim)

    def forward(self, features: torch.Tensor) -> SquashedNormal:
        mean, log_std = self.net(features).chunk(2, dim=-1)
        return SquashedNormal(mean, log_std)


class Critic(nn.Module):
    """An ensemble of value functions V(features) -> (n, B)."""

    def __init__(self, feature_dim: int, n: int = 2, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.nets = nn.ModuleList([mlp([feature_dim, *hidden], 1) for _ in range(n)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(features).squeeze(-1) for net in self.nets])


def target_entropy(action_dim: int, scale: float = 0.5) -> float:
    """SAPO's target entropy ``-scale * |A|``."""
    return -scale * action_dim


def scaled_entropy(entropy: torch.Tensor, target: float) -> torch.Tensor:
    """SAPO's offset-and-scale of the entropy by the target: (H + |H_target|) / (2 |H_target|), 0.5 at H = 0."""
    return (entropy + abs(target)) * 0.5 / abs(target)


def alpha_loss(log_alpha: torch.Tensor, entropy: torch.Tensor, target: float) -> torch.Tensor:
    """Temperature loss: alpha shrinks when the policy's entropy is above the target, grows when below."""
    return (log_alpha.exp() * abs(target) * (entropy - target).detach()).mean()


def td_lambda_targets(
    rewards: torch.Tensor, next_values: torch.Tensor, gamma: float, lam: float, resets: torch.Tensor | None = None
) -> torch.Tensor:
    """TD(lambda) value targets of a window (paper eq. 6, in its recursive form).

    Args:
        rewards: (H, B) reward of the transition from s_t.
        next_values: (H, B) V(s_{t+1}).
        gamma: discount.
        lam: lambda.
        resets: (H, B) bool: the environment restarted after step t, so s_{t+1} ends its episode (bootstrap
            from V(s_{t+1}) alone; what follows belongs to another episode).

    Returns:
        (H, B) targets for V(s_t): G_t = r_t + gamma ((1 - lambda) V(s_{t+1}) + lambda G_{t+1}), and
        G_{H-1} = r_{H-1} + gamma V(s_H): the lambda-weighted mix of the n-step returns of eq. 6.
    """
    horizon = rewards.shape[0]
    out = torch.empty_like(rewards)
    for t in reversed(range(horizon)):
        boot = next_values[t]
        if t < horizon - 1:
            mixed = (1 - lam) * next_values[t] + lam * out[t + 1]
            boot = mixed if resets is None else torch.where(resets[t], next_values[t], mixed)
        out[t] = rewards[t] + gamma * boot
    return out


def soft_return(
    rewards: torch.Tensor, entropy_bonus: torch.Tensor, bootstrap: torch.Tensor, gamma: float
) -> torch.Tensor:
    """The entropy-regularized H-step return of eq. 4, per environment: sum_h gamma^h (r_h + bonus_h) + gamma^H V.

    Args:
        rewards: (H, B); entropy_bonus: (H, B) = alpha * scaled entropy; bootstrap: (B,) V(s_H).
    """
    horizon = rewards.shape[0]
    disc = gamma ** torch.arange(horizon, device=rewards.device, dtype=rewards.dtype)
    return (disc[:, None] * (rewards + entropy_bonus)).sum(0) + gamma**horizon * bootstrap
