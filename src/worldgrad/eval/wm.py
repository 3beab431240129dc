"""``worldgrad eval-wm``: open-loop fidelity of the world model on held-out recordings, next to copy-last-frame.

From 4 real frames, the model rolls out with the recorded actions for ``horizon`` steps (60 = 12 s at 5 Hz).
Start points are spread evenly over the held-out episodes (deterministic). Per horizon: PSNR, SSIM and the
physical errors read from the pixels (T position and angle, agent position; see ``worldgrad.eval.fidelity``).
The simulator record is not used here either: real and predicted frames go through the same segmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.eval.fidelity import copy_last_baseline, fidelity_table
from worldgrad.runtime.atomic import save_json_atomic
from worldgrad.runtime.seeding import pick_device


@dataclass(frozen=True)
class EvalWMConfig:
    """Measure the world model's open-loop fidelity on held-out recordings."""

    wm: Path = Path("runs/wm-tiny/wm.safetensors")
    """world model written by train-wm, or a train-wm run folder (its newest checkpoint)"""
    store: Path = Path("runs/pusht-tiny/data/heldout")
    """held-out recordings (seeds and ideally an operator never used for training)"""
    out: Path = Path("runs/wm-tiny/eval")
    """folder for the table (JSON, markdown) and the strip image"""
    rollouts: int = 32
    """open-loop rollouts (start points spread over the episodes)"""
    horizon: int = 60
    """steps per rollout (60 = 12 s at 5 Hz)"""
    horizons: tuple[int, ...] = (1, 5, 10, 20, 40, 60)
    """horizons reported (each <= horizon)"""
    batch_size: int = 16
    """rollouts stepped together"""
    sampler_steps: int = 0
    """denoising steps (0: the model's own setting)"""
    amp: bool = True
    """bfloat16 rollouts on CUDA and on CPUs with native bf16, as train-policy runs them (--no-amp: fp32)"""
    strip_rollouts: int = 3
    """rollouts shown in the strip (real over predicted, every strip_every steps)"""
    strip_every: int = 5
    seed: int = 0
    device: str = "auto"


def start_points(store: EpisodeStore, length: int, n: int) -> list[tuple[str, int]]:
    """``n`` (episode, first frame) windows of ``length`` frames spread evenly over the store's episodes."""
    usable = [(k, len(store.episode(k))) for k in store.keys() if len(store.episode(k)) >= length]
    if not usable:
        raise StoreError(
            f"no episode of {store.path} has {length} frames (context + horizon); use longer recordings or "
            "a shorter --horizon"
        )
    total = sum(n_frames - length + 1 for _, n_frames in usable)
    flat = np.linspace(0, total - 1, n).round().astype(int)
    out, offset = [], 0
    for k, n_frames in usable:
        count = n_frames - length + 1
        out += [(k, int(i - offset)) for i in flat if offset <= i < offset + count]
        offset += count
    return out


def rollout_open_loop(engine: Any, frames: np.ndarray, actions: np.ndarray, context: int, horizon: int) -> np.ndarray:
    """Rolls ``engine`` out with recorded actions: frames (B, context + horizon, ...) -> predicted (B, horizon, ...)."""
    engine.reset(frames[:, :context], actions[:, : context - 1])
    preds = [engine.step(actions[:, context - 1 + t]).cpu().numpy() for t in range(horizon)]
    return np.stack(preds, axis=1)


def strip_image(real: np.ndarray, pred: np.ndarray, last_ctx: np.ndarray, every: int) -> np.ndarray:
    """Rows of real over predicted frames at steps 0, every, 2*every, ... (step 0 = the last context frame)."""
    steps = list(range(every, real.shape[1] + 1, every))
    rows = []
    for r, p, c in zip(real, pred, last_ctx, strict=True):
        rows.append(np.concatenate([c, *[r[s - 1] for s in steps]], axis=1))
        rows.append(np.concatenate([c, *[p[s - 1] for s in steps]], axis=1))
    return np.concatenate(rows, axis=0)


