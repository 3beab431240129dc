"""Validates DMO-SAPO (``worldgrad.algos.dmo_sapo``) on a standard gymnasium task before trusting it inside the
learned world models: the same actor, critic, temperature, window and update code that ``train-policy`` runs,
with the Pendulum-v1 physics written in torch as the models.

Three ways to train, each evaluated on gymnasium's own Pendulum-v1 (deterministic policy, 20 fresh episodes):

- ``exact``: the true physics generates the rollouts and supplies the gradients (SAPO; DMO with forward ==
  backward model).
- ``dmo``: the true physics generates the rollouts, a wrong one (other mass and gravity) supplies the
  gradients: DMO's decoupling, values from the accurate model, Jacobians from the rough one.
- ``wrong-model``: the wrong physics does both ("No Diffusion": the rough model alone imagines).

Prints a markdown table: method, training steps, wall time, evaluation return (mean and std over episodes),
next to the random policy; Pendulum-v1 counts as solved at a mean return of about -200 (SAC reaches ~-150).

    OMP_NUM_THREADS=1 python bench/sapo_check.py
    OMP_NUM_THREADS=1 python bench/sapo_check.py --methods exact --iterations 200 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, actor_step, critic_update, imagine_window, temperature_update
from worldgrad.runtime.seeding import seed_everything

REWARD_SCALE = 0.1
"""Pendulum's cost runs to ~16 per step; scaled so that the entropy bonus (about alpha / 2) stays comparable"""


