"""Collection throughput on the real systems: raw env steps/s and `worldgrad collect` frames/s by workers.

Run: python bench/collect.py [--env all|pusht|pushcube] [--frames 6000] [--size 64] [--operator explorer]
Prints a markdown table per env. The goal is >= 300 frames/s per core at 64x64.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from worldgrad.data.collect import CollectConfig, collect
from worldgrad.envs.pushcube import PushCubeConfig, PushCubeEnv
from worldgrad.envs.pusht import PushTConfig, PushTEnv


def env_steps_per_s(size: int, n: int = 2000, env_name: str = "pusht") -> float:
    if env_name == "pushcube":
        env = PushCubeEnv(PushCubeConfig(image_size=size, terminate_on_success=False, max_episode_steps=10**9))
    else:
        env = PushTEnv(PushTConfig(image_size=size, terminate_on_success=False, max_episode_steps=10**9))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (n, env.action_space.shape[0]))
    for a in actions[:100]:  # warm-up
        env.step(a)
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=6000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--operator", default="explorer:0.5,pusher:0.5")
    p.add_argument("--env", choices=("all", "pusht", "pushcube"), default="all")
    args = p.parse_args()
    for env_name in ("pusht", "pushcube") if args.env == "all" else (args.env,):
        rows = [("env.step, 1 process (no store)", 1, env_steps_per_s(args.size, env_name=env_name))]
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as d:
                cfg = CollectConfig(
                    out=Path(d) / "store", env=env_name, operator=args.operator, frames=args.frames,
                    episode_len=500, workers=workers, pusht=PushTConfig(image_size=args.size),
                    pushcube=PushCubeConfig(image_size=args.size),
                )  # fmt: skip
                t = time.perf_counter()
                collect(cfg, progress=False)
                fps = args.frames / (time.perf_counter() - t)
                rows.append((f"worldgrad collect, {workers} worker(s)", workers, fps))
        size = f"{args.size}x{args.size}"
        print(f"{env_name} collection throughput at {size}, {args.frames} frames, {os.cpu_count()} cores")
        print("| what | processes | frames/s | frames/s per process | ms per frame per process |")
        print("|---|---|---|---|---|")
        for name, procs, fps in rows:
            print(f"| {name} | {procs} | {fps:.0f} | {fps / procs:.0f} | {1000 * procs / fps:.2f} |")


if __name__ == "__main__":
    main()
