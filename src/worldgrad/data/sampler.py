"""Random fixed-length windows from the episode store, split into train and validation by episode.

A window is ``length`` consecutive frames of one episode (context + targets); windows never cross an
episode boundary. The split hashes each episode key, so it is deterministic and an episode keeps its
side when more episodes are added to the store. The sampler returns frames, actions, intent and
requested labels only: simulator ground truth is never read here.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from worldgrad.data.store import EpisodeStore, StoreError

Split = Literal["train", "val", "all"]


def split_of(key: str, val_fraction: float) -> Literal["train", "val"]:
    """Deterministic train/validation assignment of one episode key."""
    return "val" if (zlib.crc32(key.encode()) % 10_000) < val_fraction * 10_000 else "train"


def split_keys(keys: Sequence[str], split: Split, val_fraction: float) -> list[str]:
    """Keys of ``split``. With two or more episodes both sides are non-empty (the smallest hash moves)."""
    if split == "all" or val_fraction <= 0:
        return list(keys) if split != "val" else []
    val = [k for k in keys if split_of(k, val_fraction) == "val"]
    if len(keys) >= 2 and (not val or len(val) == len(keys)):
        # Tiny stores: force one episode onto the missing side so both splits exist.
        by_hash = sorted(keys, key=lambda k: zlib.crc32(k.encode()))
        val = [by_hash[0]] if not val else [k for k in val if k != by_hash[-1]]
    chosen = set(val) if split == "val" else set(keys) - set(val)
    return [k for k in keys if k in chosen]


@dataclass(frozen=True)
class WindowBatch:
    """A batch of windows. Shapes: B windows of L frames."""

    frames: np.ndarray
    """(B, L, H, W, 3) uint8"""
    actions: np.ndarray
    """(B, L, A) float32; action t follows frame t"""
    intent: np.ndarray
    """(B, L) bool"""
    labels: dict[str, np.ndarray]
    """name -> (B, L, ...) per-frame labels"""
    episode: np.ndarray
    """(B,) int64 index into the sampler's episode list"""
    start: np.ndarray
    """(B,) int64 first frame of each window within its episode"""


class WindowSampler:
    """Samples windows of ``length`` frames from one split of a store.

    Args:
        store: the episode store.
        length: frames per window (context + targets).
        split: "train", "val" or "all".
        val_fraction: share of episodes held out for validation.
        labels: per-frame label names to return with each window.
    """

    def __init__(
        self,
        store: EpisodeStore,
        length: int,
        split: Split = "train",
        val_fraction: float = 0.1,
        labels: Sequence[str] = (),
    ) -> None:
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        self.store, self.length, self.labels = store, length, tuple(labels)
        self.keys = split_keys(store.keys(), split, val_fraction)
        self.episodes = [store.episode(k) for k in self.keys]
        lengths = np.array([len(ep) for ep in self.episodes], dtype=np.int64)
        self.num_windows = np.maximum(lengths - length + 1, 0)
        if self.num_windows.sum() == 0:
            raise StoreError(
                f"no {split} episode of store {store.path} has {length} frames "
                f"({len(self.keys)} episodes, longest {lengths.max(initial=0)}); "
                "collect more or longer episodes, or shorten the window"
            )
        for name in self.labels:
            missing = [ep.key for ep in self.episodes if name not in ep.label_names()]
            if missing:
                raise StoreError(
                    f"label {name!r} is missing in {len(missing)} episodes of {store.path} (e.g. {missing[0]}); "
                    "run the labelling command on this store first"
                )
        self._cum = np.cumsum(self.num_windows)

    def __len__(self) -> int:
        """Number of distinct windows."""
        return int(self._cum[-1])

    def locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Maps flat window indices to (episode index, start frame)."""
        ep = np.searchsorted(self._cum, index, side="right")
        start = index - (self._cum[ep] - self.num_windows[ep])
        return ep, start

    def sample(self, batch_size: int, rng: np.random.Generator) -> WindowBatch:
        """Draws ``batch_size`` windows uniformly over all windows of the split."""
        return self.gather(rng.integers(0, len(self), size=batch_size))

    def gather(self, index: np.ndarray) -> WindowBatch:
        """The windows at flat indices ``index`` (e.g. ``np.arange`` for a full validation pass)."""
        ep_idx, starts = self.locate(np.asarray(index, dtype=np.int64))
        L = self.length
        frames, actions, intent = [], [], []
        labels: dict[str, list[np.ndarray]] = {n: [] for n in self.labels}
        for e, s in zip(ep_idx.tolist(), starts.tolist(), strict=True):
            ep = self.episodes[e]
            frames.append(ep.frames[s : s + L])
            actions.append(ep.actions[s : s + L])
            intent.append(ep.intent[s : s + L])
            for n in self.labels:
                labels[n].append(ep.label(n)[s : s + L])
        return WindowBatch(
            frames=np.stack(frames),
            actions=np.stack(actions).astype(np.float32, copy=False),
            intent=np.stack(intent),
            labels={n: np.stack(v) for n, v in labels.items()},
            episode=ep_idx,
            start=starts,
        )
