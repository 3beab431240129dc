"""Proximal policy optimization (PPO), CleanRL style, for any gymnasium vector environment.

Pure pieces: :func:`gae` (advantages, with truncated episodes bootstrapped from their last observation),
:func:`ppo_loss` (clipped surrogate, optionally clipped value loss, entropy bonus), :func:`collect_rollout`
and :func:`ppo_update`. Agents follow CleanRL's interface (``get_value``, ``get_action_and_value``, plus
``act`` for deployment): :class:`CNNAgent` reads uint8 images (H, W, C), :class:`MLPAgent` vectors; Box
actions are Gaussian (clipped to the box before the environment sees them), Discrete ones categorical.
:class:`PPORunner` keeps what lives between rollouts (current observation, running returns, reward scale).

Environments must use gymnasium's SAME_STEP autoreset (the world model env does): the observation returned
with a done flag already belongs to the next episode, and a truncated episode's last observation is in
``infos["final_obs"]``; its value is the bootstrap, since a time limit is not a terminal state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import nn


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings (defaults: CleanRL's ppo_continuous_action, with a 128-step rollout)."""

    num_steps: int = 128
    """steps per environment in each rollout (batch = num_steps * num_envs)"""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    lr: float = 3e-4
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run's iterations"""
    update_epochs: int = 10
    num_minibatches: int = 32
    clip_coef: float = 0.2
    clip_vloss: bool = True
    """clip the value update around the rollout's values, like the policy ratio"""
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    """normalize advantages per minibatch"""
    norm_reward: bool = False
    """divide rewards by the running std of the discounted return (gymnasium's NormalizeReward)"""
    target_kl: float | None = None
    """stop an update's epochs early once the approximate KL exceeds this"""


@dataclass(frozen=True)
class AgentConfig:
    """Network sizes: the CNN for uint8 images, the MLPs for vector observations."""

    channels: tuple[int, ...] = (32, 64, 64)
    kernels: tuple[int, ...] = (8, 4, 3)
    strides: tuple[int, ...] = (4, 2, 1)
    cnn_hidden: int = 512
    """width of the linear layer after the convolutions (shared by actor and critic)"""
    mlp_hidden: tuple[int, ...] = (64, 64)
    """hidden layers of the separate actor and critic MLPs"""
    init_log_std: float = 0.0
    """initial log std of Gaussian actions (state-independent, learned)"""


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)  # type: ignore[arg-type]
    nn.init.constant_(layer.bias, bias)  # type: ignore[arg-type]
    return layer


