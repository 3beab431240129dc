"""The world model as a ``gymnasium.vector.VectorEnv``, so any gymnasium agent can train inside it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldgrad.imagine.rollout import StoreContexts, WorldModelRollout

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(frames uint8 (B, H, W, 3), first frames of the rollouts uint8 (B, H, W, 3)) -> rewards (B,)"""


class WorldModelVectorEnv(VectorEnv):
    """The world model as a gymnasium vector environment (same-step autoreset).

    Observations are uint8 (H, W, 3) images, actions float32 in [-1, 1]^A. ``reward_fn`` receives the new
    frames and the first frame of each rollout (the Push-T ranking reward's s_start); without one the reward
    is 0. Episodes are truncated after ``horizon`` steps and restarted from a fresh real context; the last
    observation is in ``infos["final_obs"]`` (mask ``infos["_final_obs"]``). Nothing here terminates: the
    world model has no notion of success.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        engine: WorldModelRollout,
        contexts: StoreContexts,
        reward_fn: RewardFn | None = None,
        horizon: int = 64,
    ) -> None:
        self.engine, self.contexts, self.reward_fn, self.horizon = engine, contexts, reward_fn, horizon
        self.num_envs = engine.num_envs
        s, a = engine.cfg.image_size, engine.cfg.action_dim
        self.single_observation_space = gym.spaces.Box(0, 255, (s, s, 3), np.uint8)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (a,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._start = torch.zeros(self.num_envs, s, s, 3, dtype=torch.uint8, device=engine.device)

    def _restart(self, ids: np.ndarray) -> torch.Tensor:
        frames, actions = self.contexts.sample(len(ids))
        obs = self.engine.reset(frames, actions, ids)
        self._start[torch.as_tensor(ids, device=self.engine.device)] = obs
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.contexts.rng = np.random.default_rng(seed)
        obs = self._restart(np.arange(self.num_envs))
        return obs.cpu().numpy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs = self.engine.step(actions)
        if self.reward_fn is None:
            reward = np.zeros(self.num_envs, np.float32)
        else:
            with torch.no_grad():
                reward = self.reward_fn(obs, self._start).float().cpu().numpy()
        truncated = (self.engine.steps >= self.horizon).cpu().numpy()
        terminated = np.zeros(self.num_envs, bool)
        out = obs.cpu().numpy()
        infos: dict[str, Any] = {}
        if truncated.any():
            ids = np.flatnonzero(truncated)
            infos = {"final_obs": out.copy(), "_final_obs": truncated.copy()}
            out[ids] = self._restart(ids).cpu().numpy()
        return out, reward, terminated, truncated, infos


def make_world_model_env(
    wm: str | Path,
    store: str | Path,
    reward: str | Path | None = None,
    num_envs: int = 16,
    horizon: int = 64,
    seed: int = 0,
    device: str = "auto",
) -> WorldModelVectorEnv:
    """A ready vector env: the world model of ``train-wm``, contexts from ``store``, the reward of ``train-reward``.

    Args:
        wm: ``wm.safetensors`` or a train-wm run folder.
        store: episode store the initial contexts are drawn from (the play data).
        reward: ``reward.safetensors`` from train-reward (None: reward 0).
        num_envs: imagined environments stepped together.
        horizon: steps before truncation.
        seed: seed of the sampling noise and of the context draws.
        device: auto, cpu or cuda.
    """
    from worldgrad.algos.train_reward import load_goal_reward
    from worldgrad.algos.train_wm import load_world_model
    from worldgrad.data.store import EpisodeStore
    from worldgrad.runtime.seeding import pick_device

    dev = pick_device(device)
    model, sampler = load_world_model(wm, dev)
    engine = WorldModelRollout(model, sampler, num_envs, seed=seed)
    contexts = StoreContexts(EpisodeStore.open(store), model.cfg.context, seed=seed)
    reward_fn = load_goal_reward(reward, dev) if reward is not None else None
    return WorldModelVectorEnv(engine, contexts, reward_fn, horizon)
