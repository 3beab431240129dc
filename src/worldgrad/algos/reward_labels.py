"""Per-frame rewards of stored episodes from a trained reward model, and their label files.

Frame t is scored with s_start = frame max(0, t - start_offset) and s_goal = the goal image: the same
conditioning an imagined rollout of ``start_offset`` steps gives at RL time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldgrad.data.store import Episode, EpisodeStore
from worldgrad.models.reward import GoalReward


@torch.no_grad()
def episode_rewards(reward: GoalReward, frames: np.ndarray, start_offset: int, chunk: int = 512) -> np.ndarray:
    """Rewards (T,) float32 of an episode's frames (T, H, W, 3) uint8."""
    out = []
    starts = np.maximum(np.arange(len(frames)) - start_offset, 0)
    for a in range(0, len(frames), chunk):
        idx = np.arange(a, min(a + chunk, len(frames)))
        out.append(reward(np.asarray(frames[idx]), np.asarray(frames[starts[idx]])).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class LabelRewardConfig:
    """Write the reward of every stored frame into the store as a per-frame label."""

    reward: Path = Path("runs/reward-tiny/reward.safetensors")
    """reward model written by train-reward"""
    store: Path = Path("runs/pusht-tiny/data/play")
    """episode store to label"""
    name: str = "reward"
    """label name"""
    start_offset: int = 16
    """frame t is scored from s_start = frame t - start_offset"""
    device: str = "auto"


def _file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


def _up_to_date(ep: Episode, name: str, stamp: dict[str, object]) -> bool:
    meta = ep.path / "labels" / f"{name}.json"
    return name in ep.label_names() and meta.exists() and json.loads(meta.read_text()) == stamp


def label_store(cfg: LabelRewardConfig, progress: bool = True) -> dict[str, int]:
    """Labels every episode whose label is missing or was made by another model; idempotent, crash-safe.

    The label array is replaced atomically, then a small stamp (model digest, offset) is written; a crash
    between the two only makes the next run recompute that episode.
    """
    from worldgrad.algos.train_reward import load_goal_reward
    from worldgrad.runtime.atomic import save_json_atomic
    from worldgrad.runtime.seeding import pick_device

    store = EpisodeStore.open(cfg.store)
    reward = load_goal_reward(cfg.reward, pick_device(cfg.device))
    stamp = {"model": _file_digest(cfg.reward), "start_offset": cfg.start_offset}
    written = skipped = 0
    for ep in tqdm(list(store), desc=f"label {cfg.name}", disable=not progress):
        if _up_to_date(ep, cfg.name, stamp):
            skipped += 1
            continue
        store.write_label(ep.key, cfg.name, episode_rewards(reward, ep.frames, cfg.start_offset))
        save_json_atomic(ep.path / "labels" / f"{cfg.name}.json", stamp)
        written += 1
    return {"written": written, "skipped": skipped}
