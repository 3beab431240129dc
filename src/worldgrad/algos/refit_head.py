"""``worldgrad refit-head``: refit the local RSSM's reward head alone on a store label, on frozen features.

DMO's actor follows this head's gradient. Training a new head with the whole RSSM (``train-local --init``) takes
half an hour on 2 CPU cores; filtering the store once and fitting the head on the frozen posterior features takes a
few minutes, and leaves the dynamics (the backward model's Jacobians) exactly as they were. The use: a head on a
shaping label written by ``label-reward`` (e.g. ``--contact-only``) for ``train-policy --no-finetune-reward``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldgrad.data.sampler import WindowSampler
from worldgrad.data.store import EpisodeStore
from worldgrad.models.rssm import RSSM, twohot_mean, twohot_symlog_loss


@dataclass(frozen=True)
class RefitHeadConfig:
    """Refit a local model's reward head on a per-frame store label; writes a new local.safetensors."""

    local: Path = Path("runs/pusht-tiny/local/local.safetensors")
    """local model (train-local output) whose head is refit; the rest of it is copied unchanged"""
    store: Path = Path("runs/pusht-tiny/data/play")
    label: str = "reward"
    """the store's per-frame label the head learns (written by label-reward)"""
    out: Path = Path("runs/pusht-tiny/local-refit.safetensors")
    windows: int = 1200
    """training windows, filtered once"""
    val_windows: int = 200
    length: int = 32
    """frames per window"""
    burn_in: int = 8
    """first frames of a window left out (the filter's warm-up)"""
    steps: int = 3000
    """0: report the saved head as it is (e.g. with ``--against``) and write it unchanged"""
    batch_size: int = 64
    lr: float = 3e-4
    mean_posteriors: bool = False
    """features from the posteriors' class probabilities instead of samples: match ``train-policy
    --mean-posteriors``"""
    keep_best: bool = False
    """write the head of best validation correlation (checked every ``eval_every`` steps) instead of the last:
    heads on shaping labels overfit the filtered windows"""
    eval_every: int = 500
    against: str | None = None
    """also report the head's validation correlation with this label (e.g. an evaluation-only one)"""
    seed: int = 0
    threads: int = 0
    """CPU threads for torch (0: torch's default)"""

    def __post_init__(self) -> None:
        if self.length <= self.burn_in:
            raise ValueError(f"--length {self.length} must exceed --burn-in {self.burn_in}")
        if min(self.windows, self.val_windows, self.batch_size, self.eval_every) < 1 or self.steps < 0:
            raise ValueError("--windows, --val-windows, --batch-size and --eval-every must be >= 1, --steps >= 0")


@torch.no_grad()
def filtered_windows(
    model: RSSM,
    store: EpisodeStore,
    labels: tuple[str, ...],
    split: str,
    n: int,
    length: int,
    burn_in: int,
    seed: int,
    sample: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Posterior features (n, length - burn_in, F) of ``n`` random windows of ``split``, then each label's values
    on the same frames (n, length - burn_in)."""
    from worldgrad.eval.local import filtered_features

    batch = WindowSampler(store, length, split, labels=labels).sample(n, np.random.default_rng(seed))  # type: ignore[arg-type]
    feats = [filtered_features(model, batch.frames[i : i + 50], batch.actions[i : i + 50], sample)[:, burn_in:]
             for i in range(0, n, 50)]  # fmt: skip
    values = [torch.as_tensor(batch.labels[name][:, burn_in:], dtype=torch.float32) for name in labels]
    return torch.as_tensor(np.concatenate(feats)), *values


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation; NaN (without numpy's warning) when either side is constant, e.g. a fresh head."""
    a, b = a.flatten().double(), b.flatten().double()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def fit_quality(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Correlation of a head's predictions with the labels (n, T): levels, and step-to-step changes (what the
    actor's gradient sees)."""
    dp, dt = pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1]
    return {"corr": _corr(pred, target), "change_corr": _corr(dp, dt)}


def head_step(head: torch.nn.Module, optim: torch.optim.Optimizer, feats: torch.Tensor, target: torch.Tensor,
              bins: torch.Tensor) -> float:  # fmt: skip
    """One two-hot regression step of the head on frozen features (B, T, F) -> labels (B, T)."""
    loss = twohot_symlog_loss(head(feats), target, bins).mean()
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return loss.item()


def refit_head(cfg: RefitHeadConfig, progress: bool = True) -> dict[str, Any]:
    """Fits ``model.reward_head`` on the label and writes the model to ``cfg.out``; returns validation figures."""
    from worldgrad.algos.train_local import export_local_model, load_local_model

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = load_local_model(cfg.local)
    store = EpisodeStore.open(cfg.store)
    sample = not cfg.mean_posteriors
    t0 = time.perf_counter()
    train = filtered_windows(model, store, (cfg.label,), "train", cfg.windows, cfg.length, cfg.burn_in,
                             cfg.seed + 1, sample)  # fmt: skip
    extra = () if cfg.against in (None, cfg.label) else (cfg.against,)
    val = filtered_windows(model, store, (cfg.label, *extra), "val", cfg.val_windows, cfg.length, cfg.burn_in,
                           cfg.seed + 2, sample)  # fmt: skip
    filter_s = time.perf_counter() - t0
    head = model.reward_head
    optim = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []

    @torch.no_grad()
    def report(step: int, losses: list[float]) -> None:
        pred = twohot_mean(head(val[0]), model.bins)
        row = {"step": step, **fit_quality(pred, val[1])}
        if losses:
            row["train_loss"] = float(np.mean(losses))
        if extra:
            row[f"corr_{cfg.against}"] = _corr(pred, val[2])
        history.append(row)

    report(0, [])
    best = (-np.inf, 0, copy.deepcopy(head.state_dict()))  # a fresh head's correlation is NaN: any fit beats it
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="refit-head", disable=not progress)
    for step in bar:
        idx = torch.as_tensor(rng.integers(0, len(train[0]), cfg.batch_size))
        losses.append(head_step(head, optim, train[0][idx], train[1][idx], model.bins))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            report(step + 1, losses)
            losses = []
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val_corr=f"{history[-1]['corr']:.3f}")
            if history[-1]["corr"] > best[0]:
                best = (history[-1]["corr"], step + 1, copy.deepcopy(head.state_dict()))
    kept = history[-1]["step"]
    if cfg.keep_best:
        head.load_state_dict(best[2])
        kept = best[1]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    export_local_model(cfg.out, model)
    return {"path": str(cfg.out), "kept_step": kept, "val": next(r for r in history if r["step"] == kept),
            "history": history, "filter_seconds": filter_s}  # fmt: skip
