"""``worldgrad eval-local``: the local RSSM's open-loop fidelity, measured exactly like the global world
model's (same start points, horizons, pixel-segmented physical errors, copy-last baseline), so the two
models compare side by side (the paper's Fig. 2a).

It also probes what the policy can see: the actor reads the RSSM's features, so a ridge regression from the
features filtered on real frames to the agent and T positions (read from the pixels) tells whether they
carry the state the task needs, even where the decoder does not draw it.
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
from worldgrad.eval.fidelity import BOARD, copy_last_baseline, fidelity_table, segment
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
    agent_poses: int = 4
    """T poses of the reward head's agent-position check on Push-T (as in eval-reward; 0: skip it)"""
    device: str = "auto"


def head_scorer(model: RSSM, settle: int = 4) -> Any:
    """The reward head as a frame scorer: each frame filtered ``settle`` times from the blank state (no motion),
    then the head on its features; ``starts`` are ignored (the head has its own memory)."""
    return feature_scorer(model, model.reward, settle)


def feature_scorer(model: RSSM, head: Any, settle: int = 4) -> Any:
    """Any function of the local model's features (reward head, critic) as a frame scorer, as in :func:`head_scorer`."""

    @torch.no_grad()
    def score(frames: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        dev = next(model.parameters()).device
        embed = model.encode(torch.as_tensor(frames, device=dev))[:, None].expand(-1, settle, -1)
        posts, _ = model.observe(embed, torch.zeros(len(frames), settle, model.cfg.action_dim, device=dev))
        return head(model.features(posts)[:, -1])

    return score


def format_head_effect(e: dict[str, float]) -> str:
    """One markdown sentence on the reward head's agent-position check (eval-local's table and the pipeline report)."""
    return (
        f"Reward head with the T held still (simulator check, as in eval-reward): range over agent positions "
        f"{e['agent_range']:.2f}, agent-on-goal gain {e['agent_on_goal_gain']:+.3f}, agent-near-T gain "
        f"{e['agent_near_t_gain']:+.3f}, T-to-goal gain "
        f"{e['t_to_goal_gain']:.2f}. DMO's actor follows this head's gradient, so what it pays for the agent's "
        "place alone pulls the policy there."
    )


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


def _split(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows whose group falls in a random ``fraction`` of the groups."""
    ids = np.unique(groups)
    picked = ids[np.random.default_rng(seed).permutation(len(ids))[: max(1, int(len(ids) * fraction))]]
    return np.isin(groups, picked)


def ridge_fit(
    x: np.ndarray, y: np.ndarray, fit: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge fit on the rows ``fit`` of standardized, centred features (the intercept is free): (mu, sd, w, y_mu),
    the prediction being ((x - mu) / sd) @ w + y_mu."""
    mu, sd, y_mu = x[fit].mean(0), x[fit].std(0) + 1e-6, y[fit].mean(0)
    a = (x[fit] - mu) / sd
    return mu, sd, np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y[fit] - y_mu)), y_mu


def _ridge(x: np.ndarray, y: np.ndarray, fit: np.ndarray, lam: float) -> np.ndarray:
    """Ridge fit on the rows ``fit``, predictions for all rows."""
    mu, sd, w, y_mu = ridge_fit(x, y, fit, lam)
    return ((x - mu) / sd) @ w + y_mu


def feature_probe(
    features: np.ndarray, targets: np.ndarray, groups: np.ndarray, test_fraction: float = 0.25,
    ridges: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0),
) -> dict[str, float]:  # fmt: skip
    """How well a linear map of ``features`` (N, F) predicts ``targets`` (N, D): a ridge regression fit on some
    ``groups`` (e.g. rollouts: neighbouring frames never straddle the split) and scored on the others; its
    penalty is picked among ``ridges`` on a split of the fitting groups alone.

    Returns R^2 on the held-out rows, the median Euclidean error and the row counts; rows with a non-finite
    target are dropped (an object the segmentation did not find).
    """
    ok = np.isfinite(targets).all(-1)
    x, y, g = features[ok].astype(np.float64), targets[ok].astype(np.float64), groups[ok]
    if len(np.unique(g)) < 3:
        raise ValueError(f"feature_probe needs rows in at least 3 groups, got {len(np.unique(g))}; pass more rollouts")
    test = _split(g, test_fraction, 0)
    inner = ~test & _split(g, test_fraction, 1)  # choose the penalty without looking at the test rows
    if not inner.any() or inner.sum() == (~test).sum():
        inner = ~test & (g == np.unique(g[~test])[0])

    def sse(lam: float) -> float:
        return float(((_ridge(x, y, ~test & ~inner, lam)[inner] - y[inner]) ** 2).sum())

    lam = min(ridges, key=sse)
    pred, true = _ridge(x, y, ~test, lam)[test], y[test]
    r2 = 1 - ((pred - true) ** 2).sum() / max(((true - true.mean(0)) ** 2).sum(), 1e-12)
    return {"r2": float(r2), "median_err": float(np.median(np.linalg.norm(pred - true, axis=-1))),
            "ridge": lam, "n_train": int((~test).sum()), "n_test": int(test.sum())}  # fmt: skip