class PPOAgent(nn.Module):
    """Actor and critic heads over features that subclasses compute (``trunks``); Gaussian or categorical actions."""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, actor_dim: int, critic_dim: int, log_std: float
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            n = int(action_space.n)  # type: ignore[attr-defined]
        elif isinstance(action_space, gym.spaces.Box):
            n = int(np.prod(action_space.shape))
            self.log_std = nn.Parameter(torch.full((n,), float(log_std)))
        else:
            raise ValueError(f"PPO supports Box and Discrete action spaces, got {action_space}")
        self.action_space = action_space
        self.actor_head = layer_init(nn.Linear(actor_dim, n), std=0.01)  # near-uniform / zero-mean start
        self.critic_head = layer_init(nn.Linear(critic_dim, 1), std=1.0)

    def trunks(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actor features, critic features) of a batch of raw observations."""
        raise NotImplementedError

    def _dist(self, feats: torch.Tensor) -> torch.distributions.Distribution:
        out = self.actor_head(feats)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        std = self.log_std.exp().expand_as(out)
        return torch.distributions.Independent(torch.distributions.Normal(out, std), 1)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic_head(self.trunks(obs)[1]).squeeze(-1)

    def get_action_and_value(
        self, obs: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, its log-prob, the policy's entropy, the value); samples an action when none is given."""
        a_feat, c_feat = self.trunks(obs)
        dist = self._dist(a_feat)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic_head(c_feat).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for the environment: the mean (or mode) when deterministic, clipped to the action box."""
        dist = self._dist(self.trunks(obs)[0])
        if self.discrete:
            return dist.probs.argmax(-1) if deterministic else dist.sample()  # type: ignore[attr-defined]
        return clip_action(dist.mean if deterministic else dist.sample(), self.action_space)


def clip_action(action: torch.Tensor, space: gym.Space) -> torch.Tensor:
    """Box actions clipped to the box (the log-prob stays that of the unclipped sample, as in CleanRL)."""
    if not isinstance(space, gym.spaces.Box):
        return action
    low = torch.as_tensor(space.low, dtype=action.dtype, device=action.device)
    high = torch.as_tensor(space.high, dtype=action.dtype, device=action.device)
    return torch.maximum(torch.minimum(action, high), low)


class CNNAgent(PPOAgent):
    """A Nature-DQN style CNN on uint8 (H, W, C) images (scaled to [0, 1]), shared by the actor and the critic."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: AgentConfig) -> None:
        super().__init__(observation_space, action_space, cfg.cnn_hidden, cfg.cnn_hidden, cfg.init_log_std)
        h, w, c_in = observation_space.shape  # type: ignore[misc]
        layers: list[nn.Module] = []
        c = c_in
        for out, k, s in zip(cfg.channels, cfg.kernels, cfg.strides, strict=True):
            layers += [layer_init(nn.Conv2d(c, out, k, s)), nn.ReLU()]
            c = out
        conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = conv(torch.zeros(1, c_in, h, w)).shape[1]
        self.trunk = nn.Sequential(conv, layer_init(nn.Linear(flat, cfg.cnn_hidden)), nn.ReLU())

    def trunks(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(obs.permute(0, 3, 1, 2).float() / 255.0)  # channels-first for the convolutions
        return feats, feats


class MLPAgent(PPOAgent):
    """Separate tanh MLPs for the actor and the critic on flattened vector observations."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: AgentConfig) -> None:
        last = cfg.mlp_hidden[-1] if cfg.mlp_hidden else int(np.prod(observation_space.shape))  # type: ignore[arg-type]
        super().__init__(observation_space, action_space, last, last, cfg.init_log_std)

        def mlp() -> nn.Sequential:
            layers: list[nn.Module] = [nn.Flatten()]
            d = int(np.prod(observation_space.shape))  # type: ignore[arg-type]
            for hdim in cfg.mlp_hidden:
                layers += [layer_init(nn.Linear(d, hdim)), nn.Tanh()]
                d = hdim
            return nn.Sequential(*layers)

        self.actor_trunk, self.critic_trunk = mlp(), mlp()

    def trunks(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float()
        return self.actor_trunk(x), self.critic_trunk(x)


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def make_agent(observation_space: gym.Space, action_space: gym.Space, cfg: AgentConfig | None = None) -> PPOAgent:
    """A CNN agent for uint8 image observations, an MLP agent otherwise."""
    cfg = cfg or AgentConfig()
    cls = CNNAgent if is_image_space(observation_space) else MLPAgent
    return cls(observation_space, action_space, cfg)


# ----------------------------------------------------------------------------------------------- pure pieces


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a rollout, all tensors (T, N).

    Args:
        rewards: r_t.
        values: V(s_t).
        next_values: V of the state reached by step t: V(s_{t+1}), or V(final_obs) where the episode was
            truncated at t (with SAME_STEP autoreset s_{t+1} is already the next episode's first state).
        terminated: 1 where s_{t+1} is terminal (its value is 0).
        dones: 1 where the episode ended at t (terminated or truncated): advantages do not flow across it.

    Returns:
        (advantages, returns = advantages + values).
    """
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t].float()) - values[t]
        last = delta + gamma * lam * (1.0 - dones[t].float()) * last
        adv[t] = last
    return adv, adv + values