@dataclass(frozen=True)
class Physics:
    """gymnasium's Pendulum-v1 dynamics (semi-implicit Euler), actions in [-1, 1] scaled to the torque."""

    g: float = 10.0
    m: float = 1.0
    length: float = 1.0
    dt: float = 0.05
    max_torque: float = 2.0
    max_speed: float = 8.0

    def step(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        th, thdot = x.unbind(-1)
        u = self.max_torque * action[..., 0]
        acc = 3 * self.g / (2 * self.length) * torch.sin(th) + 3.0 / (self.m * self.length**2) * u
        thdot = (thdot + acc * self.dt).clamp(-self.max_speed, self.max_speed)
        return torch.stack([th + thdot * self.dt, thdot], -1)


WRONG = Physics(g=6.0, m=2.0)
"""the rough backward model: 60 % of the gravity, half the torque's effect"""


def reward(x: torch.Tensor) -> torch.Tensor:
    """Minus Pendulum's cost of the state (the action's 0.001 u^2 term left out), scaled."""
    th, thdot = x.unbind(-1)
    angle = torch.remainder(th + torch.pi, 2 * torch.pi) - torch.pi
    return -REWARD_SCALE * (angle**2 + 0.1 * thdot**2)


def features(cos: torch.Tensor, sin: torch.Tensor, thdot: torch.Tensor) -> torch.Tensor:
    return torch.stack([cos, sin, thdot / 8.0], -1)


class State(NamedTuple):
    x: torch.Tensor
    """(B, 2) angle, angular velocity"""


class PendulumModel:
    """A :class:`worldgrad.algos.dmo_sapo.LocalModel` whose frames are the states themselves."""

    def __init__(self, physics: Physics) -> None:
        self.physics = physics

    def initial_state(self, batch: int) -> State:
        return State(torch.zeros(batch, 2))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def observe_step(self, state: State, action: torch.Tensor, embed: torch.Tensor) -> State:
        return State(embed)

    def step_prior(self, state: State, action: torch.Tensor, sample: bool = False) -> State:
        return State(self.physics.step(state.x, action))

    def features(self, state: State) -> torch.Tensor:
        th, thdot = state.x.unbind(-1)
        return features(torch.cos(th), torch.sin(th), thdot)

    def reward(self, feats: torch.Tensor) -> torch.Tensor:
        th = torch.atan2(feats[..., 1], feats[..., 0])
        return reward(torch.stack([th, 8.0 * feats[..., 2]], -1))


def random_states(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Pendulum-v1's reset distribution: angle in [-pi, pi], velocity in [-1, 1]."""
    return torch.as_tensor(np.stack([rng.uniform(-np.pi, np.pi, n), rng.uniform(-1, 1, n)], -1), dtype=torch.float32)


def train(method: str, iterations: int, num_envs: int, episode_len: int, seed: int, cfg: SAPOConfig) -> Agent:
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    forward = PendulumModel(WRONG if method == "wrong-model" else Physics())
    backward = PendulumModel(Physics() if method == "exact" else WRONG)
    agent = Agent(3, 1, cfg)
    optims = agent.optimizers()
    x = random_states(num_envs, rng)
    age = np.zeros(num_envs, dtype=np.int64)

    def step_world(action: torch.Tensor) -> torch.Tensor:
        nonlocal x
        x = forward.physics.step(x, action)
        return x

    for _ in range(iterations):
        loss, window, state, _ = imagine_window(
            agent, backward, None if method == "wrong-model" else step_world, reward, State(x), x, cfg.horizon
        )
        if actor_step(agent, optims["actor"], loss, loss) is None:
            raise RuntimeError("non-finite actor gradient on Pendulum: DMO-SAPO is broken")
        critic_update(agent, window, optims["critic"], rng)
        temperature_update(agent, window, optims["alpha"])
        x, age = state.x.detach(), age + cfg.horizon
        done = np.flatnonzero(age >= episode_len)
        if len(done):
            x = x.clone()
            x[torch.as_tensor(done)] = random_states(len(done), rng)
            age[done] = 0
    return agent


def run_pendulum(act: Callable[[np.ndarray, Any], np.ndarray] | None, episodes: int,
                 reset: Callable[[int], None] | None = None) -> list[float]:  # fmt: skip
    """Returns on gymnasium's Pendulum-v1 (seeds 10,000 + i) of ``act(obs, env) -> action in [-1, 1]`` (scaled to
    the torque); None acts uniformly at random. ``reset(i)`` is called before episode i."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + i)
        if reset is not None:
            reset(i)
        done, total = False, 0.0
        while not done:
            a = rng.uniform(-1, 1, size=1) if act is None else act(obs, env)
            obs, r, term, trunc, _ = env.step((2.0 * np.asarray(a)).astype(np.float32))
            total, done = total + float(r), term or trunc
        returns.append(total)
    env.close()
    return returns


def evaluate(agent: Agent | None, episodes: int, scale: float) -> list[float]:
    """The deterministic policy (the actor's mode) on the true state's features."""

    def act(obs: np.ndarray, env: Any) -> np.ndarray:
        with torch.no_grad():
            feats = features(*torch.as_tensor(obs, dtype=torch.float32)[:, None])
            return scale * agent.actor(feats).mode()[0].numpy()  # type: ignore[union-attr]

    return run_pendulum(None if agent is None else act, episodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["exact", "dmo", "wrong-model"])
    parser.add_argument("--iterations", type=int, default=300, help="windows of H steps")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--episode-len", type=int, default=200)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = replace(SAPOConfig(), horizon=args.horizon)
    steps = args.iterations * args.horizon * args.num_envs
    rows = [("random", 0, 0.0, evaluate(None, args.episodes, 1.0))]
    for method in args.methods:
        for seed in args.seeds:
            t0 = time.perf_counter()
            agent = train(method, args.iterations, args.num_envs, args.episode_len, seed, cfg)
            wall = time.perf_counter() - t0
            rows.append((f"{method} (seed {seed})", steps, wall, evaluate(agent, args.episodes, cfg.action_scale)))
    print("| method | training steps | wall s | eval return, mean +- std |")
    print("|---|---|---|---|")
    for name, n, wall, rets in rows:
        print(f"| {name} | {n:,} | {wall:.0f} | {np.mean(rets):.0f} +- {np.std(rets):.0f} |")


if __name__ == "__main__":
    main()
