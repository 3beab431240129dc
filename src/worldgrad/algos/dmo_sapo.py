"""DMO-SAPO: the policy learns from first-order gradients through the local model along trajectories that
the global world model generated (DESIGN section 4, the paper's Algorithm 1).

One iteration over a window of H steps for B persistent imagined environments:

1. The latent l_h is the local model's posterior filtered on the **forward** image o_h (no gradient through
   the encoder or the pixels); the actor samples a_h (reparameterized tanh-Gaussian).
2. The global world model produces o_{h+1} (no gradient); the global reward scores it.
3. l_{h+1} = decoupled(step_prior(l_h, a_h), posterior(o_{h+1})): its value is the forward latent, its
   gradient the local model's Jacobian. The reward is decoupled the same way: value from the global reward,
   gradient from the local reward head.
4. Actor loss: minus the entropy-regularized H-step return bootstrapped by the critic (eq. 4); critic:
   TD-lambda targets from the global rewards (eqs. 5-6); temperature toward the target entropy.
5. The local model is fine-tuned on the forward rollouts (a replay buffer of imagined windows).

The local model enters through :class:`LocalModel`, a small protocol, so any latent model with a
filter, a differentiable one-step prior and a reward head can serve as the backward model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from worldgrad.algos.dmo import decoupled, grads_finite
from worldgrad.algos.sapo import (
    Actor,
    Critic,
    alpha_loss,
    scaled_entropy,
    soft_return,
    target_entropy,
    td_lambda_targets,
)

S = TypeVar("S")


class LocalModel(Protocol[S]):
    """What DMO-SAPO needs from the local (backward) model. ``S`` is its state: a tuple of tensors (B, ...)."""

    def initial_state(self, batch: int) -> S: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> embeddings (B, E)."""
        ...

    def observe_step(self, state: S, action: torch.Tensor, embed: torch.Tensor) -> S:
        """Posterior: the state after ``action``, corrected by the embedding of the frame that followed."""
        ...

    def step_prior(self, state: S, action: torch.Tensor, sample: bool = False) -> S:
        """The differentiable one-step prediction whose Jacobians carry the policy gradient (``sample``: draw
        the stochastic part, as an imagination rollout of the local model alone does)."""
        ...

    def features(self, state: S) -> torch.Tensor:
        """(B, F): what the actor and the critic see."""
        ...

    def reward(self, features: torch.Tensor) -> torch.Tensor:
        """(B,): the local reward head (its gradient stands in for the global reward's)."""
        ...


def map_state(fn: Any, *states: tuple[torch.Tensor, ...]) -> Any:
    """``fn`` applied field by field across states of one type (a NamedTuple such as the RSSM's, or a plain tuple)."""
    fields = [fn(*xs) for xs in zip(*states, strict=True)]
    return type(states[0])(*fields) if hasattr(states[0], "_fields") else tuple(fields)


def decouple_state(backward: tuple[torch.Tensor, ...], forward: tuple[torch.Tensor, ...]) -> Any:
    """Field by field: the value of the forward state, the gradient of the backward one."""
    return map_state(decoupled, backward, forward)


def detach_state(state: tuple[torch.Tensor, ...]) -> Any:
    return map_state(torch.Tensor.detach, state)