def ppo_loss(
    new_logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    cfg: PPOConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO objective on one minibatch (all tensors (M,)): clipped surrogate + value loss - entropy bonus.

    Returns:
        (loss to minimize, detached statistics: pg_loss, v_loss, entropy, approx_kl, clipfrac).
    """
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    if cfg.norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    v_err = (new_value - returns) ** 2
    if cfg.clip_vloss:
        v_clipped = old_value + (new_value - old_value).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_err = torch.max(v_err, (v_clipped - returns) ** 2)
    v_loss = 0.5 * v_err.mean()
    ent = entropy.mean()
    loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
    with torch.no_grad():
        stats = {
            "pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": ent.detach(),
            "approx_kl": ((ratio - 1) - logratio).mean(),  # the low-variance k3 estimator
            "clipfrac": ((ratio - 1).abs() > cfg.clip_coef).float().mean(),
        }  # fmt: skip
    return loss, stats


@dataclass
class Rollout:
    """One rollout, every field (T, N, ...) on the agent's device."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    """the rewards learned from (scaled when ``norm_reward``)"""
    next_values: torch.Tensor
    terminated: torch.Tensor
    dones: torch.Tensor


class RunningMeanStd:
    """Running mean and variance (Chan's parallel update), as gymnasium's normalization wrappers keep them."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: np.ndarray) -> None:
        b_mean, b_var, b_count = float(np.mean(x)), float(np.var(x)), x.size
        delta, total = b_mean - self.mean, self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean, self.var, self.count = self.mean + delta * b_count / total, m2 / total, total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


def make_optimizer(agent: PPOAgent, cfg: PPOConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=1e-5)


def check_same_step(env: VectorEnv) -> None:
    mode = getattr(env, "autoreset_mode", None) or env.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(
            f"PPO needs a vector env with SAME_STEP autoreset, got {mode}; make it with "
            "gym.make_vec(..., vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP})"
        )


class PPORunner:
    """Trains ``agent`` on ``env`` one rollout + update at a time; keeps the state that spans rollouts.

    Args:
        env: a gymnasium vector env with SAME_STEP autoreset.
        agent: a :class:`PPOAgent` (already on ``device``).
        cfg: PPO settings.
        seed: seed of the first ``env.reset``.
        device: where observations go.
        optimizer: the agent's optimizer (default: CleanRL's Adam, eps 1e-5); pass a resumed one.
    """

    def __init__(
        self,
        env: VectorEnv,
        agent: PPOAgent,
        cfg: PPOConfig,
        seed: int | None = None,
        device: str = "cpu",
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        check_same_step(env)
        self.env, self.agent, self.cfg, self.device = env, agent, cfg, torch.device(device)
        self.optimizer = optimizer or make_optimizer(agent, cfg)
        self.obs, _ = env.reset(seed=seed)
        n = env.num_envs
        self.episode_return, self.episode_len = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.return_rms, self._disc_return = RunningMeanStd(), np.zeros(n)

    def _scale(self, reward: np.ndarray, dones: np.ndarray) -> np.ndarray:
        if not self.cfg.norm_reward:
            return reward
        self._disc_return = self._disc_return * self.cfg.gamma + reward
        self.return_rms.update(self._disc_return)
        self._disc_return[dones] = 0.0
        return reward / math.sqrt(self.return_rms.var + 1e-8)

    def collect(self, on_step: Callable[[int], None] | None = None) -> tuple[Rollout, dict[str, Any]]:
        """Runs ``num_steps`` steps; returns the rollout and the raw returns/lengths of the episodes that ended."""
        env, agent, t_max, n, dev = self.env, self.agent, self.cfg.num_steps, self.env.num_envs, self.device
        obs_buf = torch.zeros((t_max, n, *env.single_observation_space.shape),  # type: ignore[misc]
                              dtype=torch.as_tensor(np.asarray(self.obs)).dtype, device=dev)  # fmt: skip
        act_shape = () if agent.discrete else env.single_action_space.shape
        actions = torch.zeros((t_max, n, *act_shape), dtype=torch.long if agent.discrete else torch.float32, device=dev)  # type: ignore[misc]
        logprobs, values, rewards, final_values, terminated, truncated = (
            torch.zeros(t_max, n, device=dev) for _ in range(6)
        )
        returns, lengths, raw_reward = [], [], 0.0
        for t in range(t_max):
            obs = torch.as_tensor(np.asarray(self.obs), device=dev)
            with torch.no_grad():
                action, logp, _, value = agent.get_action_and_value(obs)
            env_action = clip_action(action, env.single_action_space).cpu().numpy()
            self.obs, reward, term, trunc, infos = env.step(env_action)
            reward, term, trunc = np.asarray(reward, np.float64), np.asarray(term, bool), np.asarray(trunc, bool)
            bootstrap = trunc & ~term  # a time limit, not a terminal state: bootstrap from the last observation
            if bootstrap.any():
                ids = np.flatnonzero(bootstrap)
                last = torch.as_tensor(np.stack([np.asarray(infos["final_obs"][i]) for i in ids]), device=dev)
                with torch.no_grad():
                    final_values[t, torch.as_tensor(ids, device=dev)] = agent.get_value(last).float()
            done = term | trunc
            self.episode_return += reward
            raw_reward += float(reward.mean()) / t_max
            self.episode_len += 1
            returns += self.episode_return[done].tolist()
            lengths += self.episode_len[done].tolist()
            self.episode_return[done], self.episode_len[done] = 0.0, 0
            obs_buf[t], actions[t], logprobs[t], values[t] = obs, action, logp, value
            rewards[t] = torch.as_tensor(self._scale(reward, done), dtype=torch.float32, device=dev)
            terminated[t] = torch.as_tensor(term, dtype=torch.float32, device=dev)
            truncated[t] = torch.as_tensor(bootstrap, dtype=torch.float32, device=dev)
            if on_step is not None:
                on_step(n)
        with torch.no_grad():
            last_value = agent.get_value(torch.as_tensor(np.asarray(self.obs), device=dev)).float()
        next_values = torch.cat([values[1:], last_value[None]])
        next_values = torch.where(truncated.bool(), final_values, next_values)
        dones = ((terminated + truncated) > 0).float()
        rollout = Rollout(obs_buf, actions, logprobs, values, rewards, next_values, terminated, dones)
        return rollout, {"returns": returns, "lengths": lengths, "reward_mean": raw_reward}

    def iteration(self, it: int, iterations: int, on_step: Callable[[int], None] | None = None) -> dict[str, float]:
        """One rollout and one update (iteration ``it`` of ``iterations``, for the LR schedule); returns metrics."""
        lr = self.cfg.lr * (1.0 - it / iterations) if self.cfg.anneal_lr else self.cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rollout, episodes = self.collect(on_step)
        stats = ppo_update(self.agent, self.optimizer, rollout, self.cfg)
        stats["lr"], stats["reward_mean"] = lr, episodes["reward_mean"]
        if episodes["returns"]:
            stats["episode_return"] = float(np.mean(episodes["returns"]))
            stats["episode_len"] = float(np.mean(episodes["lengths"]))
        stats["episodes"] = float(len(episodes["returns"]))
        return stats

    def state_dict(self) -> dict[str, Any]:
        """What resumes besides the agent and the optimizer: the reward scale (the env restarts fresh)."""
        return {"return_rms": self.return_rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "return_rms" in state:
            self.return_rms.load_state_dict(state["return_rms"])


def ppo_update(agent: PPOAgent, optimizer: torch.optim.Optimizer, rollout: Rollout, cfg: PPOConfig) -> dict[str, float]:
    """GAE, then ``update_epochs`` passes of shuffled minibatches (global torch RNG); returns mean statistics."""
    adv, ret = gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.dones,
                   cfg.gamma, cfg.gae_lambda)  # fmt: skip
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    obs, actions, logprobs = flat(rollout.obs), flat(rollout.actions), flat(rollout.logprobs)
    b_adv, b_ret, b_val = flat(adv), flat(ret), flat(rollout.values)
    batch = b_adv.shape[0]
    mb = max(1, batch // cfg.num_minibatches)
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.update_epochs):
        for idx in torch.randperm(batch, device=b_adv.device).split(mb):
            _, new_logp, entropy, new_value = agent.get_action_and_value(obs[idx], actions[idx])
            loss, stats = ppo_loss(new_logp, logprobs[idx], b_adv[idx], new_value, b_val[idx], b_ret[idx], entropy,
                                   cfg)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"] = nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        if cfg.target_kl is not None and float(stats["approx_kl"]) > cfg.target_kl:
            break
    out = {k: v / count for k, v in sums.items()}
    var = float(b_ret.var())
    out["explained_variance"] = float("nan") if var == 0 else 1.0 - float((b_ret - b_val).var()) / var
    out["value_mean"] = float(b_val.mean())
    out["learned_reward_mean"] = float(rollout.rewards.mean())  # scaled when norm_reward
    return out


# ------------------------------------------------------------------------------------------------ deployment


def _space_to_dict(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    assert isinstance(space, gym.spaces.Box)
    return {"type": "box", "low": space.low.tolist(), "high": space.high.tolist(), "dtype": str(space.dtype)}


def _space_from_dict(d: dict[str, Any]) -> gym.Space:
    if d["type"] == "discrete":
        return gym.spaces.Discrete(int(d["n"]))
    dtype = np.dtype(d["dtype"])
    return gym.spaces.Box(np.asarray(d["low"], dtype), np.asarray(d["high"], dtype), dtype=dtype)  # type: ignore[arg-type]


def export_ppo_policy(path: str | Path, agent: PPOAgent, cfg: AgentConfig) -> None:
    """``policy.safetensors`` with kind ``ppo_policy``: the agent, its config and its spaces."""
    from worldgrad.runtime.checkpoint import save_checkpoint
    from worldgrad.runtime.run import config_to_dict

    save_checkpoint(Path(path), {
        "kind": "ppo_policy", "agent": agent.state_dict(), "agent_config": config_to_dict(cfg),
        "observation_space": _space_to_dict(agent.observation_space),
        "action_space": _space_to_dict(agent.action_space),
    })  # fmt: skip


class PPOPolicy:
    """A trained PPO agent as an evaluation-harness policy: ``reset(seed)``, ``act(obs) -> action`` (the mean).

    Args:
        agent: the trained agent.
        name: shown in evaluation tables.
        deterministic: act with the mean (Gaussian) or mode (categorical), the usual choice at deployment.
    """

    def __init__(self, agent: PPOAgent, name: str = "ppo", deterministic: bool = True) -> None:
        self.agent, self.name, self.deterministic = agent.eval(), name, deterministic
        self.device = next(agent.parameters()).device
        self.image = isinstance(agent, CNNAgent)

    def reset(self, seed: int = 0) -> None:
        torch.manual_seed(seed)  # only sampled actions (deterministic=False) use it; the agent has no memory

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if self.image and (obs.dtype != np.uint8 or obs.ndim != 3):
            raise ValueError(f"PPOPolicy.act wants one uint8 (H, W, C) frame, got {obs.shape} {obs.dtype}")
        action = self.agent.act(torch.as_tensor(obs, device=self.device)[None], self.deterministic)[0].cpu().numpy()
        return action if self.agent.discrete else action.astype(np.float32)

    __call__ = act

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", deterministic: bool = True) -> PPOPolicy:
        """Loads a ``policy.safetensors`` written by train-ppo (kind ``ppo_policy``)."""
        from worldgrad.runtime.checkpoint import load_checkpoint
        from worldgrad.runtime.run import config_from_dict

        state = load_checkpoint(path)
        if state.get("kind") != "ppo_policy":
            kind = state.get("kind")
            raise ValueError(f"{path} is not a PPO policy (kind={kind!r}); pass train-ppo's policy.safetensors")
        cfg = config_from_dict(AgentConfig, state["agent_config"])
        agent = make_agent(_space_from_dict(state["observation_space"]), _space_from_dict(state["action_space"]), cfg)
        agent.load_state_dict(state["agent"])
        return cls(agent.to(device), name=f"ppo:{path}", deterministic=deterministic)
