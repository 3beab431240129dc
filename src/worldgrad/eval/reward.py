"""``worldgrad eval-reward``: does the learned reward track the task on held-out recordings?

Uses the simulator's coverage recorded with the held-out episodes (evaluation only): Spearman rank
correlation between reward and coverage, pooled and per episode; pairwise ranking accuracy on held-out
windows; where the goal image itself ranks among held-out frames; a scatter plot and a video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr

from worldgrad.algos.reward_labels import episode_rewards
from worldgrad.data.ranking import RankingSampler
from worldgrad.data.store import EpisodeStore
from worldgrad.eval.video import write_video
from worldgrad.models.image import to_model
from worldgrad.runtime.checkpoint import load_checkpoint


@dataclass(frozen=True)
class EvalRewardConfig:
    """Validate a trained reward model against true coverage on held-out recordings."""

    reward: Path = Path("runs/reward-tiny/reward.safetensors")
    """reward model written by train-reward"""
    store: Path = Path("runs/pusht-tiny/data/heldout")
    """held-out episode store (recorded with its simulator coverage)"""
    out: Path = Path("runs/reward-tiny/eval")
    """folder for results.json, scatter.png and the video"""
    start_offset: int = 16
    """frame t is scored from s_start = frame t - start_offset"""
    device: str = "auto"


def _curve_panel(values: np.ndarray, coverage: np.ndarray, t: int, size: int) -> np.ndarray:
    """A size x size plot of the reward (blue) and coverage (green) up to step t, drawn with cv2 (fast)."""
    panel = np.full((size, size, 3), 255, np.uint8)
    lo, hi = float(values.min()), float(values.max()) + 1e-6
    xs = np.linspace(4, size - 4, len(values)).astype(int)
    ys_r = (size - 4 - (values - lo) / (hi - lo) * (size - 8)).astype(int)
    ys_c = (size - 4 - np.clip(coverage, 0, 1) * (size - 8)).astype(int)
    for ys, colour in ((ys_c, (60, 170, 60)), (ys_r, (40, 90, 220))):
        pts = np.stack([xs[: t + 1], ys[: t + 1]], axis=1).reshape(-1, 1, 2)
        cv2.polylines(panel, [pts], False, colour, 1, cv2.LINE_AA)
    cv2.putText(panel, "reward", (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (40, 90, 220), 1, cv2.LINE_AA)
    cv2.putText(panel, "coverage", (6, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 170, 60), 1, cv2.LINE_AA)
    return panel


def _percentile_or_none(values: np.ndarray, x: float) -> float | None:
    return float((values < x).mean() * 100.0) if len(values) else None


def evaluate_reward(cfg: EvalRewardConfig) -> dict[str, Any]:
    from worldgrad.algos.train_reward import load_goal_reward
    from worldgrad.runtime.seeding import pick_device

    device = pick_device(cfg.device)
    reward = load_goal_reward(cfg.reward, device)
    store = EpisodeStore.open(cfg.store)
    rewards, coverages, per_episode = [], [], []
    for ep in store:
        r = episode_rewards(reward, ep.frames, cfg.start_offset)
        c = np.asarray(ep.sim("coverage"), dtype=np.float64)
        rewards.append(r)
        coverages.append(c)
        if np.ptp(c) > 1e-3:  # Spearman is undefined on a constant coverage
            per_episode.append(float(spearmanr(r, c).statistic))
    r_all, c_all = np.concatenate(rewards), np.concatenate(coverages)
    # ranking accuracy on held-out windows (the training objective, on data never trained on)
    w = load_checkpoint(cfg.reward)["windows"]  # the windows the model was trained on
    sampler = RankingSampler(store, "all", w["min_len"], w["max_len"], 0.1, w["goal_frames"], w["goal_stride"])
    rng = np.random.default_rng(0)
    correct = []
    with torch.no_grad():
        for _ in range(8):
            b = sampler.sample(128, rng)
            _, logs = reward.model.compute_loss(
                *(to_model(x, device) for x in (b.start, b.goal, b.frame_i, b.frame_j)),
                torch.as_tensor(b.i_later, device=device),
            )
            correct.append(float(logs["accuracy"]))
        # the goal image itself, scored from held-out start frames
        starts = np.stack([ep.frames[int(rng.integers(len(ep)))] for ep in store for _ in range(8)])
        goal_r = np.concatenate(
            [reward(np.repeat(g[None], len(starts), 0), starts).cpu().numpy() for g in reward.goal_images]
        )
    if np.ptp(c_all) < 1e-3:
        raise ValueError(
            f"coverage is constant over the held-out store {cfg.store}; record held-out data where the T "
            "reaches the goal (e.g. --operator explorer:0.5,expert:0.5)"
        )
    result = {
        "spearman_pooled": float(spearmanr(r_all, c_all).statistic),
        "spearman_per_episode_mean": float(np.mean(per_episode)) if per_episode else None,
        "episodes_scored": len(per_episode),
        "pairwise_accuracy": float(np.mean(correct)),
        "goal_percentile": float((r_all < np.median(goal_r)).mean() * 100.0),
        # held-out play often rests at the goal (coverage ~1): those frames may tie with or beat the goal image,
        # so also rank the goal among frames that are not at the goal, and say what scores above it
        "goal_percentile_off_goal": _percentile_or_none(r_all[c_all < 0.9], np.median(goal_r)),
        "coverage_above_goal_mean": float(c_all[r_all >= np.median(goal_r)].mean())
        if (r_all >= np.median(goal_r)).any()
        else None,
        "frames": len(r_all),
        "reward_mean": float(r_all.mean()),
        "reward_std": float(r_all.std()),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.json").write_text(json.dumps(result, indent=2))
    _scatter(cfg.out / "scatter.png", r_all, c_all, result)
    _video(cfg.out / "reward_video.mp4", store, rewards, coverages)
    return result


def _scatter(path: Path, r: np.ndarray, c: np.ndarray, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    ax.scatter(c, r, s=2, alpha=0.3)
    ax.set_xlabel("true coverage (simulator, evaluation only)")
    ax.set_ylabel("learned reward")
    ax.set_title(f"Spearman {result['spearman_pooled']:.3f} over {result['frames']} frames", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _video(path: Path, store: EpisodeStore, rewards: list[np.ndarray], coverages: list[np.ndarray]) -> None:
    """The held-out episode with the widest coverage range, frames beside the reward curve."""
    e = int(np.argmax([np.ptp(c) for c in coverages]))
    frames = store.episode(store.keys()[e]).frames
    n = min(len(frames), 300)
    out = []
    for t in range(n):
        big = cv2.resize(np.asarray(frames[t]), (256, 256), interpolation=cv2.INTER_NEAREST)
        out.append(np.concatenate([big, _curve_panel(rewards[e][:n], coverages[e][:n], t, 256)], axis=1))
    write_video(path, out, fps=store.meta.fps)