@dataclass(frozen=True)
class SAPOConfig:
    """Actor-critic settings (defaults from the public SAPO and DMO code)."""

    horizon: int = 16
    """H: steps per window of analytic gradients (DMO uses 16)"""
    gamma: float = 0.99
    lam: float = 0.95
    actor_lr: float = 2e-3
    critic_lr: float = 5e-4
    alpha_lr: float = 5e-3
    init_alpha: float = 1.0
    target_entropy_scale: float = 0.5
    """target entropy = -scale * action_dim"""
    max_grad_norm: float = 0.5
    critic_iterations: int = 16
    critic_minibatches: int = 4
    actor_hidden: tuple[int, ...] = (128, 64, 32)
    critic_hidden: tuple[int, ...] = (64, 64)
    action_scale: float = 1.0
    """actions are action_scale * tanh(u): bounds the policy to the range of actions the play data covers, where
    the world model can be trusted (a policy with saturated actions far outside it exploits the model)"""
    bc_weight: float = 0.0
    """weight of a behaviour prior (TD3+BC-style, not in the paper): squared error between the actor's mode and
    the operator's action on intent-on play frames, filtered by the local model. 0 is the paper's method"""
    bc_batch: int = 64
    """play frames per behaviour-prior term"""
    bc_history: int = 8
    """frames the local model filters before each of them"""
    bc_pretrain: int = 0
    """behaviour-prior steps on the actor alone before the first window of a fresh run (DAPG-style warm start:
    the policy gradient then starts from the operator's behaviour instead of a random actor)"""
    value_gradient: bool = True
    """False: the actor sees the bootstrap V(s_H) as a constant, so its gradient comes from the H rewards alone (a
    diagnostic, not in the paper: it tells whether what the critic pays for steers the policy)"""
    play_values: int = 0
    """play windows of the store added to every critic update, their TD-lambda targets from the store's reward
    labels (off-policy values of the play behaviour, not in the paper: a critic fit to the policy's own windows
    alone learns nothing about states the policy has not reached yet, such as the agent at the T). 0 is the
    paper's method"""
    play_burn_in: int = 8
    """frames the local model filters before each play window's values"""
    play_value_pretrain: int = 0
    """critic updates on play windows alone before the first window of a fresh run (needs ``play_values``)"""
    policy_gradient: bool = True
    """False drops the return from the actor's loss, leaving the behaviour prior alone (the control that shows
    what the policy gradient adds to it)"""
    progress_reward: bool = False
    """optimize the progress r_{t+1} - r_t instead of r_{t+1} (not in the paper). Its discounted return is
    (1 - gamma) times the reward's minus r_0, which no action changes, so the policy's optimum is the same (the
    entropy temperature adapts to the new scale); but the critic no longer has to learn ~r(s) / (1 - gamma), the
    part of the value fixed by where the object already is, whose fitting errors otherwise swamp the small part
    the policy controls (e.g. the approach to the object). Play values then hold the play behaviour's progress"""

    def __post_init__(self) -> None:
        if self.target_entropy_scale == 0:  # SAPO scales the entropy by 1 / |target|: every update would be NaN
            raise ValueError(
                "--sapo.target-entropy-scale 0 gives a zero target entropy, which SAPO's entropy scaling divides "
                "by; pass a nonzero scale (e.g. 0.5, or -0.5 for a positive target)"
            )


class Agent(nn.Module):
    """Actor, critic ensemble and the learned temperature, with their optimizers' settings in ``cfg``."""

    def __init__(self, feature_dim: int, action_dim: int, cfg: SAPOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.actor = Actor(feature_dim, action_dim, cfg.actor_hidden)
        self.critic = Critic(feature_dim, 2, cfg.critic_hidden)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(cfg.init_alpha))))
        self.target = target_entropy(action_dim, cfg.target_entropy_scale)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c, betas = self.cfg, (0.7, 0.95)
        return {
            "actor": torch.optim.AdamW(self.actor.parameters(), lr=c.actor_lr, betas=betas),
            "critic": torch.optim.AdamW(self.critic.parameters(), lr=c.critic_lr, betas=betas),
            "alpha": torch.optim.AdamW([self.log_alpha], lr=c.alpha_lr, betas=betas, weight_decay=0.0),
        }


@dataclass
class Window:
    """What one imagined window leaves behind (forward values, detached, for the critic and the local model)."""

    features: torch.Tensor
    """(H + 1, B, F) features of the forward latents l_0..l_H"""
    rewards: torch.Tensor
    """(H, B) the critic's rewards: the global rewards of the transitions (their progress with
    ``progress_reward``) plus alpha * scaled entropy (SAPO's targets include it)"""
    frames: torch.Tensor
    """(H + 1, B, H, W, 3) uint8 forward frames (only the first one without a global model)"""
    actions: torch.Tensor
    """(H, B, A)"""
    global_rewards: torch.Tensor
    """(H, B) global rewards alone"""
    entropy: torch.Tensor
    """(H, B) entropy estimates"""
    bonus: torch.Tensor
    """(H, B) the entropy bonus included in ``rewards``"""


