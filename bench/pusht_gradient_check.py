"""Does the local model know which way a push moves the T? Simulator finite differences vs DMO's gradient.

DMO-SAPO's actor follows d reward / d action as the local RSSM and its reward head give it. On Pendulum that
gradient matches the true one (``bench/pixel_pendulum_check.py``); this check asks the same on Push-T, where what
matters is contact. For recorded held-out states (evaluation only: the simulator is set to the recorded agent
position and T pose), the one-step reward r(a) = the learned reward of the next frame (s_start = the frame 16
steps before it, as in the reward labels the RSSM learned) is measured for 8 actions around the recorded one,
and a least-squares plane gives the finite-difference gradient. The local model's gradient is
d reward_head(features(step_prior(l, a))) / d a at the recorded action, with l the RSSM filtered over the
recorded frames before. Printed: cosine between the two (median, share > 0) and their norms, for states where
the T moved in the recorded next step (contact) and states where it did not.

    OMP_NUM_THREADS=1 python bench/pusht_gradient_check.py --run runs/pusht-cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from worldgrad.algos.train_local import load_local_model
from worldgrad.algos.train_reward import load_goal_reward
from worldgrad.data.store import EpisodeStore
from worldgrad.envs.pusht import PushTConfig, PushTEnv

DIRECTIONS = np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)


def pick_states(store: EpisodeStore, n: int, history: int, rng: np.random.Generator) -> dict[str, list]:
    """(episode, t) pairs with and without a T motion in the recorded next step."""
    moved, still = [], []
    for e, ep in enumerate(store):
        pose = np.asarray(ep.sim("block_pose"))
        step = np.hypot(*(pose[1:, :2] - pose[:-1, :2]).T) + 50 * np.abs(pose[1:, 2] - pose[:-1, 2])
        for t in range(history, len(pose) - 1):
            (moved if step[t] > 2.0 else still).append((e, t))
    out = {}
    for name, pool in (("contact", moved), ("no contact", still)):
        idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        out[name] = [pool[i] for i in idx]
    return out


def finite_difference(env: PushTEnv, reward, agent, block, start, a0, delta: float) -> np.ndarray:
    """Least-squares gradient of the one-step learned reward around action a0."""
    nxt = []
    for u in DIRECTIONS:
        env.reset(seed=0, options={"agent_pos": tuple(agent), "block_pose": tuple(block)})
        nxt.append(env.step(np.clip(a0 + delta * u, -1, 1))[0])
    with torch.no_grad():
        r = reward(np.stack(nxt), np.repeat(start[None], len(nxt), 0)).float().numpy()
    g, *_ = np.linalg.lstsq(delta * DIRECTIONS, r - r.mean(), rcond=None)
    return g


def local_gradient(local, frames: np.ndarray, actions: np.ndarray, a0: np.ndarray) -> np.ndarray:
    """d reward_head(step_prior(filtered state, a)) / d a at a0; frames (T, H, W, 3) end at the current one."""
    with torch.no_grad():
        state = local.initial_state(1)
        emb = local.encode(torch.as_tensor(frames))
        for k in range(len(frames)):
            prev = torch.zeros(1, 2) if k == 0 else torch.as_tensor(actions[k - 1][None], dtype=torch.float32)
            state = local.observe_step(state, prev, emb[k : k + 1])
    a = torch.as_tensor(a0[None], dtype=torch.float32).requires_grad_()
    r = local.reward(local.features(local.step_prior(state, a)))
    (g,) = torch.autograd.grad(r.sum(), a)
    return g[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/pusht-cpu"), help="pipeline run folder")
    parser.add_argument("--local", type=Path, default=None, help="RSSM (default RUN/local/local.safetensors)")
    parser.add_argument("--reward-model", type=Path, default=None, help="default RUN/reward/reward.safetensors")
    parser.add_argument("--store", type=Path, default=None, help="held-out store (default RUN/data/heldout)")
    parser.add_argument("--states", type=int, default=64, help="states per group")
    parser.add_argument("--history", type=int, default=8, help="recorded frames the RSSM filters first")
    parser.add_argument("--delta", type=float, default=0.2, help="action perturbation of the finite differences")
    args = parser.parse_args()
    torch.set_num_threads(1)
    local = load_local_model(args.local or args.run / "local" / "local.safetensors").requires_grad_(False)
    reward = load_goal_reward(args.reward_model or args.run / "reward" / "reward.safetensors")
    store = EpisodeStore.open(args.store or args.run / "data" / "heldout")
    episodes = list(store)
    env = PushTEnv(PushTConfig(image_size=local.cfg.image_size))
    groups = pick_states(store, args.states, args.history, np.random.default_rng(0))
    print("| states | n | cosine median | cosine > 0 | mean abs. true gradient | mean abs. local gradient |")
    print("|---|---|---|---|---|---|")
    for name, states in groups.items():
        cos, g_true, g_local = [], [], []
        for e, t in states:
            ep = episodes[e]
            frames, actions = np.array(ep.frames[t - args.history : t + 1]), np.asarray(ep.actions)
            agent, block = np.asarray(ep.sim("agent_pos"))[t], np.asarray(ep.sim("block_pose"))[t]
            a0 = actions[t]
            start = np.asarray(ep.frames[max(0, t + 1 - 16)])  # the labels' s_start for frame t + 1
            gt = finite_difference(env, reward, agent, block, start, a0, args.delta)
            gl = local_gradient(local, frames, actions[t - args.history : t], a0)
            cos.append(float(gt @ gl / (np.linalg.norm(gt) * np.linalg.norm(gl) + 1e-12)))
            g_true.append(np.linalg.norm(gt))
            g_local.append(np.linalg.norm(gl))
        c = np.asarray(cos)
        print(f"| {name} | {len(c)} | {np.median(c):.2f} | {(c > 0).mean():.2f} | {np.mean(g_true):.3f} | "
              f"{np.mean(g_local):.3f} |")  # fmt: skip
    env.close()


if __name__ == "__main__":
    main()
