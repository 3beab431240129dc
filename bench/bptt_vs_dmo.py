"""The cost DMO avoids: one policy-gradient step by BPTT through the diffusion sampler vs. by DMO (forward
values from the diffusion model, Jacobians from the RSSM). Same rollouts (same contexts, action noise and
sampler noise), same actor, same return (sum of discounted rewards over H steps). Prints a table of time and
peak memory per gradient step and the cosine similarity of the two gradients.

    python bench/bptt_vs_dmo.py --wm runs/pusht-cpu/wm --local runs/local-tiny-72k/local.safetensors \\
        --reward runs/pusht-cpu/reward/reward.safetensors --store runs/pusht-cpu/data/play --horizons 2 4 8 16 \\
        --json runs/bptt_vs_dmo.json    # the rows as JSON too, for `worldgrad compare --bptt-json`

Each (method, H) runs in a fresh process, so peak memory (max RSS on a CPU, max allocated on a GPU) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _setup(args: argparse.Namespace) -> dict:
    from worldgrad.algos.sapo import Actor
    from worldgrad.algos.train_local import load_local_model
    from worldgrad.algos.train_reward import load_goal_reward
    from worldgrad.algos.train_wm import load_world_model
    from worldgrad.data.sampler import WindowSampler
    from worldgrad.data.store import EpisodeStore

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    denoiser, sampler = load_world_model(args.wm, dev)
    local = load_local_model(args.local, dev)
    reward = load_goal_reward(args.reward, dev)
    for m in (denoiser, local, reward.model):
        m.requires_grad_(False)
    actor = Actor(local.feature_dim, denoiser.cfg.action_dim).to(dev)
    c = denoiser.cfg.context
    b = WindowSampler(EpisodeStore.open(args.store), c).sample(args.batch, np.random.default_rng(0))
    g = torch.Generator(dev).manual_seed(1)
    s = denoiser.cfg.image_size
    return {
        "dev": dev, "denoiser": denoiser, "sampler": sampler, "local": local, "reward": reward, "actor": actor,
        "frames": torch.as_tensor(b.frames, device=dev), "actions": torch.as_tensor(b.actions[:, :-1], device=dev),
        "eps": torch.randn(args.horizon, args.batch, denoiser.cfg.action_dim, device=dev, generator=g),
        "noise": torch.randn(args.horizon, args.batch, 3, s, s, device=dev, generator=g),
    }  # fmt: skip


def _objective(env: dict, method: str, horizon: int, gamma: float = 0.99) -> torch.Tensor:
    from worldgrad.algos.dmo import decoupled
    from worldgrad.algos.dmo_sapo import decouple_state
    from worldgrad.models.diffusion import sample_next, sample_next_differentiable
    from worldgrad.models.image import to_model

    den, loc, rew, actor = env["denoiser"], env["local"], env["reward"], env["actor"]
    ctx = to_model(env["frames"])  # (B, T, 3, H, W) in [-1, 1]
    acts = env["actions"]
    start = ctx[:, -1]
    with torch.no_grad():
        posts, _ = loc.observe(loc.encode(env["frames"]), torch.cat([acts, torch.zeros_like(acts[:, :1])], 1))
    state = type(posts)(*(x[:, -1] for x in posts))
    fwd = state
    total = torch.zeros((), device=ctx.device)
    for h in range(horizon):
        dist = actor(loc.features(state))
        a = torch.tanh(dist.mean + dist.log_std.exp() * env["eps"][h])
        a_ctx = torch.cat([acts, a[:, None]], 1)
        if method == "bptt":  # gradients through every denoising step, the reward model and the encoder
            nxt = sample_next_differentiable(den, ctx, a_ctx, env["sampler"], noise=env["noise"][h])
            r = rew(nxt, start)
            img01 = ((nxt + 1) / 2).permute(0, 2, 3, 1)
            state = loc.observe_step(state, a, loc.encode(img01))
            ctx = torch.cat([ctx[:, 1:], nxt[:, None]], 1)
        else:  # DMO: values from the diffusion model, gradients from the RSSM
            with torch.no_grad():
                nxt = sample_next(den, ctx, a_ctx.detach(), env["sampler"], noise=env["noise"][h])
                r_fwd = rew(nxt, start)
                img01 = ((nxt + 1) / 2).permute(0, 2, 3, 1)
                fwd = loc.observe_step(fwd, a.detach(), loc.encode(img01))
            state = decouple_state(loc.step_prior(state, a), fwd)
            r = decoupled(loc.reward(loc.features(state)), r_fwd)
            ctx = torch.cat([ctx[:, 1:], nxt[:, None]], 1)
        acts = a_ctx[:, 1:]
        total = total + gamma**h * r.mean()
    return total


def worker(args: argparse.Namespace) -> None:
    env = _setup(args)
    dev = env["dev"]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, grads = [], None
    for _ in range(args.reps):
        t = time.perf_counter()
        j = _objective(env, args.method, args.horizon)
        grads = torch.autograd.grad(j, list(env["actor"].parameters()))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    flat = torch.cat([g.flatten() for g in grads]).cpu()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024)  # fmt: skip
    torch.save(flat, f"{args.out}/grad_{args.method}_{args.horizon}.pt")
    print(json.dumps({"time_s": float(np.median(times)), "peak_mib": peak, "return": float(j)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wm", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--reward", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--horizons", nargs="+", type=int, default=[2, 4, 8, 16])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out", default="/tmp")
    p.add_argument("--json", default=None, help="also write the table's rows to this JSON file")
    p.add_argument("--method", default=None, help=argparse.SUPPRESS)
    p.add_argument("--horizon", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method is not None:
        worker(args)
        return
    print(f"device: {'cuda' if torch.cuda.is_available() else f'CPU, {torch.get_num_threads()} threads'}; "
          f"batch {args.batch}; peak memory = max RSS growth (CPU) or max allocated (GPU)\n")  # fmt: skip
    print("| H | BPTT time | DMO time | time ratio | BPTT peak MiB | DMO peak MiB | memory ratio | cosine |")
    print("|---|---|---|---|---|---|---|---|")
    base = [sys.executable, __file__, "--wm", args.wm, "--local", args.local, "--reward", args.reward,
            "--store", args.store, "--batch", str(args.batch), "--reps", str(args.reps), "--out", args.out]  # fmt: skip
    rows = []
    for h in args.horizons:
        res = {}
        for method in ("bptt", "dmo"):
            out = subprocess.run([*base, "--method", method, "--horizon", str(h)], capture_output=True, text=True)
            if out.returncode != 0:
                res[method] = None
                print(f"{method} H={h} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            res[method] = json.loads(out.stdout.strip().splitlines()[-1])
        if res["bptt"] is None or res["dmo"] is None:
            continue
        gb = torch.load(f"{args.out}/grad_bptt_{h}.pt")
        gd = torch.load(f"{args.out}/grad_dmo_{h}.pt")
        cos = float(torch.nn.functional.cosine_similarity(gb, gd, dim=0))
        b, d = res["bptt"], res["dmo"]
        mem_ratio = b["peak_mib"] / max(d["peak_mib"], 1)
        print(f"| {h} | {b['time_s']:.2f} s | {d['time_s']:.2f} s | {b['time_s'] / d['time_s']:.1f}x "
              f"| {b['peak_mib']:.0f} | {d['peak_mib']:.0f} | {mem_ratio:.1f}x | {cos:.3f} |")  # fmt: skip
        rows.append({"horizon": h, "bptt_time_s": b["time_s"], "dmo_time_s": d["time_s"],
                     "bptt_peak_mib": b["peak_mib"], "dmo_peak_mib": d["peak_mib"], "cosine": cos})  # fmt: skip
    if args.json:
        device = "cuda" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
        with open(args.json, "w") as f:
            json.dump({"device": device, "batch": args.batch, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