def imagine_window(
    agent: Agent,
    local: LocalModel[Any],
    step_world: Any,
    reward_fn: Any,
    state: tuple[torch.Tensor, ...],
    frame: torch.Tensor,
    horizon: int,
) -> tuple[torch.Tensor, Window, tuple[torch.Tensor, ...], torch.Tensor]:
    """Runs one window and returns the actor loss (with its graph), the window record and the final forward state.

    Args:
        agent: actor, critic and temperature.
        local: the local (backward) model.
        step_world: actions (B, A) -> next frames uint8 (B, H, W, 3) (the global world model; no gradient).
            ``None`` runs the "No Diffusion" ablation: the local model is the forward model too (Dreamer-style
            imagination from sampled priors, rewards from its reward head) and no frames are generated.
        reward_fn: (frames uint8 (B, H, W, 3)) -> global rewards (B,) (no gradient).
        state: the forward (filtered) local state at the window start.
        frame: the current forward frame, uint8 (B, H, W, 3).
        horizon: H.

    Returns:
        (actor loss, window, forward state after the window, last frame).
    """
    cfg = agent.cfg
    alpha = agent.log_alpha.exp().detach()
    latent = detach_state(state)  # graph starts at the window (SHAC's truncation)
    fwd_state = latent
    feats, rewards, bonus, g_rewards, entropies, frames, actions = [], [], [], [], [], [frame], []
    feats.append(local.features(latent).detach())
    if cfg.progress_reward:  # the rewards of the window's first frame (constants: no graph before the window)
        with torch.no_grad():
            prev = local.reward(feats[0]) if step_world is None else reward_fn(frame).float()
        prev_global = prev
    targets = []
    for _ in range(horizon):
        dist = agent.actor(local.features(latent))
        sample = dist.rsample()
        action = cfg.action_scale * sample.action  # what the environment (and the local model) sees
        entropy = dist.entropy_mc()
        if step_world is None:
            latent = local.step_prior(latent, action, sample=True)
            feat = local.features(latent)
            rewards.append(local.reward(feat))
            r_global = rewards[-1].detach()
            fwd_state = detach_state(latent)
        else:
            with torch.no_grad():
                frame = step_world(action.detach())
                r_global = reward_fn(frame).float()
                fwd_state = local.observe_step(fwd_state, action.detach(), local.encode(frame))
            latent = decouple_state(local.step_prior(latent, action), fwd_state)
            feat = local.features(latent)
            rewards.append(decoupled(local.reward(feat), r_global))
        targets.append(r_global)
        if cfg.progress_reward:
            rewards[-1], prev = rewards[-1] - prev, rewards[-1]
            targets[-1], prev_global = r_global - prev_global, r_global
        bonus.append(alpha * scaled_entropy(entropy, agent.target))
        g_rewards.append(r_global)
        entropies.append(entropy.detach())
        feats.append(feat.detach())
        if step_world is not None:
            frames.append(frame)
        actions.append(action.detach())
    end = local.features(latent)
    bootstrap = agent.critic(end if cfg.value_gradient else end.detach()).mean(0)
    ret = soft_return(torch.stack(rewards), torch.stack(bonus), bootstrap, cfg.gamma)
    loss = -(ret / horizon).mean()
    bonus_d = torch.stack(bonus).detach()
    window = Window(
        features=torch.stack(feats), rewards=torch.stack(targets) + bonus_d, frames=torch.stack(frames),
        actions=torch.stack(actions), global_rewards=torch.stack(g_rewards), entropy=torch.stack(entropies),
        bonus=bonus_d,
    )  # fmt: skip
    return loss, window, detach_state(fwd_state), frame


