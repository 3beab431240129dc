"""Is DMO's gradient right where the policy goes? The window gradient against the simulator's finite difference.

DMO's actor follows d/d a_0 of a window's discounted reward-head sum, taken backward through the RSSM's prior while
the values come from the forward frames. Here the simulator is the forward model: along the deterministic
policy's own trajectory (an oracle run's saved agent and RSSM) from evaluation seeds, after ``--skip`` steps, the
script compares that gradient with the central finite difference of the same sum when the first action of the
window moves by +-``--delta`` and the later actions are replayed (the frames filtered by the RSSM each time).
Printed: the median cosine and the share of positive cosines. ``--skip 0`` measures at the reset, a larger skip
where the policy has taken the agent (often against a wall). The simulator is used for evaluation only.

    OMP_NUM_THREADS=1 python bench/pusht_window_gradient_check.py --run runs/oracle --local L --skip 0 30
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pusht_takeover_check import load_policy
from worldgrad.algos.dmo_sapo import SAPOConfig, decouple_state
from worldgrad.envs.pusht import PushTConfig, PushTEnv


def filtered_start(local: Any, env: PushTEnv, seed: int, actions: list[np.ndarray]) -> Any:
    """Resets ``seed``, replays ``actions`` through the filter; the state after the last frame."""
    obs, _ = env.reset(seed=seed)
    state, last = local.initial_state(1), torch.zeros(1, 2)
    for a in actions:
        state = local.observe_step(state, last, local.encode(torch.as_tensor(obs)[None]), sample=False)
        last = torch.as_tensor(a)[None]
        obs, *_ = env.step(a)
    return local.observe_step(state, last, local.encode(torch.as_tensor(obs)[None]), sample=False)


@torch.no_grad()
def forward_sum(local: Any, env: PushTEnv, seed: int, actions: list[np.ndarray], skip: int, gamma: float) -> float:
    """The window's discounted head sum on the simulator's frames (what the forward path computes)."""
    state = filtered_start(local, env, seed, actions[:skip])
    total = 0.0
    for h, a in enumerate(actions[skip:]):
        obs, *_ = env.step(a)
        state = local.observe_step(state, torch.as_tensor(a)[None], local.encode(torch.as_tensor(obs)[None]),
                                   sample=False)  # fmt: skip
        total += gamma**h * float(local.reward(local.features(state)))
    return total


def dmo_gradient(local: Any, env: PushTEnv, seed: int, actions: list[np.ndarray], skip: int, gamma: float):
    """d/d a_skip of the same sum through DMO's decoupled chain (prior Jacobians, forward values)."""
    with torch.no_grad():
        state = filtered_start(local, env, seed, actions[:skip])
    fwd = latent = state
    leaves = [torch.as_tensor(a)[None].clone().requires_grad_(True) for a in actions[skip:]]
    total = torch.zeros(())
    for h, leaf in enumerate(leaves):
        obs, *_ = env.step(actions[skip + h])
        with torch.no_grad():
            fwd = local.observe_step(fwd, leaf.detach(), local.encode(torch.as_tensor(obs)[None]), sample=False)
        latent = decouple_state(local.step_prior(latent, leaf), fwd)
        total = total + gamma**h * local.reward(local.features(latent))[0]
    return torch.autograd.grad(total, leaves[0])[0][0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="oracle bench --out folder (its saved agent)")
    parser.add_argument("--local", type=Path, required=True, help="the RSSM that run started from (its config)")
    parser.add_argument("--skip", type=int, nargs="+", default=[0, 30], help="policy steps before the window")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--delta", type=float, default=0.1, help="finite-difference step of the first action")
    parser.add_argument("--action-scale", type=float, default=0.5, help="the run's --action-scale")
    args = parser.parse_args()
    policy = load_policy(args.run, args.local, SAPOConfig(action_scale=args.action_scale), mean_posteriors=True)
    local = policy.local.requires_grad_(False)
    env = PushTEnv(PushTConfig(image_size=local.cfg.image_size))
    print("| steps before the window | cosine(DMO, finite difference), median | positive |")
    print("|---|---|---|")
    for skip in args.skip:
        cosines = []
        for k in range(args.episodes):
            seed = 1_000_000 + k
            obs, _ = env.reset(seed=seed)
            policy.reset(seed)
            actions = []
            for _ in range(skip + args.horizon):  # the deterministic policy's own actions
                actions.append(policy.act(obs))
                obs, *_ = env.step(actions[-1])
            grad = dmo_gradient(local, env, seed, actions, skip, args.gamma)
            fd = np.zeros(2)
            for j in range(2):
                up, down = [a.copy() for a in actions], [a.copy() for a in actions]
                up[skip][j] += args.delta
                down[skip][j] -= args.delta
                fd[j] = (forward_sum(local, env, seed, up, skip, args.gamma)
                         - forward_sum(local, env, seed, down, skip, args.gamma)) / (2 * args.delta)  # fmt: skip
            cosines.append(float(grad @ fd / (np.linalg.norm(grad) * np.linalg.norm(fd) + 1e-9)))
        c = np.array(cosines)
        print(f"| {skip} | {np.median(c):.2f} | {np.mean(c > 0):.0%} |", flush=True)
    env.close()


if __name__ == "__main__":
    main()
