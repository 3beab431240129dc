"""``worldgrad eval-reward``: does the learned reward track the task on held-out recordings?

Uses the simulator's coverage recorded with the held-out episodes (evaluation only): Spearman rank
correlation between reward and coverage, pooled and per episode; pairwise ranking accuracy on held-out
windows; where the goal image itself ranks among held-out frames; a scatter plot and a video. With
``agent_poses`` > 0 it also asks the simulator (evaluation only) how much the reward pays for the agent's place
alone: for a few T poses, the reward over a grid of agent positions with the T held still, next to the gain of
moving the T to the goal. A policy optimizer finds any such loophole (e.g. parking the agent on the goal).
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
    agent_poses: int = 4
    """T poses of the agent-position check (0: skip it); needs Push-T frames of the reward's image size"""
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
    if cfg.agent_poses > 0 and store.meta.env == "pusht":
        maps, effect = agent_position_effect(reward, cfg.agent_poses)
        result.update(effect)
        _heatmaps(cfg.out / "agent_effect.png", maps, effect)
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


AGENT_GRID = np.linspace(60.0, 452.0, 9)
"""agent positions (board pixels, per axis) of the agent-position check"""
NEAR_T = 100.0
"""agent positions closer than this to the T's origin (board pixels) count as near it (the T spans ~120 px)"""


@torch.no_grad()
def agent_position_effect(
    reward: Any, poses: int, seed: int = 1_000_500, image_size: int | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """The reward over a 9 x 9 grid of agent positions with the T held still, for ``poses`` T poses of evaluation
    seeds (s_start = the frame as reset), next to the reward gain of moving the T to the goal (agent unmoved).

    ``reward(frames (N, H, W, 3) uint8, starts (N, H, W, 3) uint8) -> (N,)``: a :class:`GoalReward` or any scorer
    of frames (e.g. the local model's reward head, :func:`worldgrad.eval.local.head_scorer`); ``image_size``
    defaults to the size of its goal images. Returns the maps (poses, 9, 9) and ``agent_range`` (mean over poses
    of max - min over the grid), ``agent_on_goal_gain`` (mean reward with the agent inside the goal region minus
    elsewhere), ``agent_near_t_gain`` (mean reward with the agent within ``NEAR_T`` pixels of the T minus farther
    away: what approaching the T is worth, the cue a pusher needs), ``t_to_goal_gain`` and
    ``agent_range_vs_t_gain`` (what parking the agent is worth against solving the task).
    """
    from worldgrad.envs.pusht import GOAL_POSE, PushTConfig, PushTEnv

    env = PushTEnv(PushTConfig(image_size=image_size or int(reward.goal_images.shape[1])))
    xs, ys = np.meshgrid(AGENT_GRID, AGENT_GRID)
    on_goal = np.hypot(xs - GOAL_POSE[0], ys - GOAL_POSE[1]) < 80.0  # the goal T's extent around its origin
    maps, gains, near = [], [], []
    for k in range(poses):
        start, info = env.reset(seed=seed + k)
        block, agent = info["block_pose"], info["agent_pos"]
        near.append(np.hypot(xs - block[0], ys - block[1]) < NEAR_T)
        frames = [env.reset(seed=seed + k, options={"agent_pos": (x, y), "block_pose": block})[0]
                  for x, y in zip(xs.ravel(), ys.ravel(), strict=True)]  # fmt: skip
        goal_frame, _ = env.reset(seed=seed + k, options={"agent_pos": tuple(agent), "block_pose": GOAL_POSE})
        starts = np.repeat(start[None], len(frames) + 2, 0)
        r = torch.as_tensor(reward(np.stack([*frames, start, goal_frame]), starts)).float().cpu().numpy()
        maps.append(r[:-2].reshape(xs.shape))
        gains.append(float(r[-1] - r[-2]))
    env.close()
    m = np.stack(maps)
    effect = {
        "agent_range": float(np.mean(m.max((1, 2)) - m.min((1, 2)))),
        "agent_on_goal_gain": float(np.mean(m[:, on_goal]) - np.mean(m[:, ~on_goal])),
        "agent_near_t_gain": float(np.mean([mk[nk].mean() - mk[~nk].mean() for mk, nk in zip(m, near, strict=True)])),
        "t_to_goal_gain": float(np.mean(gains)),
    }
    effect["agent_range_vs_t_gain"] = effect["agent_range"] / max(abs(effect["t_to_goal_gain"]), 1e-6)
    return m, effect


def _heatmaps(path: Path, maps: np.ndarray, effect: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.8), dpi=110, squeeze=False)
    dev = maps - maps.mean((1, 2), keepdims=True)  # each T pose's own level differs; show what the agent adds
    lim = float(np.abs(dev).max())
    extent = (AGENT_GRID[0], AGENT_GRID[-1], AGENT_GRID[-1], AGENT_GRID[0])  # image rows: y downward
    for ax, m in zip(axes[0], dev, strict=True):
        im = ax.imshow(m, vmin=-lim, vmax=lim, extent=extent, cmap="RdBu_r")
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(f"reward minus its mean vs agent position, T held still: range {effect['agent_range']:.2f}, "
                 f"T-to-goal gain {effect['t_to_goal_gain']:.2f}", fontsize=8)  # fmt: skip
    fig.savefig(path)
    plt.close(fig)
