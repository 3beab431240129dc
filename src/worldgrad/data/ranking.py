"""Ranking pairs from passive video: frames only (no actions, labels or simulator values are read).

A sample is a window of ``L`` consecutive frames of one episode (L uniform in [min_len, max_len]):
s_start is its first frame, s_i and s_j two distinct frames inside it, and the goal is a *set* of frames
ending the window (``goal_frames`` frames, ``goal_stride`` apart). The model sees the mean embedding of that
set: over a few seconds the end-effector moves a lot while the object mostly stays, so the goal stands for
the scene's state rather than for where the end-effector happened to be. At RL time a set of goal images
with the end-effector at several places plays the same role.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldgrad.data.sampler import Split, split_keys
from worldgrad.data.store import Episode, EpisodeStore, StoreError


@dataclass(frozen=True)
class RankingBatch:
    start: np.ndarray
    """(B, H, W, 3) uint8 first frame of each window"""
    goal: np.ndarray
    """(B, K, H, W, 3) uint8 last frames of each window (the last frame first)"""
    frame_i: np.ndarray
    """(B, H, W, 3) uint8"""
    frame_j: np.ndarray
    """(B, H, W, 3) uint8"""
    i_later: np.ndarray
    """(B,) bool: frame i comes after frame j"""


class RankingSampler:
    """Draws ranking windows from one split of a store (episodes split as in :mod:`worldgrad.data.sampler`)."""

    def __init__(
        self,
        store: EpisodeStore,
        split: Split,
        min_len: int,
        max_len: int,
        val_fraction: float = 0.1,
        goal_frames: int = 1,
        goal_stride: int = 1,
        change_candidates: int = 1,
    ) -> None:
        if not 2 <= min_len <= max_len:
            raise ValueError(f"ranking windows need 2 <= min_len <= max_len, got {min_len}, {max_len}")
        self.min_len, self.max_len = min_len, max_len
        self.goal_offsets = np.arange(goal_frames) * goal_stride
        if change_candidates < 1:
            raise ValueError(f"change_candidates must be >= 1, got {change_candidates}")
        self.change_candidates = change_candidates
        self.episodes: list[Episode] = [store.episode(k) for k in split_keys(store.keys(), split, val_fraction)]
        self.episodes = [ep for ep in self.episodes if len(ep) >= min_len]
        if not self.episodes:
            raise StoreError(
                f"no {split} episode of {store.path} has {min_len} frames; collect more data or shorten min_len"
            )
        self._weights = np.array([len(ep) for ep in self.episodes], dtype=np.float64)
        self._weights /= self._weights.sum()

    def _window(self, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
        """One window (frames, start, length). With ``change_candidates`` = k > 1, the window is drawn among k
        candidates with probability proportional to how much the image changed from its first to its last
        frame: a small end-effector changes few pixels, a moved object many, so windows where the scene
        itself changed (the ones whose order says something about the task) are seen more often."""
        candidates = []
        for _ in range(self.change_candidates):
            frames = self.episodes[int(rng.choice(len(self.episodes), p=self._weights))].frames
            L = int(rng.integers(self.min_len, min(self.max_len, len(frames)) + 1))
            candidates.append((frames, int(rng.integers(0, len(frames) - L + 1)), L))
        if len(candidates) == 1:
            return candidates[0]
        change = np.array([np.abs(f[s + L - 1].astype(np.int16) - f[s]).mean() for f, s, L in candidates]) + 0.05
        return candidates[int(rng.choice(len(candidates), p=change / change.sum()))]

    def sample(self, batch_size: int, rng: np.random.Generator) -> RankingBatch:
        out: dict[str, list[np.ndarray]] = {"start": [], "goal": [], "frame_i": [], "frame_j": []}
        later = np.empty(batch_size, bool)
        for b in range(batch_size):
            frames, s, L = self._window(rng)
            i, j = rng.choice(L, size=2, replace=False)
            out["start"].append(frames[s])
            out["goal"].append(frames[np.maximum(s + L - 1 - self.goal_offsets, s)])
            out["frame_i"].append(frames[s + i])
            out["frame_j"].append(frames[s + j])
            later[b] = i > j
        return RankingBatch(**{k: np.stack(v) for k, v in out.items()}, i_later=later)
