"""Policies the evaluation harness can run on the real system, named by a spec string.

- ``random``: uniform actions in [-1, 1]^2.
- ``operator:NAME``: a scripted play operator (it reads the screen like a human; a reference, not a
  learned policy).
- ``checkpoint:PATH``: a trained image policy file (``policy.safetensors`` from train-policy, or the ACT
  baseline's from train-bc, or the PPO baseline's from train-ppo); the checkpoint's ``kind`` says which
  loader reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from worldgrad.envs.pushcube import PushCubeEnv
from worldgrad.envs.pusht import PushTEnv


class Policy(Protocol):
    """Maps the current observation to an action. ``reset`` is called at the start of each episode."""

    name: str

    def reset(self, seed: int) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions in the action box."""

    name = "random"

    def __init__(self, action_dim: int = 2) -> None:
        self.action_dim = action_dim
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 2])

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)


class OperatorPolicy:
    """A scripted operator driving the env it watches (it needs the env's operator view, not pixels)."""

    def __init__(self, operator_name: str, env: PushTEnv | PushCubeEnv) -> None:
        self.name = f"operator:{operator_name}"
        self._env = env
        if isinstance(env, PushCubeEnv):
            from worldgrad.operators.pushcube import make_operator as make_cube_operator

            self._op = make_cube_operator(operator_name, env.config.velocity_limits)
        else:
            from worldgrad.operators.pusht import make_operator

            self._op = make_operator(operator_name, env.config.max_step_px)

    def reset(self, seed: int) -> None:
        self._op.reset(np.random.default_rng([seed, 1]))

    def act(self, obs: np.ndarray) -> np.ndarray:
        action, _ = self._op.act(self._env.operator_view())
        return action


def load_checkpoint_policy(path: str, deterministic: bool = True) -> Policy:
    """Loads a trained policy file, dispatching on the ``kind`` its writer recorded (``deterministic`` False:
    a train-policy policy acts with samples of its action distribution instead of its mode)."""
    from worldgrad.runtime.checkpoint import load_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(f"policy checkpoint {path} does not exist; pass a policy.safetensors a training wrote")
    kind = load_checkpoint(path).get("kind")
    if kind == "image_policy":
        from worldgrad.policy import ImagePolicy

        return ImagePolicy.from_checkpoint(path, deterministic=deterministic)
    if not deterministic:
        raise ValueError(f"sampled:{path} needs a policy written by train-policy (kind={kind!r}); use checkpoint:")
    if kind == "ppo_policy":
        from worldgrad.algos.ppo import PPOPolicy

        return PPOPolicy.from_checkpoint(path)
    if kind == "act_policy":
        from worldgrad.models.act import ACTPolicy

        return ACTPolicy.from_checkpoint(path)
    raise ValueError(
        f"{path} holds no known policy (kind={kind!r}); pass a policy.safetensors written by train-policy, "
        "train-bc or train-ppo"
    )


def make_policy(spec: str, env: PushTEnv | PushCubeEnv) -> Policy:
    """Builds a policy from ``random``, ``operator:NAME``, ``checkpoint:PATH`` or ``sampled:PATH`` (a train-policy
    policy acting with samples of its tanh-Gaussian, seeded per episode, instead of its mode)."""
    kind, _, arg = spec.partition(":")
    if kind == "random" and not arg:
        return RandomPolicy(env.action_space.shape[0])
    if kind == "operator" and arg:
        return OperatorPolicy(arg, env)
    if kind in ("checkpoint", "sampled") and arg:
        return load_checkpoint_policy(arg, deterministic=kind == "checkpoint")
    raise ValueError(
        f"unknown policy {spec!r}; use 'random', 'operator:NAME' (e.g. operator:pusher), 'checkpoint:PATH' or "
        "'sampled:PATH'"
    )
