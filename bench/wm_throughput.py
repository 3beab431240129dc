"""World-model speed: training step time, imagined frames per second, GFLOP per imagined frame and peak memory,
per preset. Prints a markdown table.

Peak memory is torch's peak allocation on CUDA; on CPU it is the peak growth of resident memory while a fresh
process (the model already built) runs the largest-batch rollout, sampled every 2 ms from /proc/self/statm.

python bench/wm_throughput.py                                   # all presets, CPU or the GPU when present
python bench/wm_throughput.py --presets cpu --batches 1 16 64 --compile
python bench/wm_throughput.py --presets cpu --batches 16 --sampler-steps 2   # train-policy --sampler-steps 2
python bench/wm_throughput.py --presets cpu --batches 16 --amp both            # bf16 against fp32, row by row

The "bf16" column says whether bfloat16 autocast ran: on CUDA, and on CPUs with native bf16 (AVX512-BF16 / AMX).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from dataclasses import replace

import numpy as np
import torch

from worldgrad.algos.train_wm import PRESETS, _InnerForward, sequence_loss
from worldgrad.imagine.rollout import WorldModelRollout
from worldgrad.models.diffusion import Denoiser
from worldgrad.runtime.seeding import bf16_autocast, bf16_enabled


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
        with bf16_autocast(device, amp):
            loss, _ = sequence_loss(net, model, frames, actions)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        _sync(device)
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rollout_rss_growth(preset: str, batch: int) -> float:
    """In a fresh process: MiB of resident-memory growth while a B-env rollout runs (after building the model)."""
    torch.set_num_threads(int(os.environ.get("WM_BENCH_THREADS", "0")) or torch.get_num_threads())
    cfg = PRESETS[preset]
    model = Denoiser(cfg.model).to(memory_format=torch.channels_last).eval()
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time_rollout(model, cfg.sampler, batch, torch.device("cpu"), steps=2)
    done.set()
    t.join()
    return max(0, peak[0] - base) / 2**20


def peak_memory(preset: str, batch: int, device: torch.device, model: Denoiser) -> float | None:
    """Peak memory (MiB) of a B-env rollout: torch's peak allocation on CUDA, resident growth on Linux CPUs."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        time_rollout(model, PRESETS[preset].sampler, batch, device, steps=2)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return None
    os.environ["WM_BENCH_THREADS"] = str(torch.get_num_threads())
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_rollout_rss_growth, (preset, batch))


def gflop_per_frame(model: Denoiser, sampler, device: torch.device) -> float:
    """FLOPs (2 x multiply-adds, torch's counter) of one imagined frame: every denoiser call of one sampler step."""
    from torch.utils.flop_counter import FlopCounterMode

    c, s = model.cfg.context, model.cfg.image_size
    engine = WorldModelRollout(model, sampler, 1)
    engine.reset(np.zeros((1, c, s, s, 3), np.uint8), np.zeros((1, c - 1, model.cfg.action_dim), np.float32))
    counter = FlopCounterMode(display=False)
    with counter:
        engine.step(torch.zeros(1, model.cfg.action_dim, device=device))
    return counter.get_total_flops() / 1e9


def time_rollout(model: Denoiser, sampler, batch: int, device: torch.device, steps: int, amp: bool = True) -> float:
    c, s = model.cfg.context, model.cfg.image_size
    engine = WorldModelRollout(model, sampler, batch, amp=amp)
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
    p.add_argument("--sampler-steps", type=int, default=0, help="denoising steps per imagined frame (0: the preset's)")
    p.add_argument(
        "--amp",
        choices=("auto", "off", "both"),
        default="auto",
        help="auto: bf16 where the preset asks and the device has it; off: fp32; both: a row each",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}\n")
    cols = " | ".join(f"imagined frames/s B={b}" for b in args.batches)
    big = max(args.batches)
    print(
        f"| preset | bf16 | sampler steps | params | GFLOP/frame | train step (batch {args.train_batch}) | samples/s "
        f"| {cols} | peak memory B={big} |"
    )
    print("|---" * (8 + len(args.batches)) + "|")
    precisions = (True, False) if args.amp == "both" else (args.amp == "auto",)
    runs = [(preset, wanted) for preset in args.presets for wanted in precisions]
    for preset, use_amp in runs:
        cfg = PRESETS[preset]
        if args.sampler_steps > 0:
            cfg = replace(cfg, sampler=replace(cfg.sampler, steps=args.sampler_steps))
        torch.manual_seed(0)
        model = Denoiser(cfg.model).to(device, memory_format=torch.channels_last)  # as train-wm does
        n = sum(p.numel() for p in model.parameters())
        amp = use_amp and cfg.amp
        bf16 = bf16_enabled(device, amp)
        step = time_train_step(model, args.train_batch, cfg.autoregressive_steps, device, amp, args.reps)
        model.eval()
        gflop = gflop_per_frame(model, cfg.sampler, device)
        if args.compile:
            model.inner = torch.compile(model.inner)  # type: ignore[method-assign]
        fps = [time_rollout(model, cfg.sampler, b, device, steps=max(2, 64 // b), amp=amp) for b in args.batches]
        mem = peak_memory(preset, big, device, model)
        cells = " | ".join(f"{f:.1f}" for f in fps)
        per_s = args.train_batch * (1 + cfg.autoregressive_steps) / step
        mem_s = "n/a" if mem is None else f"{mem:.0f} MiB"
        print(
            f"| {preset} | {'yes' if bf16 else 'no'} | {cfg.sampler.steps} | {n / 1e6:.2f}M | {gflop:.3f} "
            f"| {step:.3f} s | {per_s:.0f} | {cells} | {mem_s} |"
        )


if __name__ == "__main__":
    main()