def _probe_or_nan(features: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    try:
        return feature_probe(features, targets, groups)
    except ValueError:  # the object was found in too few windows (tiny images, few rollouts)
        return {"r2": float("nan"), "median_err": float("nan"), "ridge": float("nan"), "n_train": 0, "n_test": 0}


@torch.no_grad()
def filtered_features(model: RSSM, frames: np.ndarray, actions: np.ndarray, sample: bool = True) -> np.ndarray:
    """Posterior features (B, T, F) of real frames (B, T, H, W, 3) filtered with their actions (B, T, A)
    (``sample`` False: from the posteriors' class probabilities instead of samples)."""
    dev = next(model.parameters()).device
    posts, _ = model.observe(model.encode(torch.as_tensor(frames, device=dev)),
                             torch.as_tensor(actions, device=dev, dtype=torch.float32), sample=sample)  # fmt: skip
    return model.features(posts).cpu().numpy()


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
    reals, preds, lasts, feats = [], [], [], []
    for i in tqdm(range(0, len(points), cfg.batch_size), desc="eval-local", disable=not progress):
        chunk = points[i : i + cfg.batch_size]
        frames = np.stack([store.episode(k).frames[s : s + c + cfg.horizon] for k, s in chunk])
        actions = np.stack([store.episode(k).actions[s : s + c + cfg.horizon] for k, s in chunk]).astype(np.float32)
        preds.append(rollout_open_loop(LocalRollout(model), frames, actions, c, cfg.horizon))
        feats.append(filtered_features(model, frames, actions)[:, c:])  # after the filter's warm-up
        reals.append(frames[:, c:])
        lasts.append(frames[:, c - 1])
    real, pred, last = np.concatenate(reals), np.concatenate(preds), np.concatenate(lasts)
    table = fidelity_table(real, pred, cfg.horizons)
    base = fidelity_table(real, copy_last_baseline(last, cfg.horizon), cfg.horizons)
    cfg.out.mkdir(parents=True, exist_ok=True)
    feat = np.concatenate(feats)
    px = segment(real)
    groups = np.repeat(np.arange(len(real)), real.shape[1])
    flat = feat.reshape(-1, feat.shape[-1])
    probe = {name: _probe_or_nan(flat, xy.reshape(-1, 2), groups) for name, xy in (("agent", px.agent_xy),
                                                                                  ("t", px.t_xy))}  # fmt: skip
    result = {"model": table, "copy_last": base, "rollouts": len(points), "horizon": cfg.horizon,
              "probe": probe, "local": str(cfg.local), "store": str(cfg.store)}  # fmt: skip
    if cfg.agent_poses > 0 and store.meta.env == "pusht":
        from worldgrad.eval.reward import agent_position_effect

        _, result["head_agent_effect"] = agent_position_effect(head_scorer(model), cfg.agent_poses,
                                                               image_size=model.cfg.image_size)  # fmt: skip
    save_json_atomic(cfg.out / "fidelity.json", json.loads(json.dumps(result, default=float)))
    md = format_fidelity(table, base)
    lines = [f"| {name} | {p['r2']:.3f} | {p['median_err']:.1f} | {p['n_train']} / {p['n_test']} |"
             for name, p in (("agent position", probe["agent"]), ("T position", probe["t"]))]  # fmt: skip
    probe_md = (
        "What the features carry (ridge probe from features filtered on the real frames to positions read "
        f"from the pixels, px of the {BOARD:.0f} board; fit and scored on different windows):\n\n"
        "| target | R^2 | median error px | frames fit / scored |\n|---|---|---|---|\n" + "\n".join(lines)
    )
    if "head_agent_effect" in result:
        probe_md += "\n\n" + format_head_effect(result["head_agent_effect"])
    (cfg.out / "fidelity.md").write_text(f"Local RSSM, open loop on {len(points)} held-out windows; model / "
                                         f"copy-last-frame.\n\n{md}\n\n{probe_md}\n")  # fmt: skip
    k = min(3, len(points))
    _save_png(cfg.out / "strip.png", strip_image(real[:k], pred[:k], last[:k], 5))
    result["table"] = f"{md}\n\n{probe_md}"
    return result
