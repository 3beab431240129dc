"""Refit the local RSSM's reward head alone, on frozen posterior features of play windows: the research
version of ``worldgrad refit-head`` (same fit, plus the diagnostics below).

DMO's actor follows this head's gradient, and a head trained jointly with the rest of the RSSM (or on other
labels) can be far off in contact (``bench/pusht_gradient_check.py``). Filtering the store once and fitting the
head on the frozen features takes a minute instead of a ``train-local --init`` run of half an hour. Optionally
``--diff-weight`` adds the squared error of the head's step-to-step changes against the labels' changes (an
attempt to fit what the gradient sees; it did not help on Push-T). Prints, on validation windows, the head's
correlation with the labels (levels and step-to-step changes, the latter split by whether the label changed), then
the agent-position check of the refit head, and writes a ``local.safetensors`` with the new head. ``--ensemble K``
also fits K heads from fresh initializations on bootstrap resamples of the same windows and writes them to
``OUT.heads.safetensors`` (for ``bench/pusht_oracle_check.py --head-ensemble``: their disagreement marks the
features the play data does not cover, where a single head extrapolates and the actor climbs its errors).
``--keep-best`` writes the reported head of best validation correlation instead of the last (the learned labels'
heads overfit: on the ``cpu`` store they peak near 1,000 of the 3,000 steps).

    OMP_NUM_THREADS=1 python bench/refit_reward_head.py --local runs/pusht-cpu/local/local.safetensors \\
        --store runs/pusht-cpu/data/play --label reward --out runs/local-refit.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from worldgrad.algos.refit_head import filtered_windows, head_step
from worldgrad.algos.refit_head import fit_quality as head_fit_quality
from worldgrad.algos.train_local import export_local_model, load_local_model
from worldgrad.data.store import EpisodeStore
from worldgrad.eval.local import head_scorer
from worldgrad.eval.reward import agent_position_effect
from worldgrad.models.rssm import twohot_mean, twohot_symlog_loss


def filtered(model, store: EpisodeStore, label: str, split: str, n: int, length: int, burn_in: int, seed: int,
             sample: bool = True, extra: tuple[str, ...] = ()):  # fmt: skip
    return filtered_windows(model, store, (label, *extra), split, n, length, burn_in, seed, sample)


def fit_quality(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """The package's figures, plus the changes split by whether the label changed."""
    dp, dt = pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1]
    still = dt.abs() < 0.05
    return {**head_fit_quality(pred, target), "change_std_label_still": float(dp[still].std()),
            "change_corr_label_moved": float(np.corrcoef(dp[~still], dt[~still])[0, 1])}  # fmt: skip


def fit_head(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, bins: torch.Tensor, steps: int,
             seed: int) -> None:  # fmt: skip
    """Plain two-hot regression of ``head`` on frozen features (n, T, F) -> labels (n, T)."""
    optim = torch.optim.Adam(head.parameters(), lr=3e-4)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(feats), 64))
        head_step(head, optim, feats[idx], labels[idx], bins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", type=Path, required=True, help="local.safetensors whose head is refit")
    parser.add_argument("--store", type=Path, default=Path("runs/pusht-cpu/data/play"))
    parser.add_argument("--label", default="reward", help="the store's per-frame label the head learns")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--windows", type=int, default=1200, help="training windows filtered once")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--burn-in", type=int, default=8, help="first frames of a window left out (filter warm-up)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--diff-weight", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ensemble", type=int, default=0, help="also fit K heads for OUT.heads.safetensors")
    parser.add_argument("--mean-posteriors", action="store_true",
                        help="features from the posteriors' class probabilities instead of samples")  # fmt: skip
    parser.add_argument("--keep-best", action="store_true",
                        help="write the reported head (every 1,000 steps) of best validation correlation")  # fmt: skip
    parser.add_argument("--against", default=None,
                        help="also report the head's validation correlation with this label (e.g. the "
                             "evaluation-only oracle_reach: how much a head pays for the relation)")  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = load_local_model(args.local)
    store = EpisodeStore.open(args.store)
    t0 = time.perf_counter()
    sample = not args.mean_posteriors
    train = filtered(model, store, args.label, "train", args.windows, args.length, args.burn_in, args.seed + 1, sample)
    extra = () if args.against in (None, args.label) else (args.against,)
    val = filtered(model, store, args.label, "val", 200, args.length, args.burn_in, args.seed + 2, sample, extra)
    print(f"filtered {args.windows + 200} windows in {time.perf_counter() - t0:.0f} s")
    head = model.reward_head
    optim = torch.optim.Adam(head.parameters(), lr=3e-4)
    rng = np.random.default_rng(args.seed)

    best: dict[str, Any] = {"corr": -np.inf, "step": 0, "state": copy.deepcopy(head.state_dict())}

    def report(step: int) -> None:
        with torch.no_grad():
            pred = twohot_mean(head(val[0]), model.bins)
            quality = fit_quality(pred, val[1])
            if extra:
                quality[f"corr_{args.against}"] = float(np.corrcoef(pred.flatten(), val[2].flatten())[0, 1])
        print(step, json.dumps({k: round(v, 3) for k, v in quality.items()}), flush=True)
        if quality["corr"] > best["corr"]:
            best.update(corr=quality["corr"], step=step, state=copy.deepcopy(head.state_dict()))

    report(0)
    for step in range(args.steps):
        idx = torch.as_tensor(rng.integers(0, len(train[0]), 64))
        feats, target = train[0][idx], train[1][idx]
        logits = head(feats)
        loss = twohot_symlog_loss(logits, target, model.bins).mean()
        if args.diff_weight > 0:
            pred = twohot_mean(logits, model.bins)
            loss = loss + args.diff_weight * ((pred.diff(dim=1) - target.diff(dim=1)) ** 2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if (step + 1) % 1000 == 0:
            report(step + 1)
    if args.keep_best:  # the learned labels' heads overfit the 1,200 windows: on Push-T they peak near 1,000 steps
        head.load_state_dict(best["state"])
        print(f"kept the head of step {best['step']} (validation correlation {best['corr']:.3f})")
    export_local_model(args.out, model)
    if args.ensemble > 0:
        heads = {}
        for k in range(args.ensemble):
            torch.manual_seed(args.seed + 100 + k)
            member = copy.deepcopy(head)
            for layer in member.modules():  # fresh weights; the last layer zero, as the RSSM initializes it
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
            nn.init.zeros_(member[-1].weight)
            nn.init.zeros_(member[-1].bias)
            boot = torch.as_tensor(np.random.default_rng(args.seed + 100 + k).integers(0, len(train[0]), len(train[0])))
            fit_head(member, train[0][boot], train[1][boot], model.bins, args.steps, args.seed + k)
            with torch.no_grad():
                quality = fit_quality(twohot_mean(member(val[0]), model.bins), val[1])
            print(f"ensemble head {k}", json.dumps({k2: round(v, 3) for k2, v in quality.items()}), flush=True)
            heads |= {f"{k}.{name}": value.contiguous() for name, value in member.state_dict().items()}
        save_file(heads, args.out.with_suffix(".heads.safetensors"))
    torch.manual_seed(0)
    _, effect = agent_position_effect(head_scorer(model), 4, image_size=model.cfg.image_size)
    print("agent-position check", json.dumps({k: round(v, 3) for k, v in effect.items()}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