def format_fidelity(model: dict[int, dict[str, float]], base: dict[int, dict[str, float]]) -> str:
    """A markdown table: model / copy-last per horizon."""
    lines = [
        "| horizon | PSNR dB | SSIM | T pos err px | T angle err deg | T pos err px (T moving) | agent err px "
        "| T lost | agent lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in model:
        m, b = model[h], base[h]

        def pair(k: str, fmt: str = ".1f", m: dict[str, float] = m, b: dict[str, float] = b) -> str:
            return f"{m[k]:{fmt}} / {b[k]:{fmt}}"

        lines.append(
            f"| {h} | {pair('psnr')} | {pair('ssim', '.3f')} | {pair('t_pos_err_px')} | {pair('t_angle_err_deg')} "
            f"| {pair('t_pos_err_px_moved')} (n={int(m['n_moved'])}) | {pair('agent_err_px')} "
            f"| {m['t_missing']:.0%} | {m['agent_missing']:.0%} |"
        )
    return "\n".join(lines)


def evaluate_wm(cfg: EvalWMConfig, progress: bool = True) -> dict[str, Any]:
    """Runs the open-loop evaluation; writes ``fidelity.json``, ``fidelity.md`` and ``strip.png`` to ``cfg.out``."""
    from dataclasses import replace

    from worldgrad.algos.train_wm import _save_png, load_world_model
    from worldgrad.imagine.rollout import WorldModelRollout

    if max(cfg.horizons) > cfg.horizon:
        raise ValueError(f"--horizons {cfg.horizons} exceed --horizon {cfg.horizon}; lower them or raise --horizon")
    device = pick_device(cfg.device)
    denoiser, sampler = load_world_model(cfg.wm, device)
    if cfg.sampler_steps > 0:
        sampler = replace(sampler, steps=cfg.sampler_steps)
    c = denoiser.cfg.context
    store = EpisodeStore.open(cfg.store)
    points = start_points(store, c + cfg.horizon, cfg.rollouts)
    reals, preds, lasts = [], [], []
    for i in tqdm(range(0, len(points), cfg.batch_size), desc="eval-wm", disable=not progress):
        chunk = points[i : i + cfg.batch_size]
        frames = np.stack([store.episode(k).frames[s : s + c + cfg.horizon] for k, s in chunk])
        actions = np.stack([store.episode(k).actions[s : s + c + cfg.horizon] for k, s in chunk]).astype(np.float32)
        engine = WorldModelRollout(denoiser, sampler, len(chunk), seed=cfg.seed * 100_003 + i, amp=cfg.amp)
        preds.append(rollout_open_loop(engine, frames, actions, c, cfg.horizon))
        reals.append(frames[:, c:])
        lasts.append(frames[:, c - 1])
    real, pred, last = np.concatenate(reals), np.concatenate(preds), np.concatenate(lasts)
    model = fidelity_table(real, pred, cfg.horizons)
    base = fidelity_table(real, copy_last_baseline(last, cfg.horizon), cfg.horizons)
    cfg.out.mkdir(parents=True, exist_ok=True)
    result = {"model": model, "copy_last": base, "rollouts": len(points), "horizon": cfg.horizon,
              "sampler_steps": sampler.steps, "amp": cfg.amp, "wm": str(cfg.wm), "store": str(cfg.store)}  # fmt: skip
    save_json_atomic(cfg.out / "fidelity.json", json.loads(json.dumps(result, default=float)))
    table = format_fidelity(model, base)
    (cfg.out / "fidelity.md").write_text(
        f"Open loop on {len(points)} held-out windows of `{cfg.store}`; model / copy-last-frame; errors are "
        f"medians in 512-px board units, a lost object counts as an infinite error.\n\n{table}\n"
    )
    k = min(cfg.strip_rollouts, len(points))
    _save_png(cfg.out / "strip.png", strip_image(real[:k], pred[:k], last[:k], cfg.strip_every))
    result["table"] = table
    return result
