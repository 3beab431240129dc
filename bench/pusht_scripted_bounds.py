"""What does beating random on Push-T's mean max coverage take? Scripted state-based controllers on the held-out
evaluation seeds (the simulator's state is read here: an evaluation-only study, no training reads it).

Each controller moves the agent with a drift of magnitude ``gain`` toward a target plus uniform noise of amplitude
``noise``, the sum clipped to the action box ``[-box, box]^2`` (a policy's ``action_scale``):

- ``t``: toward the T's centre of gravity (it keeps pushing through the T once there);
- ``center`` / ``goal``: toward the board's centre / the goal pose's centre of gravity (a place, not the T: what a
  policy gets whose reward pays for the agent's place instead of its relation to the T);
- ``random``: no drift (``gain`` 0).

Printed: mean max coverage, mean final coverage and the share of steps with the agent within 5 px of the T.

    OMP_NUM_THREADS=1 python bench/pusht_scripted_bounds.py --episodes 20
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from worldgrad.envs.pusht import GOAL_POSE, PushTConfig, PushTEnv
from worldgrad.eval.harness import eval_seeds
from worldgrad.operators.pusht import CONTACT_PX, agent_t_gaps, cog_world


@dataclass(frozen=True)
class Controller:
    target: str  # t | center | goal | random
    gain: float
    noise: float
    box: float

    def __str__(self) -> str:
        return f"{self.target} gain {self.gain} noise {self.noise} box {self.box}"


def act(c: Controller, env: PushTEnv, rng: np.random.Generator) -> np.ndarray:
    target = {"t": lambda: cog_world(env.block_pose), "center": lambda: np.array([256.0, 256.0]),
              "goal": lambda: cog_world(np.array(GOAL_POSE)), "random": lambda: env.agent_pos}[c.target]()  # fmt: skip
    v = target - env.agent_pos
    dist = float(np.linalg.norm(v))
    # a place: slow down within one full step of it; the T: keep pushing through it
    slow = 1.0 if c.target == "t" else min(1.0, dist / 50.0)
    drift = c.gain * slow * v / max(dist, 1e-6)
    return np.clip(drift + c.noise * rng.uniform(-1.0, 1.0, 2), -c.box, c.box)


def run(c: Controller, episodes: int, seed: int) -> dict[str, float]:
    env, rng = PushTEnv(PushTConfig()), np.random.default_rng(seed)
    best, final, contact = [], [], []
    for s in eval_seeds(episodes):
        _, info = env.reset(seed=s)
        cover, agent, block = [info["coverage"]], [], []
        for _ in range(env.config.max_episode_steps):
            agent.append(env.agent_pos)
            block.append(env.block_pose)
            _, _, terminated, truncated, info = env.step(act(c, env, rng))
            cover.append(info["coverage"])
            if terminated or truncated:
                break
        best.append(max(cover))
        final.append(cover[-1])
        contact.append(float(np.mean(agent_t_gaps(np.array(agent), np.array(block)) < CONTACT_PX)))
    return {"max": float(np.mean(best)), "final": float(np.mean(final)), "contact": float(np.mean(contact))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    controllers = [Controller("random", 0.0, 1.0, 1.0), Controller("random", 0.0, 0.5, 0.5)]
    controllers += [Controller("t", g, n, b) for b in (1.0, 0.5) for g, n in ((0.3, b), (0.5, b), (1.0, b), (b, 0.0))]
    controllers += [Controller(t, 0.5, 1.0, 1.0) for t in ("center", "goal")]
    print(f"{'controller':<40} {'mean max cov':>12} {'mean final':>10} {'contact':>8}")
    for c in controllers:
        r = run(c, args.episodes, args.seed)
        print(f"{c!s:<40} {r['max']:>12.3f} {r['final']:>10.3f} {r['contact']:>8.1%}", flush=True)


if __name__ == "__main__":
    main()
