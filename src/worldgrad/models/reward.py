"""Goal-conditioned ranking reward (Rank2Reward-style), learned from passive video.

An energy f(s_t | s_start, s_goal) is trained with a Bradley-Terry loss: of two frames s_i, s_j of one
recorded window that runs from s_start to s_goal, the later one (closer in time to the goal) must score
higher. Conditioning on the window's own last frame makes undirected play usable: whatever the operator
did, frames nearer the end look more like the end. At RL time s_goal is the goal image the user shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldgrad.models.encoders import ConvEncoder, ConvEncoderConfig
from worldgrad.models.image import to_model


@dataclass(frozen=True)
class RewardModelConfig:
    """Ranking reward model."""

    image_size: int = 64
    """square input image size (must match the store)"""
    encoder: ConvEncoderConfig = field(default_factory=lambda: ConvEncoderConfig(depth=16, out_dim=128))
    """image encoder shared by s_t, s_start and s_goal"""
    hidden: int = 256
    """width of the energy head"""
    condition_on_start: bool = True
    """feed s_start to the energy; off, the model cannot rank frames by how far they are from the start"""


def bradley_terry_loss(f_i: torch.Tensor, f_j: torch.Tensor, i_later: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood that the later frame scores higher (paper eq. 3).

    P(i later than j) = exp(f_i) / (exp(f_i) + exp(f_j)) = sigmoid(f_i - f_j).
    """
    return F.binary_cross_entropy_with_logits(f_i - f_j, i_later.to(f_i.dtype))


def ranking_loss(
    f_i: torch.Tensor,
    f_j: torch.Tensor,
    i_later: torch.Tensor,
    tie: torch.Tensor | None = None,
    tie_weight: float = 1.0,
) -> torch.Tensor:
    """Bradley-Terry on the ranked pairs plus ``tie_weight`` x the mean squared energy gap of the tied ones.

    ``tie`` (B,) bool marks pairs that should score the same (e.g. frames where only the small end-effector
    moved): ranking them by time would teach the reward where the end-effector tends to be late in a
    recording, a cue a policy can collect by parking there.
    """
    if tie is None or not bool(tie.any()):
        return bradley_terry_loss(f_i, f_j, i_later)
    ranked = ~tie
    loss = tie_weight * (f_i[tie] - f_j[tie]).pow(2).mean()
    if bool(ranked.any()):
        loss = loss + ranked.float().mean() * bradley_terry_loss(f_i[ranked], f_j[ranked], i_later[ranked])
    return loss


class RankingReward(nn.Module):
    """f(s_t | s_start, s_goal) -> one scalar per frame."""

    def __init__(self, cfg: RewardModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(cfg.encoder, cfg.image_size)
        d = cfg.encoder.out_dim
        self.head = nn.Sequential(
            nn.Linear(4 * d, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 1)
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) float -> (..., D)."""
        lead = images.shape[:-3]
        return self.encoder(images.reshape(-1, *images.shape[-3:])).reshape(*lead, -1)

    def energy_from_embeddings(self, e_t: torch.Tensor, e_start: torch.Tensor, e_goal: torch.Tensor) -> torch.Tensor:
        if not self.cfg.condition_on_start:
            e_start = torch.zeros_like(e_start)
        return self.head(torch.cat([e_t, e_start, e_goal, e_t - e_goal], dim=-1)).squeeze(-1)

    def forward(self, s_t: torch.Tensor, s_start: torch.Tensor, s_goal: torch.Tensor) -> torch.Tensor:
        """Energies of (B, 3, H, W) float frames given start and goal frames of the same shape."""
        e = self.embed(torch.stack([s_t, s_start, s_goal]))
        return self.energy_from_embeddings(e[0], e[1], e[2])

    def compute_loss(
        self,
        start: torch.Tensor,
        goal: torch.Tensor,
        frame_i: torch.Tensor,
        frame_j: torch.Tensor,
        i_later: torch.Tensor,
        tie: torch.Tensor | None = None,
        tie_weight: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Ranking loss of a batch (:func:`ranking_loss`); the accuracy counts the ranked (untied) pairs.

        Float images (B, 3, H, W); ``goal`` may be a set (B, K, 3, H, W), represented by its mean embedding;
        ``i_later`` and ``tie`` (B,) bool.
        """
        e_start, e_i, e_j = self.embed(torch.stack([start, frame_i, frame_j]))
        e_goal = self.embed(goal).mean(1) if goal.dim() == 5 else self.embed(goal)
        f_i = self.energy_from_embeddings(e_i, e_start, e_goal)
        f_j = self.energy_from_embeddings(e_j, e_start, e_goal)
        loss = ranking_loss(f_i, f_j, i_later, tie, tie_weight)
        ranked = torch.ones_like(i_later) if tie is None else ~tie
        correct = ((f_i > f_j) == i_later)[ranked]
        accuracy = correct.float().mean() if len(correct) else torch.tensor(float("nan"))
        return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}


class GoalReward:
    """The reward an RL agent sees: the energy toward the user's goal image(s), standardized.

    ``r = (f(s_t | s_start, {g_k}) - mean) / std``, the goal set represented by its mean embedding as in
    training. Several goal images ``g_k`` (the same goal with the end-effector at different places) average
    out where the end-effector happens to be in the goal, which a single goal image would otherwise reward.
    ``mean`` and ``std`` are fitted on training frames so rewards are about unit scale. Differentiable with
    respect to float image inputs; uint8 inputs carry no gradient.
    """

    def __init__(self, model: RankingReward, goal_images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> None:
        self.model = model
        self.mean, self.std = float(mean), float(std)
        goal_images = np.asarray(goal_images)
        self.goal_images = goal_images[None] if goal_images.ndim == 3 else goal_images
        """(K, H, W, 3) uint8"""
        self.goals = to_model(self.goal_images, next(model.parameters()).device)
        self._goal_embeddings: torch.Tensor | None = None

    def energy(self, frames: np.ndarray | torch.Tensor, start: np.ndarray | torch.Tensor) -> torch.Tensor:
        device = self.goals.device
        s_t, s_start = to_model(frames, device), to_model(start, device)
        if self._goal_embeddings is None or self.model.training:
            with torch.no_grad():
                self._goal_embeddings = self.model.embed(self.goals)  # (K, D), cached: the goals never change
        e_t, e_start = self.model.embed(torch.stack([s_t, s_start]))  # (B, D) each
        e_goal = self._goal_embeddings.mean(0, keepdim=True).expand_as(e_t)  # the goal set's mean, as in training
        return self.model.energy_from_embeddings(e_t, e_start, e_goal)

    def __call__(self, frames: np.ndarray | torch.Tensor, start: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Rewards (B,) of frames (B, H, W, 3) uint8 or (B, 3, H, W) float, each with its rollout's first frame."""
        return (self.energy(frames, start) - self.mean) / self.std
