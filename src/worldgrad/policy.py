"""A trained image policy as a product: the local model's filter plus the actor, driven by camera frames.

``ImagePolicy(local, actor)`` keeps the filter state between calls: ``reset()`` at the start of an
episode, then ``act(frame) -> action`` per control step (uint8 (H, W, 3) in, float32 action in [-1, 1]^A
out). It follows the evaluation harness's policy protocol, so the real system evaluates it like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class ImagePolicy:
    """Filter (local model posterior) + actor (its mode, or a sample) on a stream of images.

    Args:
        local: a :class:`worldgrad.algos.dmo_sapo.LocalModel`.
        actor: the SAPO actor over the local model's features.
        name: shown in evaluation tables.
        deterministic: act with the mode of the tanh-Gaussian (the usual choice at deployment).
        action_scale: the actor's squashed output times this is the action (as in training).
    """

    def __init__(
        self, local: Any, actor: torch.nn.Module, name: str = "policy", deterministic: bool = True,
        action_scale: float = 1.0,
    ) -> None:  # fmt: skip
        self.local, self.actor, self.name, self.deterministic = local, actor, name, deterministic
        self.action_scale = action_scale
        self.device = next(actor.parameters()).device
        self.action_dim = int(actor.net[-1].out_features // 2)  # type: ignore[index]
        self._state: Any = None
        self._last = torch.zeros(1, self.action_dim, device=self.device)

    def reset(self, seed: int = 0) -> None:
        self._state = self.local.initial_state(1)
        self._last = torch.zeros(1, self.action_dim, device=self.device)
        torch.manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._state is None:
            self.reset()
        frame = torch.as_tensor(np.asarray(obs), device=self.device)[None]
        if frame.dtype != torch.uint8 or frame.ndim != 4 or frame.shape[-1] != 3:
            raise ValueError(f"ImagePolicy.act wants one uint8 (H, W, 3) frame, got {tuple(obs.shape)} {obs.dtype}")
        self._state = self.local.observe_step(self._state, self._last, self.local.encode(frame))
        dist = self.actor(self.local.features(self._state))
        action = self.action_scale * (dist.mode() if self.deterministic else dist.rsample().action)
        self._last = action
        return action[0].cpu().numpy().astype(np.float32)

    __call__ = act

    @classmethod
    def from_agent(cls, local: Any, agent: Any, name: str = "policy", deterministic: bool = True) -> ImagePolicy:
        """The policy a DMO-SAPO :class:`~worldgrad.algos.dmo_sapo.Agent` trains, with the agent's
        ``action_scale`` (an evaluation without it would act with 1 / action_scale times the trained actions)."""
        return cls(local, agent.actor, name=name, deterministic=deterministic, action_scale=agent.cfg.action_scale)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", deterministic: bool = True) -> ImagePolicy:
        """Loads ``policy.safetensors`` (written by train-policy): everything needed to act on camera images."""
        from worldgrad.algos.dmo_sapo import SAPOConfig
        from worldgrad.algos.sapo import Actor
        from worldgrad.models.rssm import RSSM, RSSMConfig
        from worldgrad.runtime.checkpoint import load_checkpoint
        from worldgrad.runtime.run import config_from_dict

        state = load_checkpoint(path)
        if state.get("kind") != "image_policy":
            raise ValueError(f"{path} is not a policy written by train-policy (policy.safetensors); pass that file")
        local = RSSM(config_from_dict(RSSMConfig, state["local_config"])).to(device)
        local.load_state_dict(state["local"])
        sapo = config_from_dict(SAPOConfig, state["sapo"])
        actor = Actor(local.feature_dim, local.cfg.action_dim, sapo.actor_hidden).to(device)
        actor.load_state_dict(state["actor"])
        return cls(local.eval(), actor.eval(), name=f"policy:{path}", deterministic=deterministic,
                   action_scale=sapo.action_scale)  # fmt: skip
