"""Small synthetic stores for tests: frame pixels and actions encode (episode, t) so windows can be checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldgrad.data.store import EpisodeStore, StoreMeta

META = StoreMeta(env="pusht", image_shape=(8, 8, 3), action_dim=2, fps=5.0)


def synthetic_episode(ep: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(length)
    frames = np.zeros((length, 8, 8, 3), np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = (t % 256)[:, None, None]
    frames[..., 2] = (t // 256)[:, None, None]
    actions = np.stack([np.full(length, ep / 100.0), t / 1000.0], axis=1).astype(np.float32)
    intent = t % 3 == 0
    return frames, actions, intent


def make_store(path: Path, lengths: list[int]) -> EpisodeStore:
    store = EpisodeStore.create(path, META)
    for ep, n in enumerate(lengths):
        frames, actions, intent = synthetic_episode(ep, n)
        store.append(f"ep{ep:04d}", frames, actions, intent, info={"ep": ep})
    return store
