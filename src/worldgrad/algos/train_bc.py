"""``worldgrad train-bc``: the ACT behaviour-cloning baseline, trained on the intent-on segments of play data.

Resumable like every training command (kill it, run it again: it continues from the last checkpoint; a
larger ``--steps`` extends a run). At the end it exports ``policy.safetensors`` (kind ``act_policy``),
which ``worldgrad eval --policies checkpoint:PATH`` runs with temporal ensembling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldgrad.data.chunks import ChunkBatch, ChunkDataset
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.models.act import ACT, ACT_PRESETS, ACTConfig, export_act_policy, masked_l1
from worldgrad.runtime.metrics import MetricsLogger
from worldgrad.runtime.resume import resume_or_start, save_training_state
from worldgrad.runtime.run import RunDir
from worldgrad.runtime.seeding import pick_device, seed_everything


@dataclass(frozen=True)
class TrainBCConfig:
    """Behaviour cloning with ACT on the intent-on frames of an episode store."""

    store: Path = Path("runs/pushcube/play")
    """episode store with intent flags (e.g. `worldgrad collect --env pushcube --operator pusher`)"""
    runs: Path = Path("runs")
    name: str = "act-tiny"
    """run folder name; re-running resumes (a larger --steps extends the run)"""
    model: ACTConfig = field(default_factory=lambda: ACT_PRESETS["tiny"])
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    """AdamW weight decay (ACT: 1e-4)"""
    grad_clip: float = 10.0
    val_fraction: float = 0.1
    """share of episodes held out for the validation L1 (0: no validation)"""
    val_samples: int = 512
    """validation frames, evenly spaced over the held-out intent-on frames"""
    eval_every: int = 100
    """steps between validation and checkpoint"""
    max_minutes: float = 0.0
    """stop (checkpoint and export) after this many minutes of this invocation; 0 = no limit"""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """CPU threads for torch (0: torch's default)"""


PRESETS: dict[str, TrainBCConfig] = {
    "tiny": TrainBCConfig(),
    # ~25 minutes on one CPU thread (0.18 s a step)
    "cpu": TrainBCConfig(name="act-cpu", model=ACT_PRESETS["cpu"], steps=8000, batch_size=32, lr=2e-4, eval_every=500),
    # ACT's recipe (AdamW 1e-5, weight decay 1e-4) with a larger batch, for a GPU
    "paper": TrainBCConfig(name="act-paper", model=ACT_PRESETS["paper"], steps=100_000, batch_size=64, lr=1e-5,
                           eval_every=5000),
}  # fmt: skip


def _tensors(b: ChunkBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(b.frames, device=device), torch.as_tensor(b.actions, device=device),
            torch.as_tensor(b.mask, device=device))  # fmt: skip


@torch.no_grad()
def validate(model: ACT, data: ChunkDataset, n: int, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """L1 of the inferred chunks (z = 0, as deployed) on fixed held-out frames: in action units, of the first
    action only, and on normalized actions (the training objective)."""
    model.eval()
    index = np.unique(np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(np.int64))
    l1 = norm = first = valid = 0.0
    for lo in range(0, len(index), batch_size):
        frames, actions, mask = _tensors(data.gather(index[lo : lo + batch_size]), device)
        pred = model.predict(frames)
        count = float(mask.sum())  # masked_l1 is a mean over valid steps: weight it back into a sum
        l1 += float(masked_l1(pred, actions, mask)) * count
        norm += float(masked_l1(model.normalize(pred), model.normalize(actions), mask)) * count
        first += float((pred[:, 0] - actions[:, 0]).abs().mean(-1).sum())
        valid += count
    model.train()
    return {"l1": l1 / valid, "l1_first": first / len(index), "l1_norm": norm / valid}


def _check_store(store: EpisodeStore, m: ACTConfig, path: Path) -> None:
    if store.meta.image_shape[:2] != (m.image_size, m.image_size) or store.meta.action_dim != m.action_dim:
        raise StoreError(
            f"store {path} holds {store.meta.image_shape[0]}x{store.meta.image_shape[1]} images and "
            f"{store.meta.action_dim}-D actions but ACT expects {m.image_size} and {m.action_dim}-D; pass "
            f"--model.image-size {store.meta.image_shape[0]} --model.action-dim {store.meta.action_dim}"
        )


def train_bc(cfg: TrainBCConfig, progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) ACT; returns the validation metrics, the policy path and the run's step count."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    store = EpisodeStore.open(cfg.store)
    m = cfg.model
    _check_store(store, m, cfg.store)
    if not len(store):
        raise StoreError(f"store {cfg.store} has no episodes; record some with `worldgrad collect` first")
    train = ChunkDataset(store, m.chunk, "train", cfg.val_fraction, m.prev_frame).require("training")
    val = ChunkDataset(store, m.chunk, "val", cfg.val_fraction, m.prev_frame) if cfg.val_fraction > 0 else None
    if val is not None:
        val.require("validation (pass --val-fraction 0 to train without validation)")
    ignore = ("steps", "eval_every", "max_minutes", "device", "threads")
    run = RunDir.create(cfg.runs, cfg.name, cfg, resume=True, ignore=ignore)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = ACT(m).to(device)
    model.set_action_stats(*train.action_stats())
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, extra = resume_or_start(run, {"model": model}, {"optim": optim})
    rng = np.random.default_rng(cfg.seed)
    if "data_rng" in extra:
        rng.bit_generator.state = extra["data_rng"]
    elapsed = float(extra.get("train_seconds", 0.0))
    logger = MetricsLogger(run.path)
    logger.truncate_after(start)
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    done = start

    def checkpoint(step: int) -> None:
        save_training_state(run, step, {"model": model}, {"optim": optim}, keep=2,
                            extra={"data_rng": rng.bit_generator.state,
                                   "train_seconds": elapsed + time.perf_counter() - t0})  # fmt: skip

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-bc", disable=not progress)
    for step in bar:
        loss, logs = model.loss(*_tensors(train.sample(cfg.batch_size, rng), device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ACT loss became {loss.item()} at step {step}; lower --lr or resume")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        done = step + 1
        if done % 10 == 0:
            seconds = elapsed + time.perf_counter() - t0
            logger.log(done, {**{f"bc/train/{k}": v for k, v in logs.items()}, "bc/train/grad_norm": grad_norm,
                              "time_s": seconds})  # fmt: skip
            bar.set_postfix(l1=f"{float(logs['l1']):.3f}", kl=f"{float(logs['kl']):.3f}")
        out_of_time = cfg.max_minutes > 0 and time.perf_counter() - t0 > 60 * cfg.max_minutes
        if done % cfg.eval_every == 0 or done == cfg.steps or out_of_time:
            if val is not None:
                metrics = validate(model, val, cfg.val_samples, device)
                logger.log(done, {f"bc/val/{k}": v for k, v in metrics.items()})
            checkpoint(done)
        if out_of_time:
            bar.write(f"train-bc: stopping after {cfg.max_minutes} minutes at step {done}; rerun to continue")
            break
    bar.close()
    if val is not None and not metrics:
        metrics = validate(model, val, cfg.val_samples, device)
    seconds = elapsed + time.perf_counter() - t0 if done > start else elapsed
    path = export_act_policy(run.path / "policy.safetensors", model, {"steps": done, "train_seconds": seconds})
    logger.close()
    return {"val": metrics, "path": str(path), "steps": done, "train_seconds": seconds,
            "params": sum(p.numel() for p in model.parameters()), "train_frames": len(train),
            "val_frames": 0 if val is None else len(val)}  # fmt: skip
