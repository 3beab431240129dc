"""Where does the local model keep (or lose) a per-frame relation? MLP probes on frozen inputs of play windows.

For each input an MLP (one hidden layer of 256, 3,000 Adam steps) regresses a store label, and the table gives its
correlation on the store's validation episodes:
- ``features``: the RSSM's filtered posterior features (class probabilities), what the policy and its reward head
  see;
- ``embed``: the encoder's embedding of the single frame, before the posterior;
- ``keypoints``: only the embedding's spatial-softmax coordinates, for a model trained with ``--model.keypoints``.

With ``oracle_reach`` (the true agent-to-T nearness, written by ``bench/oracle_labels.py`` for diagnostics only) it
says whether the agent-to-T geometry survives the encoder and the filter.

    OMP_NUM_THREADS=1 python bench/relation_probe.py --local runs/pusht-cpu/local/local.safetensors \\
        --store runs/pusht-cpu/data/play --label oracle_reach
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldgrad.algos.refit_head import _corr
from worldgrad.algos.train_local import load_local_model
from worldgrad.data.sampler import WindowSampler
from worldgrad.data.store import EpisodeStore
from worldgrad.eval.local import filtered_features


def probe_inputs(model, store: EpisodeStore, label: str, split: str, n: int, length: int, burn_in: int,
                 seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """The probe inputs of ``n`` windows (their first ``burn_in`` frames dropped: the filter's warm-up), flattened."""
    b = WindowSampler(store, length, split, labels=(label,)).sample(n, np.random.default_rng(seed))
    feats, embeds = [], []
    with torch.no_grad():
        for i in range(0, n, 50):
            feats.append(torch.as_tensor(filtered_features(model, b.frames[i : i + 50], b.actions[i : i + 50], False)))
            embeds.append(model.encode(torch.as_tensor(b.frames[i : i + 50])))
    out = {
        "features": torch.cat(feats)[:, burn_in:].flatten(0, 1),
        "embed": torch.cat(embeds)[:, burn_in:].flatten(0, 1),
    }
    k = model.cfg.keypoints
    if k:
        out["keypoints"] = out["embed"][:, -2 * k :]
    y = torch.as_tensor(b.labels[label][:, burn_in:], dtype=torch.float32).flatten()
    return out, y


def probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, steps: int,
          seed: int) -> float:  # fmt: skip
    """Validation correlation of an MLP fit on standardized inputs."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(x_train.shape[1], 256), nn.LayerNorm(256), nn.SiLU(), nn.Linear(256, 1))
    opt = torch.optim.Adam(head.parameters(), 3e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(y_train), (256,), generator=g)
        loss = ((head((x_train[idx] - mu) / sd).squeeze(-1) - y_train[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return _corr(head((x_val - mu) / sd).squeeze(-1), y_val)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local", type=Path, nargs="+", required=True, help="local.safetensors files to compare")
    p.add_argument("--store", type=Path, default=Path("runs/pusht-cpu/data/play"))
    p.add_argument("--label", default="oracle_reach")
    p.add_argument("--windows", type=int, nargs=2, default=[800, 200], help="training and validation windows")
    p.add_argument("--length", type=int, default=24)
    p.add_argument("--burn-in", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    store = EpisodeStore.open(args.store)
    print(f"label {args.label}; MLP probes, validation correlation ({args.windows[1]} windows of held-out episodes)\n")
    print("| local model | features | embed | keypoints |")
    print("|---|---|---|---|")
    for path in args.local:
        model = load_local_model(path)
        x_tr, y_tr = probe_inputs(model, store, args.label, "train", args.windows[0], args.length, args.burn_in, 0)
        x_va, y_va = probe_inputs(model, store, args.label, "val", args.windows[1], args.length, args.burn_in, 1)
        cells = [f"{probe(x_tr[k], y_tr, x_va[k], y_va, args.steps, args.seed):.3f}" if k in x_tr else "-"
                 for k in ("features", "embed", "keypoints")]  # fmt: skip
        print(f"| {path} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
