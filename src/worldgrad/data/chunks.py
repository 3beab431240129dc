"""Action chunks from the intent-on segments of a store, for behaviour cloning.

Only frames where the operator pressed the intent button are demonstrations of the task; the rest is
play (wandering, poking the cube about), which a cloned policy must not imitate. A sample is an
intent-on frame t and the chunk of the ``chunk`` actions from t on; steps of the chunk past the end of
t's intent segment (or of the episode) are padded with the last valid action and masked out. With
``prev_frame`` the previous frame comes along, clamped to the segment's first frame so no intent-off
frame is ever read. Episodes split into train and validation as in the window sampler (by key hash).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldgrad.data.sampler import Split, split_keys
from worldgrad.data.store import EpisodeStore, StoreError


@dataclass(frozen=True)
class ChunkBatch:
    frames: np.ndarray
    """(B, H, W, 3) uint8, or (B, 2, H, W, 3) (previous, current) with ``prev_frame``"""
    actions: np.ndarray
    """(B, chunk, A) float32"""
    mask: np.ndarray
    """(B, chunk) bool: the step lies in the same intent segment as the frame"""
    episode: np.ndarray
    """(B,) index into the dataset's episode list"""
    t: np.ndarray
    """(B,) frame index within the episode"""


def intent_segments(intent: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in a (T,) bool array."""
    x = np.concatenate([[False], np.asarray(intent, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(x))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class ChunkDataset:
    """Every intent-on frame of one split of a store, with its chunk of future actions.

    Args:
        store: the episode store.
        chunk: actions per sample.
        split: "train", "val" or "all".
        val_fraction: share of episodes held out for validation.
        prev_frame: also return the previous frame (within the segment).
    """

    def __init__(
        self,
        store: EpisodeStore,
        chunk: int,
        split: Split = "train",
        val_fraction: float = 0.1,
        prev_frame: bool = False,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.store, self.chunk, self.prev_frame = store, chunk, prev_frame
        self.keys = split_keys(store.keys(), split, val_fraction)
        self.episodes = [store.episode(k) for k in self.keys]
        self.segments = [(e, a, b) for e, ep in enumerate(self.episodes) for a, b in intent_segments(ep.intent)]
        ep_idx, ts, seg_start, seg_end = [], [], [], []
        for e, a, b in self.segments:
            ep_idx.append(np.full(b - a, e))
            ts.append(np.arange(a, b))
            seg_start.append(np.full(b - a, a))
            seg_end.append(np.full(b - a, b))
        self.episode, self.t, self.seg_start, self.seg_end = map(_cat, (ep_idx, ts, seg_start, seg_end))

    def __len__(self) -> int:
        return len(self.t)

    def require(self, what: str) -> ChunkDataset:
        """Raises a one-line error when there is no intent-on frame; returns self otherwise."""
        if len(self) == 0:
            raise StoreError(
                f"the {what} episodes of store {self.store.path} ({len(self.keys)} of {len(self.store)}) hold no "
                "intent-on frames, so there is nothing to clone; collect with an operator that marks task attempts "
                "(e.g. --operator pusher) or more episodes"
            )
        return self

    def action_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std of the intent-on actions (for normalization)."""
        acts = np.concatenate([np.asarray(self.episodes[e].actions[a:b]) for e, a, b in self.segments])
        return acts.mean(0), acts.std(0)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ChunkBatch:
        """Draws ``batch_size`` samples uniformly over all intent-on frames of the split."""
        return self.gather(rng.integers(0, len(self), size=batch_size))

    def gather(self, index: np.ndarray) -> ChunkBatch:
        """The samples at ``index`` (e.g. ``np.arange`` for a full validation pass)."""
        index = np.asarray(index, dtype=np.int64)
        k = self.chunk
        frames, actions, masks = [], [], []
        for i in index.tolist():
            ep, t, end = self.episodes[self.episode[i]], int(self.t[i]), int(self.seg_end[i])
            n = min(k, end - t)
            acts = np.asarray(ep.actions[t : t + n], dtype=np.float32)
            actions.append(np.concatenate([acts, np.repeat(acts[-1:], k - n, axis=0)]))
            masks.append(np.arange(k) < n)
            if self.prev_frame:
                frames.append(np.stack([ep.frames[max(t - 1, int(self.seg_start[i]))], ep.frames[t]]))
            else:
                frames.append(np.asarray(ep.frames[t]))
        return ChunkBatch(np.stack(frames), np.stack(actions), np.stack(masks), self.episode[index], self.t[index])

    def history(self, index: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``length`` frames up to each sample's frame t and the actions between them, for a filter's burn-in.

        Returns frames uint8 (B, length, H, W, 3) ending at t and actions (B, length - 1, A), the action after
        each frame but the last (the layout of the imagined environments' contexts). The history may reach
        back before the intent segment (it is only observed, never imitated); near the episode's start the
        first frame is repeated, with zero actions between the copies.
        """
        if length < 1:
            raise ValueError(f"history length must be >= 1, got {length}")
        frames, actions = [], []
        for i in np.asarray(index, dtype=np.int64).tolist():
            ep, t = self.episodes[self.episode[i]], int(self.t[i])
            steps = np.arange(t - length + 1, t + 1)
            frames.append(np.asarray(ep.frames[np.maximum(steps, 0)]))
            acts = np.asarray(ep.actions[np.maximum(steps[:-1], 0)], dtype=np.float32)
            actions.append(np.where((steps[:-1] >= 0)[:, None], acts, 0.0).astype(np.float32))
        return np.stack(frames), np.stack(actions)
