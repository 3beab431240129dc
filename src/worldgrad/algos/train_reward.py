"""``worldgrad train-reward``: fit the ranking reward on passive video, resumable, then calibrate it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldgrad.data.ranking import RankingSampler
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.models.image import changed_pixels, to_model
from worldgrad.models.reward import RankingReward, RewardModelConfig
from worldgrad.runtime.checkpoint import load_checkpoint
from worldgrad.runtime.metrics import MetricsLogger
from worldgrad.runtime.resume import resume_or_start, save_training_state
from worldgrad.runtime.run import RunDir, config_from_dict, config_to_dict
from worldgrad.runtime.seeding import pick_device, seed_everything


@dataclass(frozen=True)
class TrainRewardConfig:
    """Train the goal-conditioned ranking reward on the frames of an episode store."""

    store: Path = Path("runs/pusht-tiny/data/play")
    """episode store with the training video (only frames are read)"""
    runs: Path = Path("runs")
    """parent folder of run folders"""
    name: str = "reward-tiny"
    """run folder name; re-running with the same name resumes (a larger --steps extends the run)"""
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    steps: int = 400
    """optimizer steps"""
    batch_size: int = 64
    """ranking pairs per step"""
    lr: float = 1e-3
    """AdamW learning rate (cosine decay to 10 %)"""
    weight_decay: float = 1e-4
    min_window: int = 4
    """shortest window s_start..s_goal, in frames"""
    max_window: int = 48
    """longest window, in frames (48 = 9.6 s at 5 Hz)"""
    goal_frames: int = 1
    """frames ending each window that form its goal set (mean embedding); 1 = the last frame (the paper)"""
    goal_stride: int = 2
    """spacing of the goal-set frames when goal_frames > 1"""
    change_candidates: int = 8
    """> 1: draw each window among this many, weighted by image change start -> end (favours moved objects)"""
    tie_pixels: int = 40
    """> 0: pairs whose two frames differ in fewer pixels than this are ties, pulled to the same energy instead of
    ranked by time (a small end-effector moving alone is not progress). 40 at 64x64 for Push-T: 97.5 % of play
    pairs where the T stayed put and 1.4 % of those where it moved fall below it; 0: off (the paper's loss)"""
    tie_weight: float = 1.0
    """weight of the tie term"""
    val_fraction: float = 0.1
    """share of episodes held out for validation ranking accuracy"""
    eval_every: int = 100
    """steps between validation and checkpoint"""
    seed: int = 0
    device: str = "auto"
    """auto, cpu, cuda or cuda:N"""
    norm_frames: int = 2048
    """training frames used to fit the reward's mean and std"""
    goal_image: Path | None = None
    """PNG of the goal the user shows (default: Push-T's goal rendered with the agent at 8 spots)"""


PRESETS: dict[str, TrainRewardConfig] = {
    "tiny": TrainRewardConfig(),
    "cpu": TrainRewardConfig(
        name="reward-cpu", store=Path("runs/pusht-cpu/data/play"), steps=1200, eval_every=200, lr=3e-4
    ),
    "paper": TrainRewardConfig(
        name="reward-paper", store=Path("runs/pusht-paper/data/play"), steps=50_000, batch_size=256,
        eval_every=2000, model=RewardModelConfig(encoder=RewardModelConfig().encoder.__class__(depth=32, out_dim=256)),
    ),
}  # fmt: skip


def _batch_loss(
    model: RankingReward, sampler: RankingSampler, n: int, rng: np.random.Generator, device: torch.device,
    tie_pixels: int = 0, tie_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    b = sampler.sample(n, rng)
    tie = torch.as_tensor(changed_pixels(b.frame_i, b.frame_j) < tie_pixels, device=device) if tie_pixels else None
    loss, logs = model.compute_loss(
        to_model(b.start, device), to_model(b.goal, device), to_model(b.frame_i, device),
        to_model(b.frame_j, device), torch.as_tensor(b.i_later, device=device), tie, tie_weight,
    )  # fmt: skip
    if tie is not None:
        logs["tie_fraction"] = tie.float().mean()
    return loss, logs


@torch.no_grad()
def validate(
    model: RankingReward, sampler: RankingSampler, device: torch.device, batches: int = 8, tie_pixels: int = 0
) -> dict[str, float]:
    """Loss and pairwise accuracy (of the ranked pairs) on fixed validation windows (same seed every time)."""
    model.eval()
    rng = np.random.default_rng(12345)
    logs = [_batch_loss(model, sampler, 128, rng, device, tie_pixels)[1] for _ in range(batches)]
    model.train()
    return {k: float(np.mean([float(log[k]) for log in logs])) for k in logs[0]}


@torch.no_grad()
def fit_normalization(
    model: RankingReward, store: EpisodeStore, goal_images: np.ndarray, n: int, device: torch.device, seed: int = 0
) -> tuple[float, float]:
    """Mean and std of the energy toward the goal image over random training frames."""
    from worldgrad.models.reward import GoalReward

    model.eval()
    rng = np.random.default_rng(seed)
    reward = GoalReward(model, goal_images)
    episodes = list(store)
    values = []
    for _ in range(0, n, 256):
        frames, starts = [], []
        for _ in range(256):
            ep = episodes[int(rng.integers(len(episodes)))]
            t = int(rng.integers(len(ep)))
            frames.append(ep.frames[t])
            starts.append(ep.frames[max(0, t - int(rng.integers(0, 48)))])
        values.append(reward.energy(np.stack(frames), np.stack(starts)).cpu().numpy())
    v = np.concatenate(values)
    model.train()
    return float(v.mean()), float(v.std() + 1e-6)


def train_reward(cfg: TrainRewardConfig, goal_images: np.ndarray, progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the reward model; returns final validation metrics and the normalization."""
    store = EpisodeStore.open(cfg.store)
    if store.meta.image_shape[:2] != (cfg.model.image_size, cfg.model.image_size):
        raise StoreError(
            f"store {cfg.store} holds {store.meta.image_shape[0]}x{store.meta.image_shape[1]} images but the reward "
            f"model expects {cfg.model.image_size}; pass --model.image-size {store.meta.image_shape[0]}"
        )
    run = RunDir.create(cfg.runs, cfg.name, cfg, resume=True, ignore=("steps", "eval_every", "device"))
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = RankingReward(cfg.model).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, extra = resume_or_start(run, {"model": model}, {"optim": optim})
    rng = np.random.default_rng(cfg.seed)
    if "data_rng" in extra:  # continue the exact sample stream: a resumed run equals an uninterrupted one
        rng.bit_generator.state = extra["data_rng"]
    windows = (
        cfg.min_window,
        cfg.max_window,
        cfg.val_fraction,
        cfg.goal_frames,
        cfg.goal_stride,
        cfg.change_candidates,
    )
    train = RankingSampler(store, "train", *windows)
    val = RankingSampler(store, "val", *windows)
    logger = MetricsLogger(run.path)
    logger.truncate_after(start)
    metrics: dict[str, float] = {}
    t0 = time.perf_counter() - float(extra.get("time_s", 0.0))  # time_s: summed over resumes
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-reward", disable=not progress)
    for step in bar:
        for group in optim.param_groups:  # cosine decay to 10 %
            group["lr"] = cfg.lr * (0.1 + 0.45 * (1 + np.cos(np.pi * step / cfg.steps)))
        loss, logs = _batch_loss(model, train, cfg.batch_size, rng, device, cfg.tie_pixels, cfg.tie_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"reward loss became {loss.item()} at step {step}; lower --lr or resume from the last checkpoint"
            )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        done = step + 1
        if done % 10 == 0:
            logger.log(done, {"reward/train/loss": logs["loss"], "reward/train/accuracy": logs["accuracy"],
                              "reward/train/grad_norm": grad_norm, "time_s": time.perf_counter() - t0})  # fmt: skip
        if done % cfg.eval_every == 0 or done == cfg.steps:
            metrics = validate(model, val, device, tie_pixels=cfg.tie_pixels)
            logger.log(done, {f"reward/val/{k}": v for k, v in metrics.items()})
            bar.set_postfix(val_acc=f"{metrics['accuracy']:.3f}")
            save_training_state(run, done, {"model": model}, {"optim": optim},
                                extra={"data_rng": rng.bit_generator.state, "time_s": time.perf_counter() - t0},
                                keep=2)  # fmt: skip
    mean, std = fit_normalization(model, store, goal_images, cfg.norm_frames, device, cfg.seed)
    windows = {"min_len": cfg.min_window, "max_len": cfg.max_window, "goal_frames": cfg.goal_frames,
               "goal_stride": cfg.goal_stride}  # fmt: skip
    export_reward(run.path / "reward.safetensors", model, cfg.model, goal_images, mean, std, windows)
    if not metrics:
        metrics = validate(model, val, device, tie_pixels=cfg.tie_pixels)
    logger.close()
    return {"val": metrics, "mean": mean, "std": std, "path": str(run.path / "reward.safetensors")}


def export_reward(
    path: Path,
    model: RankingReward,
    cfg: RewardModelConfig,
    goal: np.ndarray,
    mean: float,
    std: float,
    windows: dict[str, int],
) -> None:
    """The deployable reward: weights, config, goal image and normalization in one file."""
    from worldgrad.runtime.checkpoint import save_checkpoint

    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "config": config_to_dict(cfg),
            "goal": goal,
            "mean": mean,
            "std": std,
            "windows": windows,
        },
    )


def load_goal_reward(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """Loads the :class:`GoalReward` written at the end of ``train-reward``."""
    from worldgrad.models.reward import GoalReward

    state = load_checkpoint(path)
    model = RankingReward(config_from_dict(RewardModelConfig, state["config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return GoalReward(model, state["goal"], state["mean"], state["std"])
