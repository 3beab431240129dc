"""DMO-SAPO from pixels with worldgrad's own RSSM as the backward model, on a task whose answer is known.

``bench/sapo_check.py`` validates the optimizer with exact or rough analytic models. This check puts the
local model of the Push-T pipeline in the loop: Pendulum-v1 drawn as 64x64 images (a red rod on white), play
data with smoothed random torques written to an episode store with a per-frame reward label, the RSSM trained on
it by ``train_local`` exactly as on Push-T, then the policy trained on the RSSM's features:

- ``dmo``: the true physics (rendered) generates the rollouts and the rewards, the RSSM filters the frames and
  supplies the Jacobians (DMO-SAPO as ``train-policy`` runs it, with a perfect global world model).
- ``rssm``: the RSSM imagines alone from its sampled prior, rewards from its reward head (No Diffusion).

Each policy (``ImagePolicy``: the RSSM filter plus the actor) then runs 20 episodes of gymnasium's Pendulum-v1 on
frames drawn from its state. A pass means the RSSM gives the actor usable features and Jacobians; a failure
here, where the forward model is perfect, points at the local model rather than the global one.

    OMP_NUM_THREADS=1 python bench/pixel_pendulum_check.py --out /tmp/pixel-pendulum
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sapo_check import Physics, random_states, reward, run_pendulum
from worldgrad.algos.dmo import decoupled
from worldgrad.algos.dmo_sapo import (
    Agent,
    SAPOConfig,
    actor_step,
    critic_update,
    decouple_state,
    imagine_window,
    map_state,
    temperature_update,
)
from worldgrad.algos.train_local import PRESETS, load_local_model, train_local
from worldgrad.data.store import EpisodeStore, StoreMeta
from worldgrad.policy import ImagePolicy
from worldgrad.runtime.seeding import seed_everything

SIZE = 64
_YY, _XX = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                          indexing="ij")  # fmt: skip


def render(theta: torch.Tensor) -> torch.Tensor:
    """Angles (B,) -> uint8 (B, 64, 64, 3): a red rod from the centre (upright at 0), a dark pivot, white ground."""
    c = SIZE / 2
    dx, dy = 22 * torch.sin(theta), -22 * torch.cos(theta)
    px, py = _XX[None] - c, _YY[None] - c
    t = ((px * dx[:, None, None] + py * dy[:, None, None]) / (22.0**2)).clamp(0, 1)
    dist = torch.hypot(px - t * dx[:, None, None], py - t * dy[:, None, None])
    img = torch.full((len(theta), SIZE, SIZE, 3), 255, dtype=torch.uint8)
    img[dist < 3.0] = torch.tensor([220, 50, 50], dtype=torch.uint8)
    img[(torch.hypot(px, py) < 2.5).expand_as(dist)] = torch.tensor([40, 40, 40], dtype=torch.uint8)
    return img


def record_play(path: Path, episodes: int, length: int, seed: int) -> EpisodeStore:
    """Smoothed random torques from Pendulum's start distribution; the reward label is the frame's reward."""
    store = EpisodeStore.create(path, StoreMeta(env="pendulum", image_shape=(SIZE, SIZE, 3), action_dim=1, fps=20.0))
    rng, physics = np.random.default_rng(seed), Physics()
    for e in range(episodes):
        x = random_states(1, rng)
        frames, actions, rewards = [], [], []
        a = 0.0
        for _ in range(length):
            a = float(np.clip(0.8 * a + 0.5 * rng.normal(), -1, 1))
            frames.append(render(x[:, 0])[0].numpy())
            rewards.append(float(reward(x)[0]))
            actions.append([a])
            x = physics.step(x, torch.tensor([[a]], dtype=torch.float32))
        key = f"e{e:05d}"
        store.append(key, np.stack(frames), np.asarray(actions, np.float32))
        store.write_label(key, "reward", np.asarray(rewards, np.float32))
    return store


def train_policy(method: str, local: Any, iterations: int, num_envs: int, episode_len: int, seed: int,
                 cfg: SAPOConfig) -> Agent:  # fmt: skip
    seed_everything(seed)
    rng, physics = np.random.default_rng(seed), Physics()
    agent = Agent(local.feature_dim, 1, cfg)
    optims = agent.optimizers()
    x = random_states(num_envs, rng)

    def restart(ids: np.ndarray) -> None:
        nonlocal x, state, frame
        x = x.clone()
        x[torch.as_tensor(ids)] = random_states(len(ids), rng)
        frame = render(x[:, 0])
        with torch.no_grad():  # one real frame filtered from the blank state, as a deployed policy starts
            fresh = local.observe_step(local.initial_state(num_envs), torch.zeros(num_envs, 1), local.encode(frame))
        keep = torch.ones(num_envs, dtype=torch.bool)
        keep[torch.as_tensor(ids)] = False
        state = map_state(lambda s, f: torch.where(keep.view(-1, *[1] * (s.ndim - 1)), s, f), state, fresh)

    def step_world(action: torch.Tensor) -> torch.Tensor:
        nonlocal x
        x = physics.step(x, action)
        return render(x[:, 0])

    state, frame = local.initial_state(num_envs), render(x[:, 0])
    restart(np.arange(num_envs))
    age = np.zeros(num_envs, dtype=np.int64)
    for _ in tqdm(range(iterations), desc=f"policy {method}"):
        loss, window, state, frame = imagine_window(
            agent, local, None if method == "rssm" else step_world, lambda f: reward(x), state, frame, cfg.horizon
        )
        if actor_step(agent, optims["actor"], loss, loss) is None:
            raise RuntimeError("non-finite actor gradient")
        critic_update(agent, window, optims["critic"], rng)
        temperature_update(agent, window, optims["alpha"])
        age += cfg.horizon
        done = np.flatnonzero(age >= episode_len)
        if len(done):
            restart(done)
            age[done] = 0
    return agent


def gradient_cosine(local: Any, n: int = 64, horizon: int = 16, burn_in: int = 4, seed: int = 1) -> np.ndarray:
    """Per trajectory, the cosine between d(return)/d(actions) of the true physics and of DMO with the RSSM as
    backward model (true frames and rewards as values), on the same states and random actions."""
    rng, physics = np.random.default_rng(seed), Physics()
    x = random_states(n, rng)
    state = local.initial_state(n)
    prev = torch.zeros(n, 1)
    with torch.no_grad():  # the filter sees a few real frames first, so it knows the velocity
        for _ in range(burn_in):
            state = local.observe_step(state, prev, local.encode(render(x[:, 0])))
            prev = torch.as_tensor(rng.uniform(-1, 1, (n, 1)), dtype=torch.float32)
            x = physics.step(x, prev)
        state = local.observe_step(state, prev, local.encode(render(x[:, 0])))
    actions = torch.as_tensor(rng.uniform(-1, 1, (horizon, n, 1)), dtype=torch.float32)
    a_true, a_dmo = actions.clone().requires_grad_(), actions.clone().requires_grad_()
    xt, ret = x, torch.zeros(n)
    for t in range(horizon):
        xt = physics.step(xt, a_true[t])
        ret = ret + reward(xt)
    (g_true,) = torch.autograd.grad(ret.sum(), a_true)
    latent, fwd, xt, ret = state, state, x, torch.zeros(n)
    for t in range(horizon):
        with torch.no_grad():
            xt = physics.step(xt, actions[t])
            fwd = local.observe_step(fwd, actions[t], local.encode(render(xt[:, 0])))
        latent = decouple_state(local.step_prior(latent, a_dmo[t]), fwd)
        ret = ret + decoupled(local.reward(local.features(latent)), reward(xt))
    (g_dmo,) = torch.autograd.grad(ret.sum(), a_dmo)
    g1, g2 = g_true[..., 0].T, g_dmo[..., 0].T
    return (torch.nn.functional.cosine_similarity(g1, g2, dim=1)).numpy()


def evaluate(policy: ImagePolicy | None, episodes: int) -> list[float]:
    """The image policy on frames drawn from the true pendulum's state (the camera)."""
    if policy is None:
        return run_pendulum(None, episodes)

    def act(obs: np.ndarray, env: Any) -> np.ndarray:
        return policy.act(render(torch.tensor([float(env.unwrapped.state[0])]))[0].numpy())

    return run_pendulum(act, episodes, reset=policy.reset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pixel-pendulum"))
    parser.add_argument("--play-episodes", type=int, default=100)
    parser.add_argument("--rssm-steps", type=int, default=2000)
    parser.add_argument("--methods", nargs="*", default=["dmo", "rssm"])
    parser.add_argument("--iterations", type=int, default=300, help="policy windows of H steps")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    store_path = args.out / "play"
    t0 = time.perf_counter()
    if not store_path.exists():
        record_play(store_path, args.play_episodes, 200, args.seed)
    t_data = time.perf_counter() - t0
    tiny = PRESETS["tiny"]
    local_cfg = replace(tiny, store=store_path, runs=args.out, name="rssm", steps=args.rssm_steps, eval_every=500,
                        model=replace(tiny.model, action_dim=1), threads=1)  # fmt: skip
    t0 = time.perf_counter()
    summary = train_local(local_cfg, progress=True)
    t_rssm = time.perf_counter() - t0
    print(f"play data {t_data:.0f} s; RSSM {args.rssm_steps} steps {t_rssm:.0f} s: {summary.get('val', summary)}")
    local = load_local_model(args.out / "rssm" / "local.safetensors").requires_grad_(False)
    for h in (1, 4, 16):
        cos = gradient_cosine(local, horizon=h)
        print(
            f"gradient cosine, DMO with the RSSM vs the true physics, H={h}: median {np.median(cos):.3f}, "
            f"mean {cos.mean():.3f}, share > 0: {(cos > 0).mean():.2f}"
        )
    cfg = SAPOConfig()
    rows = [("random", 0.0, evaluate(None, args.episodes))]
    for method in args.methods:  # the RSSM is frozen here (no fine-tuning): one copy serves every method
        t0 = time.perf_counter()
        agent = train_policy(method, local, args.iterations, args.num_envs, 200, args.seed, cfg)
        wall = time.perf_counter() - t0
        rows.append((method, wall, evaluate(ImagePolicy.from_agent(local, agent.eval(), name=method), args.episodes)))
    print(f"| method | policy training wall s ({args.iterations} windows x {args.num_envs} envs x 16) | eval return |")
    print("|---|---|---|")
    for name, wall, rets in rows:
        print(f"| {name} | {wall:.0f} | {np.mean(rets):.0f} +- {np.std(rets):.0f} |")


if __name__ == "__main__":
    main()
