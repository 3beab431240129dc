"""The real systems worldgrad knows, by name. Unknown names fail loudly (no try-everything)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from worldgrad.envs.pushcube import PushCubeConfig, PushCubeEnv  # MuJoCo loads only when an env is built
from worldgrad.envs.pusht import PushTConfig, PushTEnv

ENV_NAMES = ("pusht", "pushcube")


def make_env(name: str, config: Any | None = None) -> gym.Env:
    """Builds the real-system environment ``name`` from its config (the default config if None)."""
    if name == "pusht":
        if config is not None and not isinstance(config, PushTConfig):
            raise TypeError(f"env 'pusht' takes a PushTConfig, got {type(config).__name__}")
        return PushTEnv(config)
    if name == "pushcube":
        if config is not None and not isinstance(config, PushCubeConfig):
            raise TypeError(f"env 'pushcube' takes a PushCubeConfig, got {type(config).__name__}")
        return PushCubeEnv(config)
    raise ValueError(f"unknown env {name!r}; choose one of {', '.join(ENV_NAMES)}")
