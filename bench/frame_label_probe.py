"""How well can a label be read from single frames? A small conv net (the RSSM's encoder design) regresses a
per-frame store label on the training episodes and reports its correlation on held-out episodes.

The counterpart of ``refit_reward_head.py``, which fits the same labels on the frozen RSSM's features: where this
probe fits a label far better than a head on the features does, the features, not the label, are what limits the
head. ``--out`` saves the probe (encoder and head weights) for experiments that use it as a frame-level reward.

    OMP_NUM_THREADS=1 python bench/frame_label_probe.py --store runs/pusht-cpu/data/play --label oracle_reach
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldgrad.data.sampler import split_keys
from worldgrad.data.store import EpisodeStore
from worldgrad.models.encoders import ConvEncoder, ConvEncoderConfig
from worldgrad.models.image import to_model


def load(store: EpisodeStore, keys: list[str], label: str) -> tuple[torch.Tensor, torch.Tensor]:
    frames = np.concatenate([store.episode(k).frames for k in keys])
    values = np.concatenate([store.episode(k).label(label) for k in keys])
    return torch.from_numpy(frames), torch.from_numpy(values).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--label", default="oracle_reach")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="held-out episodes, by the store's hash split (as the RSSM's)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write-label", default=None,
                        help="write the probe's predictions on every frame of the store as this label: a "
                             "denoised copy of --label for refit_reward_head.py (on the training episodes the "
                             "probe has seen the labels it predicts)")  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    store = EpisodeStore.open(args.store)
    keys = store.keys()
    if args.label not in store.episode(keys[0]).label_names():
        parser.error(f"{args.store} has no label {args.label!r}; write it with label-reward or bench/oracle_labels.py")
    train_keys, val_keys = (split_keys(keys, split, args.val_fraction) for split in ("train", "val"))
    train_x, train_y = load(store, train_keys, args.label)
    val_x, val_y = load(store, val_keys, args.label)
    pick = torch.randperm(len(val_x))[:3000]
    val_x, val_y = val_x[pick], val_y[pick]
    encoder = ConvEncoder(ConvEncoderConfig(depth=16), train_x.shape[1])
    head = nn.Sequential(nn.SiLU(), nn.Linear(encoder.proj.out_features, 1))
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-4, weight_decay=1e-4)

    def predict(frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([head(encoder(to_model(frames[i : i + 500]))).squeeze(-1)
                              for i in range(0, len(frames), 500)])  # fmt: skip

    def val_corr() -> float:
        return float(np.corrcoef(predict(val_x).numpy(), val_y.numpy())[0, 1])

    t0 = time.perf_counter()
    print(f"{len(train_keys)} training / {len(val_keys)} held-out episodes; label {args.label}")
    print(f"{'step':>6} {'train mse':>10} {'val corr':>9} {'time s':>7}")
    for step in range(args.steps + 1):
        i = torch.randint(len(train_x), (args.batch,))
        loss = ((head(encoder(to_model(train_x[i]))).squeeze(-1) - train_y[i]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"{step:>6} {loss.item():>10.4f} {val_corr():>9.3f} {time.perf_counter() - t0:>7.0f}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"encoder": encoder.state_dict(), "head": head.state_dict()}, args.out)
        print(f"wrote {args.out}")
    if args.write_label is not None:
        for key in keys:
            store.write_label(key, args.write_label, predict(torch.from_numpy(store.episode(key).frames)).numpy())
        print(f"wrote label {args.write_label} on {len(keys)} episodes")


if __name__ == "__main__":
    main()