def bc_loss(agent: Agent, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Behaviour prior: mean squared error between the actor's mode and demonstrated actions (B, A), the
    actions mapped into the actor's squashed range (divided by ``action_scale``, clipped inside (-1, 1))."""
    target = (actions / agent.cfg.action_scale).clamp(-0.99, 0.99)
    return ((agent.actor(features).mode() - target) ** 2).sum(-1).mean()


def actor_step(
    agent: Agent, optim: torch.optim.Optimizer, actor_loss: torch.Tensor, check: torch.Tensor
) -> float | None:
    """One clipped actor update from ``actor_loss`` (the local model and the critic get no gradient from it).

    Returns the gradient norm before clipping, or None when a gradient or ``check`` (the return's loss) is not
    finite: then nothing is updated and the caller restarts its environments.
    """
    params = list(agent.actor.parameters())
    optim.zero_grad(set_to_none=True)
    actor_loss.backward(inputs=params)
    if not (grads_finite(params) and torch.isfinite(check)):
        optim.zero_grad(set_to_none=True)
        return None
    norm = float(torch.nn.utils.clip_grad_norm_(params, agent.cfg.max_grad_norm))
    optim.step()
    return norm


def merge_windows(windows: list[Window]) -> Window:
    """Windows of the same length side by side as one batch, for the critic (features and rewards only)."""
    if len(windows) == 1:
        return windows[0]
    return replace(windows[-1], features=torch.cat([w.features for w in windows], 1),
                   rewards=torch.cat([w.rewards for w in windows], 1))  # fmt: skip


def with_play_values(window: Window, features: torch.Tensor, rewards: torch.Tensor) -> Window:
    """``window`` and recorded play sequences (features (H + 1, B', F), reward labels (H, B')) as one critic batch.

    The play rewards get the window's mean entropy bonus, so both kinds of targets are on the scale of SAPO's
    soft values."""
    bonus = window.bonus.mean()  # a merged batch keeps the last window's record
    return merge_windows([window, replace(window, features=features, rewards=rewards + bonus)])


def play_window(features: torch.Tensor, rewards: torch.Tensor) -> Window:
    """Recorded play sequences as a critic batch of their own (no entropy bonus: there is no policy yet)."""
    h, b = rewards.shape
    return Window(features=features, rewards=rewards, frames=features.new_zeros(0, b, 1, 1, 3, dtype=torch.uint8),
                  actions=features.new_zeros(h, b, 0), global_rewards=rewards,
                  entropy=torch.zeros_like(rewards), bonus=torch.zeros_like(rewards))  # fmt: skip


def critic_targets(agent: Agent, window: Window) -> torch.Tensor:
    """TD-lambda targets (H, B) with the ensemble's minimum as bootstrap (SAPO: no target network)."""
    with torch.no_grad():
        nxt = agent.critic(window.features[1:]).min(0).values
        return td_lambda_targets(window.rewards, nxt, agent.cfg.gamma, agent.cfg.lam)


def critic_update(agent: Agent, window: Window, optim: torch.optim.Optimizer, rng: np.random.Generator) -> float:
    """Minibatch regression of every critic onto the TD-lambda targets; returns the mean loss."""
    cfg = agent.cfg
    targets = critic_targets(agent, window).flatten()
    feats = window.features[:-1].flatten(0, 1)
    n, losses = len(targets), []
    for _ in range(cfg.critic_iterations):
        order = torch.as_tensor(rng.permutation(n), device=targets.device)
        for idx in order.chunk(cfg.critic_minibatches):
            loss = ((agent.critic(feats[idx]) - targets[idx]) ** 2).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.critic.parameters(), cfg.max_grad_norm)
            optim.step()
            losses.append(loss.item())
    return float(np.mean(losses))


def temperature_update(agent: Agent, window: Window, optim: torch.optim.Optimizer) -> float:
    loss = alpha_loss(agent.log_alpha, window.entropy.flatten(), agent.target)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return loss.item()
