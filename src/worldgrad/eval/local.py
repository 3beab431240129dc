"""``worldgrad eval-local``: the local RSSM's open-loop fidelity, measured exactly like the global world
model's (same start points, horizons, pixel-segmented physical errors, copy-last baseline), so the two
models compare side by side (the paper's Fig. 2a).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldgrad.data.store import EpisodeStore
from worldgrad.eval.fidelity import copy_last_baseline, fidelity_table
from worldgrad.eval.wm import format_fidelity, rollout_open_loop, start_points, strip_image
from worldgrad.models.rssm import RSSM, State
from worldgrad.runtime.atomic import save_json_atomic
from worldgrad.runtime.seeding import pick_device


@dataclass(frozen=True)
class EvalLocalConfig:
    """Measure the local model's open-loop fidelity on held-out recordings."""

    local: Path = Path("runs/local-tiny/local.safetensors")
    """local model written by train-local"""
    store: Path = Path("runs/pusht-tiny/data/heldout")
    out: Path = Path("runs/local-tiny/eval")
    context: int = 4
    """real frames filtered before the open-loop part (4, as the global world model)"""
    rollouts: int = 32
    horizon: int = 60
    horizons: tuple[int, ...] = (1, 5, 10, 20, 40, 60)
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"


class LocalRollout:
    """The RSSM behind the rollout-engine interface (reset on real frames, step with actions, frames out)."""

    def __init__(self, model: RSSM) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.state: State | None = None

    @torch.no_grad()
    def reset(self, frames: np.ndarray, actions: np.ndarray) -> None:
        f = torch.as_tensor(frames, device=self.device)
        a = torch.as_tensor(actions, device=self.device, dtype=torch.float32)
        a = torch.cat([a, torch.zeros_like(a[:, :1])], 1)  # the action after the last context frame comes in step()
        posts, _ = self.model.observe(self.model.encode(f), a)
        self.state = State(*(x[:, -1] for x in posts))

    @torch.no_grad()
    def step(self, action: np.ndarray) -> torch.Tensor:
        assert self.state is not None, "reset first"
        a = torch.as_tensor(action, device=self.device, dtype=torch.float32)
        self.state = self.model.step_prior(self.state, a, sample=True)
        img = self.model.decode(self.model.features(self.state)).clamp(0, 1)
        return (img * 255).round().to(torch.uint8)


def evaluate_local(cfg: EvalLocalConfig, progress: bool = True) -> dict[str, Any]:
    """Writes ``fidelity.json``, ``fidelity.md`` and ``strip.png`` to ``cfg.out``; returns the tables."""
    from worldgrad.algos.train_local import load_local_model
    from worldgrad.algos.train_wm import _save_png

    if max(cfg.horizons) > cfg.horizon:
        raise ValueError(f"--horizons {cfg.horizons} exceed --horizon {cfg.horizon}; lower them or raise --horizon")
    torch.manual_seed(cfg.seed)
    model = load_local_model(cfg.local, pick_device(cfg.device))
    store = EpisodeStore.open(cfg.store)
    c = cfg.context
    points = start_points(store, c + cfg.horizon, cfg.rollouts)
    reals, preds, lasts = [], [], []
    for i in tqdm(range(0, len(points), cfg.batch_size), desc="eval-local", disable=not progress):
        chunk = points[i : i + cfg.batch_size]
        frames = np.stack([store.episode(k).frames[s : s + c + cfg.horizon] for k, s in chunk])
        actions = np.stack([store.episode(k).actions[s : s + c + cfg.horizon] for k, s in chunk]).astype(np.float32)
        preds.append(rollout_open_loop(LocalRollout(model), frames, actions, c, cfg.horizon))
        reals.append(frames[:, c:])
        lasts.append(frames[:, c - 1])
    real, pred, last = np.concatenate(reals), np.concatenate(preds), np.concatenate(lasts)
    table = fidelity_table(real, pred, cfg.horizons)
    base = fidelity_table(real, copy_last_baseline(last, cfg.horizon), cfg.horizons)
    cfg.out.mkdir(parents=True, exist_ok=True)
    result = {"model": table, "copy_last": base, "rollouts": len(points), "horizon": cfg.horizon,
              "local": str(cfg.local), "store": str(cfg.store)}  # fmt: skip
    save_json_atomic(cfg.out / "fidelity.json", json.loads(json.dumps(result, default=float)))
    md = format_fidelity(table, base)
    (cfg.out / "fidelity.md").write_text(f"Local RSSM, open loop on {len(points)} held-out windows; model / "
                                         f"copy-last-frame.\n\n{md}\n")  # fmt: skip
    k = min(3, len(points))
    _save_png(cfg.out / "strip.png", strip_image(real[:k], pred[:k], last[:k], 5))
    result["table"] = md
    return result
