"""World-model speed: training step time and imagined frames per second, per preset. Prints a markdown table.

python bench/wm.py                                   # all presets, CPU or the GPU when present
python bench/wm.py --presets cpu --batches 1 16 64 --compile
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worldgrad.algos.train_wm import PRESETS, _InnerForward, sequence_loss
from worldgrad.imagine.rollout import WorldModelRollout
from worldgrad.models.diffusion import Denoiser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train_step(model: Denoiser, batch: int, ar_steps: int, device: torch.device, amp: bool, reps: int) -> float:
    c, s = model.cfg.context, model.cfg.image_size
    frames = torch.rand(batch, c + 1 + ar_steps, 3, s, s, device=device) * 2 - 1
    actions = torch.rand(batch, c + 1 + ar_steps, model.cfg.action_dim, device=device) * 2 - 1
    net = _InnerForward(model)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(reps + 2):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            loss, _ = sequence_loss(net, model, frames, actions)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        _sync(device)
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_rollout(model: Denoiser, sampler, batch: int, device: torch.device, steps: int) -> float:
    c, s = model.cfg.context, model.cfg.image_size
    engine = WorldModelRollout(model, sampler, batch)
    frames = np.random.default_rng(0).integers(0, 256, (batch, c, s, s, 3), dtype=np.uint8)
    engine.reset(frames, np.zeros((batch, c - 1, model.cfg.action_dim), np.float32))
    act = torch.zeros(batch, model.cfg.action_dim, device=device)
    for _ in range(2):
        engine.step(act)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        engine.step(act)
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser for the rollout")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}\n")
    cols = " | ".join(f"imagined frames/s B={b}" for b in args.batches)
    print(f"| preset | params | train step (batch {args.train_batch}) | samples/s | {cols} |")
    print("|---" * (4 + len(args.batches)) + "|")
    for preset in args.presets:
        cfg = PRESETS[preset]
        torch.manual_seed(0)
        model = Denoiser(cfg.model).to(device, memory_format=torch.channels_last)  # as train-wm does
        n = sum(p.numel() for p in model.parameters())
        step = time_train_step(model, args.train_batch, cfg.autoregressive_steps, device, cfg.amp, args.reps)
        model.eval()
        if args.compile:
            model.inner = torch.compile(model.inner)  # type: ignore[method-assign]
        fps = [time_rollout(model, cfg.sampler, b, device, steps=max(2, 64 // b)) for b in args.batches]
        cells = " | ".join(f"{f:.1f}" for f in fps)
        per_s = args.train_batch * (1 + cfg.autoregressive_steps) / step
        print(f"| {preset} | {n / 1e6:.2f}M | {step:.3f} s | {per_s:.0f} | {cells} |")


if __name__ == "__main__":
    main()
