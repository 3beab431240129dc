"""Does the policy push when the agent is already at the T? A takeover check on the real Push-T.

The evaluation from a reset mixes two skills: reaching the T and pushing it the right way. Here the scripted
pusher (``--lead``; the explorer or random actions test whether a moving start is enough) plays U{8..40} steps
(``--lead-steps``) of an evaluation seed first (its frames and actions are filtered by the policy's
RSSM, as if the policy had been acting), then the policy acts for ``--steps`` steps. Printed per controller: the
coverage at the takeover and the mean gain after it (max and final minus at takeover), for the policy, uniform
random actions (full and half range: the policy's ``action_scale`` 0.5 box), zero actions, a constant upward
action (what a policy that ignores the image gets) and the pusher itself.
Reads the agent and RSSM the oracle bench saves at every evaluation (``OUT/agent_seed0.safetensors``,
``OUT/local_seed0.safetensors``); the simulator is used for evaluation only.

    OMP_NUM_THREADS=1 python bench/pusht_takeover_check.py --run runs/oracle \
        --local runs/pusht-cpu/local/local.safetensors
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from worldgrad.algos.dmo_sapo import Agent, SAPOConfig
from worldgrad.algos.train_local import load_local_model
from worldgrad.envs.pusht import PushTConfig, PushTEnv
from worldgrad.operators.pusht import make_operator
from worldgrad.policy import ImagePolicy

CONTROLLERS = ("policy", "random", "random-half", "zero", "up", "pusher")


def episode(
    env: PushTEnv, policy: ImagePolicy, kind: str, seed: int, steps: int, lead: str = "pusher",
    lead_steps: tuple[int, int] = (8, 40),
) -> tuple[float, float, float]:  # fmt: skip
    """(coverage at the takeover, max gain after it, final gain) for one evaluation seed."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    op = make_operator("pusher", env.config.max_step_px)
    op.reset(np.random.default_rng([seed, 1]))
    leader = op if lead == "pusher" else make_operator("explorer", env.config.max_step_px)
    leader.reset(np.random.default_rng([seed, 2]))
    policy.reset(seed)
    for _ in range(int(rng.integers(lead_steps[0], lead_steps[1] + 1))):
        policy.act(obs)  # the filter sees the frame; the leader's action is what happened
        if lead == "random":
            action = rng.uniform(-0.5, 0.5, 2).astype(np.float32)
        else:
            action = leader.act(env.operator_view())[0]
        policy._last = torch.as_tensor(action, dtype=torch.float32)[None]
        obs, _, _, _, info = env.step(action)
    start, cover = info["coverage"], []
    for _ in range(steps):
        if kind == "policy":
            action = policy.act(obs)
        elif kind.startswith("random"):
            action = rng.uniform(-1, 1, 2).astype(np.float32) * (0.5 if kind == "random-half" else 1.0)
        elif kind == "zero":
            action = np.zeros(2, np.float32)
        elif kind == "up":  # a constant push toward the top of the board: a policy that ignores the image
            action = np.array([0.0, -0.5], np.float32)
        else:
            action = op.act(env.operator_view())[0]
        obs, _, _, _, info = env.step(action)
        cover.append(info["coverage"])
    return start, max(cover) - start, cover[-1] - start


def load_policy(run: Path, base: Path, cfg: SAPOConfig, mean_posteriors: bool) -> ImagePolicy:
    local: Any = load_local_model(base)
    local.load_state_dict(load_file(run / "local_seed0.safetensors"))
    if mean_posteriors:  # as the oracle bench's --mean-posteriors trained it
        local.cfg = replace(local.cfg, filter_sample=False)
    agent = Agent(local.feature_dim, local.cfg.action_dim, cfg)
    agent.load_state_dict(load_file(run / "agent_seed0.safetensors"))
    return ImagePolicy.from_agent(local, agent, name=str(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="oracle bench --out folder")
    parser.add_argument("--local", type=Path, required=True, help="the RSSM that run started from (its config)")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=32, help="steps the controller acts after the takeover")
    parser.add_argument("--action-scale", type=float, default=0.5, help="the run's --action-scale")
    parser.add_argument("--mean-posteriors", action="store_true", help="the run's --mean-posteriors")
    parser.add_argument(
        "--lead",
        choices=("pusher", "explorer", "random"),
        default="pusher",
        help="who acts before the takeover (random: uniform in the half box; the pusher goes to the T)",
    )
    parser.add_argument("--lead-steps", type=int, nargs=2, default=(8, 40), help="U{LO..HI} steps before the takeover")
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    args = parser.parse_args()
    policy = load_policy(args.run, args.local, SAPOConfig(action_scale=args.action_scale), args.mean_posteriors)
    env = PushTEnv(PushTConfig(image_size=policy.local.cfg.image_size))
    print("| controller | coverage at takeover | max gain | final gain | episodes with max gain > 0.01 |")
    print("|---|---|---|---|---|")
    for kind in args.controllers:
        r = np.array([episode(env, policy, kind, 1_000_000 + k, args.steps, args.lead, tuple(args.lead_steps))
                      for k in range(args.episodes)])  # fmt: skip
        row = {"at_takeover": r[:, 0].mean(), "max_gain": r[:, 1].mean(), "final_gain": r[:, 2].mean(),
               "share": (r[:, 1] > 0.01).mean()}  # fmt: skip
        print(
            f"| {kind} | {row['at_takeover']:.3f} | {row['max_gain']:+.4f} | {row['final_gain']:+.4f} | "
            f"{row['share']:.2f} |",
            flush=True,
        )
    env.close()


if __name__ == "__main__":
    main()
