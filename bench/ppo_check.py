"""Validates the PPO of ``worldgrad.algos.ppo`` on standard gymnasium tasks before trusting it inside the world model.

Trains from scratch on each task for a fixed step budget (one thread), then runs the deterministic policy
(the mean action, as deployed) on 10 fresh episodes. Prints a markdown table: task, steps, wall time, final
mean return of the last training episodes and of the deterministic evaluation, the solved threshold, solved
(evaluation mean >= threshold).

    OMP_NUM_THREADS=1 python bench/ppo_check.py                      # CartPole-v1 and InvertedPendulum-v5
    OMP_NUM_THREADS=1 python bench/ppo_check.py --tasks Pendulum-v1  # the fallback continuous task

Settings are CleanRL's (ppo.py for CartPole, ppo_continuous_action.py for the continuous tasks, with reward
scaling done inside the runner so the reported returns stay raw).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from worldgrad.algos.ppo import AgentConfig, PPOConfig, PPORunner, make_agent


@dataclass(frozen=True)
class Task:
    steps: int
    num_envs: int
    threshold: float
    ppo: PPOConfig
    agent: AgentConfig = field(default_factory=AgentConfig)


CONTINUOUS = PPOConfig(num_steps=2048, update_epochs=10, num_minibatches=32, norm_reward=True)
CARTPOLE = PPOConfig(num_steps=128, lr=2.5e-4, update_epochs=4, num_minibatches=4, ent_coef=0.01)
PENDULUM = PPOConfig(num_steps=512, update_epochs=10, num_minibatches=32, norm_reward=True, gamma=0.9)
TASKS = {
    "CartPole-v1": Task(300_000, 4, 475.0, CARTPOLE),
    "InvertedPendulum-v5": Task(150_000, 1, 950.0, CONTINUOUS),
    "Pendulum-v1": Task(300_000, 4, -250.0, PENDULUM),
}


def evaluate(name: str, agent: torch.nn.Module, episodes: int = 10) -> float:
    env = gym.make(name)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + i)
        done, total = False, 0.0
        while not done:
            action = agent.act(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()  # type: ignore[operator]
            obs, r, term, trunc, _ = env.step(action)
            total, done = total + float(r), term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run(name: str, task: Task, seed: int, steps: int | None = None) -> dict[str, object]:
    torch.manual_seed(seed)
    env = gym.make_vec(name, num_envs=task.num_envs, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})  # fmt: skip
    agent = make_agent(env.single_observation_space, env.single_action_space, task.agent)
    runner = PPORunner(env, agent, task.ppo, seed=seed)
    batch = task.ppo.num_steps * task.num_envs
    iterations = max(1, (steps or task.steps) // batch)
    recent: list[float] = []
    t0 = time.perf_counter()
    for it in range(iterations):
        stats = runner.iteration(it, iterations)
        if "episode_return" in stats:
            recent = [*recent, stats["episode_return"]][-5:]
    wall = time.perf_counter() - t0
    env.close()
    ret = evaluate(name, agent)
    return {"task": name, "seed": seed, "steps": iterations * batch, "wall_s": wall,
            "train_return": float(np.mean(recent)), "eval_return": ret, "threshold": task.threshold,
            "solved": ret >= task.threshold}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["CartPole-v1", "InvertedPendulum-v5"], choices=sorted(TASKS))
    p.add_argument("--steps", type=int, default=None, help="environment steps per task (default: the task's budget)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.tasks:
        for seed in args.seeds:
            rows.append(run(name, TASKS[name], seed, args.steps))
            r = rows[-1]
            print(f"{name}: eval {r['eval_return']:.1f} after {r['steps']} steps, {r['wall_s']:.0f} s", flush=True)
    lines = [
        "| task | seed | steps | wall time | final train return | eval return (10 ep, mean action) | solved at | solved |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        solved = "yes" if r["solved"] else "no"
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['steps']:,} | {r['wall_s']:.0f} s | {r['train_return']:.1f} | "
            f"{r['eval_return']:.1f} | >= {r['threshold']:g} | {solved} |"
        )
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
