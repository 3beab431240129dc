"""DMO-SAPO on Push-T with the simulator as a perfect global world model: is the world model the bottleneck?

``train-policy`` takes its forward frames from the diffusion world model. This diagnostic swaps in the real
system: B gym-pusht simulators, restarted on training seeds, render the forward frames the learned models see.
Everything else is the pipeline's: the learned ranking reward scores the frames (s_start = the episode's first
frame, as in ``train-policy``), the pipeline's RSSM filters them and supplies the Jacobians (and is fine-tuned on
the windows, as in ``train-policy``), and the same ``imagine_window`` / actor / critic / temperature updates run.
The policy is then evaluated zero-shot on the held-out seeds like any other.

- It beats random here but not in the world model: the world model (its response to the actor's actions) is the
  bottleneck.
- It fails here too: the reward model, the RSSM's features and Jacobians, or the optimizer's budget are.

``--reward coverage`` gives the values from the simulator's coverage instead (the gradients still come from the
RSSM's reward head), which separates the learned reward from the rest; ``--reward head`` from the RSSM's reward
head on the forward latents (filtered on the simulator's frames), so that a shaped head (``label-reward --contact``)
shapes the values as well as the gradients. ``--play-starts N`` starts episodes from a random moment of scripted
play (as ``train-policy`` starts from play contexts) instead of the reset. Every
evaluation also reports what the reward head and the critic pay for the agent's place with the T held still
(``head_*`` / ``critic_*``: ``agent_position_effect``'s range, agent-on-goal gain and T-to-goal gain), the two
gradients the actor follows (``*_near_t``: the gain of the agent near the T, the cue a pusher needs).
``--critic-windows``, ``--no-value-gradient`` and ``--play-values`` test remedies for the critic's.
``--phase2 L`` gives a two-phase objective (a reach head until the object first moves, read from the frames,
then ``L``'s head); ``--init-actor`` continues another run's actor under this run's head.
This is a bench, not a training method: it resets and reads the simulator, which ``train-policy`` never does.

    OMP_NUM_THREADS=1 python bench/pusht_oracle_check.py --run runs/pusht-cpu --out runs/oracle
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from worldgrad.algos.dmo_sapo import (
    Agent,
    SAPOConfig,
    Window,
    actor_step,
    bc_loss,
    critic_update,
    imagine_window,
    map_state,
    merge_windows,
    temperature_update,
    with_play_values,
)
from worldgrad.algos.reward_labels import LabelRewardConfig
from worldgrad.algos.train_local import LocalFinetuner, load_local_model
from worldgrad.algos.train_policy import Demonstrations, MotionReward, PlayValues, pretrain_actor, pretrain_critic
from worldgrad.algos.train_reward import load_goal_reward
from worldgrad.data.store import EpisodeStore
from worldgrad.envs.pusht import PushTConfig, PushTEnv
from worldgrad.eval.harness import EvalConfig, Trace, evaluate_policy
from worldgrad.eval.local import feature_scorer
from worldgrad.eval.policies import make_policy
from worldgrad.eval.reward import agent_position_effect
from worldgrad.models.image import changed_pixels
from worldgrad.models.rssm import twohot_mean
from worldgrad.operators.pusht import CONTACT_PX, agent_t_gaps, make_operator
from worldgrad.policy import ImagePolicy
from worldgrad.runtime.seeding import seed_everything

OBJECT_MOVED_PIXELS = LabelRewardConfig.contact_pixels  # changed pixels between frames: the object moved


def standardized_coverage(coverage: np.ndarray) -> np.ndarray:
    """Coverage on the learned reward's scale (play coverage is ~0.2 +- 0.25)."""
    return (coverage - 0.2) / 0.25


class SimEnvs:
    """B Push-T simulators stepped together; frames uint8 (B, H, W, 3) as a world model would return them.

    ``warmup > 0`` starts every episode like ``train-policy`` starts its imagined ones, from a random moment of
    play: a scripted operator (the ``cpu`` collection mix) acts for U{0..warmup} steps after the reset, and the
    last ``context`` frames with their actions are returned for the local model to filter.
    """

    def __init__(self, n: int, cfg: PushTConfig, seed: int, warmup: int = 0, context: int = 4) -> None:
        cfg = replace(cfg, terminate_on_success=False, max_episode_steps=10**9)
        self.envs = [PushTEnv(cfg) for _ in range(n)]
        self.rng = np.random.default_rng(seed)
        self.coverage = np.zeros(n)
        self.warmup, self.context = warmup, context
        self.operators = {name: make_operator(name, cfg.max_step_px) for name in ("explorer", "pusher")}

    def reset(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Restarts ``ids``; returns their last frames (n, context, H, W, 3) and the actions between them."""
        frames, actions = [], []
        for i in ids:  # training seeds stay below the evaluation range (>= 1,000,000)
            env = self.envs[i]
            obs, info = env.reset(seed=int(self.rng.integers(1_000_000)))
            seen, done = [obs], []
            operator = self.operators["explorer" if self.rng.random() < 0.4 else "pusher"]
            operator.reset(self.rng)
            for _ in range(int(self.rng.integers(self.warmup + 1)) if self.warmup else 0):
                action = operator.act(env.operator_view())[0]
                obs, _, _, _, info = env.step(action)
                seen, done = [*seen[-self.context + 1 :], obs], [*done[-self.context + 2 :], action]
            seen = [seen[0]] * (self.context - len(seen)) + seen  # short histories repeat their first frame
            done = [np.zeros(2, np.float32)] * (self.context - 1 - len(done)) + done
            frames.append(np.stack(seen))
            actions.append(np.stack(done).astype(np.float32))
            self.coverage[i] = info["coverage"]
        return torch.as_tensor(np.stack(frames)), torch.as_tensor(np.stack(actions))

    def step(self, actions: torch.Tensor) -> torch.Tensor:
        frames = []
        for i, (env, a) in enumerate(zip(self.envs, actions.cpu().numpy(), strict=True)):
            obs, _, _, _, info = env.step(a)
            frames.append(obs)
            self.coverage[i] = info["coverage"]
        return torch.as_tensor(np.stack(frames))


def agent_checks(local: Any, agent: Agent, poses: int = 4) -> dict[str, float]:
    """What the reward head and the critic pay for the agent's place with the T held still, against moving the
    T onto the goal (``agent_position_effect``'s grid): the actor follows both gradients."""
    out = {}
    for name, head in (("head", local.reward), ("critic", lambda f: agent.critic(f).mean(0))):
        _, effect = agent_position_effect(feature_scorer(local, head), poses, image_size=local.cfg.image_size)
        out |= {f"{name}_agent_range": effect["agent_range"], f"{name}_on_goal": effect["agent_on_goal_gain"],
                f"{name}_near_t": effect["agent_near_t_gain"], f"{name}_t_gain": effect["t_to_goal_gain"]}  # fmt: skip
    return out


def evaluate_with_reach(make: Any, cfg: EvalConfig) -> dict[str, Any]:
    """The harness's zero-shot summary plus how close the agent gets to the T (read from the simulator, for this
    evaluation only): ``reach_min_px`` the mean over episodes of the smallest agent-to-T distance (edge to edge),
    ``reach_gain_px`` how much closer than at the start that is, ``contact_frac`` the share of steps within 5 px,
    ``wall_frac`` the share of steps with the agent within 30 px of a board edge (where a world model that never saw
    it resting there makes the T move: ``bench/motion_exploit_check.py``); and ``max_coverages``, every episode's
    max coverage."""
    dists, walls = [], []

    def on_episode(_: Any, trace: Trace) -> None:
        agent = np.asarray(trace.sim["agent_pos"])
        dists.append(agent_t_gaps(agent, np.asarray(trace.sim["block_pose"])))
        walls.append(np.minimum(agent, 512 - agent).min(-1) < 30)

    summary, results = evaluate_policy(make, cfg, progress=False, on_episode=on_episode)
    reach = {"reach_min_px": float(np.mean([d.min() for d in dists])),
             "reach_gain_px": float(np.mean([d[0] - d.min() for d in dists])),
             "contact_frac": float(np.mean([np.mean(d < CONTACT_PX) for d in dists])),
             "wall_frac": float(np.mean([w.mean() for w in walls]))}  # fmt: skip
    # per seed, in the harness's seed order: a paired comparison with random on the same seeds
    per_seed = {"max_coverages": [round(float(r.max_coverage), 5) for r in results]}
    return {k: float(v) for k, v in summary.items()} | reach | per_seed


def ensemble_reward(local: Any, path: Path, weight: float) -> Any:
    """The reward head replaced by an ensemble's mean minus ``weight`` times its std (MOPO-style pessimism: where
    the heads disagree the play data did not go, and the actor should not either)."""
    params = load_file(path)
    heads = []
    for k in sorted({int(key.split(".")[0]) for key in params}):
        head = copy.deepcopy(local.reward_head)
        head.load_state_dict({key.split(".", 1)[1]: v for key, v in params.items() if key.split(".")[0] == str(k)})
        heads.append(head.requires_grad_(False))

    def reward(features: torch.Tensor) -> torch.Tensor:
        preds = torch.stack([twohot_mean(head(features), local.bins) for head in heads])
        return preds.mean(0) - weight * preds.std(0)

    return reward


def train(args: argparse.Namespace, local: Any, reward: Any, evaluate: Any) -> tuple[list[dict[str, float]], Agent]:
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    sim = SimEnvs(args.num_envs, PushTConfig(image_size=local.cfg.image_size), args.seed, warmup=args.play_starts)
    cfg = replace(
        SAPOConfig(),
        action_scale=args.action_scale,
        horizon=args.horizon,
        target_entropy_scale=args.target_entropy_scale,
        gamma=args.gamma,
        progress_reward=args.progress_reward,
        value_gradient=not args.no_value_gradient,
        play_values=args.play_values,
        play_value_pretrain=args.critic_pretrain,
        bc_weight=args.bc_weight,
        bc_pretrain=args.bc_pretrain,
    )
    agent = Agent(local.feature_dim, 2, cfg)
    if args.init is not None:  # continue a stopped run from its last evaluation (fresh optimizers)
        agent.load_state_dict(load_file(args.init / f"agent_seed{args.seed}.safetensors"))
        local.load_state_dict(load_file(args.init / f"local_seed{args.seed}.safetensors"))
    if args.init_actor is not None:  # a curriculum: the actor of another run, under this run's head and a fresh critic
        actor = {k: v for k, v in load_file(args.init_actor / f"agent_seed{args.seed}.safetensors").items()
                 if k.startswith("actor.")}  # fmt: skip
        agent.load_state_dict(actor, strict=False)
    optims = agent.optimizers()
    finetune = None
    if args.finetune_every > 0:
        finetune = LocalFinetuner(local, lr=1e-4, seed=args.seed, lookahead=args.lookahead,
                                  lookahead_weight=args.lookahead_weight,
                                  fit_reward=not args.no_finetune_reward)  # fmt: skip
    demos = None
    if args.bc_weight > 0 or args.bc_pretrain > 0:  # the behaviour prior, as train-policy's --sapo.bc-*
        demos = Demonstrations(EpisodeStore.open(args.store or args.run / "data" / "play"), local, cfg,
                               torch.device("cpu"))  # fmt: skip
        if args.bc_pretrain > 0 and args.init is None:
            first, last = pretrain_actor(agent, demos, optims["actor"], args.bc_pretrain, rng)
            real = evaluate(agent, "oracle-bc")  # the cloned policy alone
            print(json.dumps({"windows": 0, "bc_pretrain_loss": [first, last], **real}))
        demos = demos if args.bc_weight > 0 else None
    play = None
    if args.play_values > 0:
        store = EpisodeStore.open(args.store or args.run / "data" / "play")
        play = PlayValues(store, local, args.label, cfg, torch.device("cpu"))
        if args.critic_pretrain > 0:
            first, last = pretrain_critic(agent, play, optims["critic"], args.critic_pretrain, rng)
            print(json.dumps({"windows": 0, "critic_pretrain_loss": [first, last], **agent_checks(local, agent)}))
    b = args.num_envs
    size = local.cfg.image_size
    state, frame, start = local.initial_state(b), torch.zeros(b, size, size, 3, dtype=torch.uint8), None
    age = np.zeros(b, dtype=np.int64)
    object_moved = torch.zeros(b, dtype=torch.bool)
    phases = {"active": False, "prev": frame, "moved_now": torch.zeros(b, dtype=torch.bool)}
    if args.phase2 is not None:  # reach first, then push: the second head once the object has moved
        first_head = local.reward
        second_head = load_local_model(args.phase2).reward_head.requires_grad_(False)

        def two_phase(features: torch.Tensor) -> torch.Tensor:
            if not phases["active"]:  # the agent checks score other batches
                return first_head(features)
            second = twohot_mean(second_head(features), local.bins)
            return torch.where(object_moved.clone(), second, first_head(features))  # clone: the mask changes in place

        local.reward = two_phase

    def restart(ids: np.ndarray) -> None:
        nonlocal state, frame, start
        if len(ids) == 0:
            return
        history, acts = sim.reset(ids)
        frame, start = frame.clone(), (frame.clone() if start is None else start.clone())
        frame[torch.as_tensor(ids)] = history[:, -1]
        start[torch.as_tensor(ids)] = history[:, -1]
        with torch.no_grad():  # the context filtered from the blank state (one frame: as a deployed ImagePolicy)
            fresh, frames = local.initial_state(b), frame.unsqueeze(1).repeat(1, history.shape[1], 1, 1, 1)
            prev = torch.zeros(b, history.shape[1] - 1, 2)
            frames[torch.as_tensor(ids)], prev[torch.as_tensor(ids)] = history, acts
            first = 0 if args.play_starts else history.shape[1] - 1
            for k in range(first, history.shape[1]):
                act = torch.zeros(b, 2) if k == first else prev[:, k - 1]
                fresh = local.observe_step(fresh, act, local.encode(frames[:, k]))
        keep = torch.ones(b, dtype=torch.bool)
        keep[torch.as_tensor(ids)] = False
        state = map_state(lambda s, f: torch.where(keep.view(-1, *[1] * (s.ndim - 1)), s, f), state, fresh)
        age[ids] = 0
        object_moved[torch.as_tensor(ids)] = False

    head_state = state  # --reward head: the forward latent, filtered on the simulator's frames as the window goes

    def step_world(actions: torch.Tensor) -> torch.Tensor:
        nonlocal head_state
        frames = sim.step(actions)
        if args.phase2 is not None or args.reward == "motion":  # read from the frames
            moved_now = torch.as_tensor(changed_pixels(phases["prev"].numpy(), frames.numpy()) >= OBJECT_MOVED_PIXELS)
            object_moved.logical_or_(moved_now)  # the two-phase objective's switch
            phases["prev"], phases["moved_now"] = frames, moved_now
        if args.reward == "head":
            with torch.no_grad():
                head_state = local.observe_step(head_state, actions, local.encode(frames))
        return frames

    def reward_fn(f: torch.Tensor) -> torch.Tensor:
        out = values(f) if motion is None else motion(f)
        if args.progress_weight > 0:  # the ranking reward's change since the last frame: pushes toward the goal
            rank = reward(f, start).float()
            out, phases["rank"] = out + args.progress_weight * (rank - phases["rank"]), rank
        return out

    def values(f: torch.Tensor) -> torch.Tensor:
        if args.reward == "coverage":
            return torch.as_tensor(standardized_coverage(sim.coverage), dtype=torch.float32)
        if args.reward == "motion":
            return phases["moved_now"].float()
        if args.reward == "head":
            with torch.no_grad():
                return local.reward(local.features(head_state)).float()
        return reward(f, start).float()

    # --motion-weight: train-policy's --motion-reward, the same code
    motion = MotionReward(values, args.motion_weight, OBJECT_MOVED_PIXELS) if args.motion_weight > 0 else None
    restart(np.arange(b))
    rows, t0, samples, skipped = [], time.perf_counter(), 0, 0
    if args.iterations == 0 and args.init is not None:  # evaluate a saved run as it is, e.g. on more seeds
        rows.append({"windows": 0, **evaluate(agent, "oracle-init")})
        print(json.dumps(rows[-1]))
    cover, rets, moved = [], [], []
    recent: deque[Window] = deque(maxlen=args.critic_windows)
    bar = tqdm(range(args.iterations), desc=f"oracle {args.reward}")
    for it in bar:
        before = sim.coverage.copy()
        head_state, phases["prev"], phases["active"] = state, frame, True
        if motion is not None:
            motion.start(frame)
        if args.progress_weight > 0:
            phases["rank"] = reward(frame, start).float()
        loss, window, state, frame = imagine_window(agent, local, step_world, reward_fn, state, frame, cfg.horizon)
        phases["active"] = False
        actor_loss = loss if demos is None else loss + cfg.bc_weight * bc_loss(agent, *demos.sample(rng))
        if actor_step(agent, optims["actor"], actor_loss, loss) is None:  # non-finite: skipped, counted in the rows
            skipped += 1
            restart(np.arange(b))
            continue
        recent.append(window)  # the critic regresses on the last --critic-windows windows (1: SAPO's)
        batch = merge_windows(list(recent))
        critic_update(agent, batch if play is None else with_play_values(batch, *play.sample(rng)), optims["critic"],
                      rng)  # fmt: skip
        temperature_update(agent, window, optims["alpha"])
        if finetune is not None and (it + 1) % args.finetune_every == 0:
            finetune(window.frames.transpose(0, 1), window.actions.transpose(0, 1),
                     window.global_rewards.transpose(0, 1))  # fmt: skip
        samples += cfg.horizon * b
        age += cfg.horizon
        cover.append(sim.coverage.mean())
        moved.append(float(np.mean(np.abs(sim.coverage - before) > 1e-3)))  # T moved over the goal (a lower bound)
        rets.append(float(window.global_rewards.mean()))
        restart(np.flatnonzero(age >= args.episode_len))
        bar.set_postfix(
            cov=f"{np.mean(cover[-20:]):.3f}",
            moved=f"{np.mean(moved[-20:]):.2f}",
            r=f"{np.mean(rets[-20:]):.2f}",
            skipped=skipped,
        )
        if (it + 1) % args.eval_every == 0 or it + 1 == args.iterations:
            real = evaluate(agent, f"oracle-{it + 1}")
            args.out.mkdir(parents=True, exist_ok=True)  # the latest agent and RSSM, for checks of a stopped run
            save_file(agent.state_dict(), args.out / f"agent_seed{args.seed}.safetensors")
            save_file(local.state_dict(), args.out / f"local_seed{args.seed}.safetensors")
            real.update(agent_checks(local, agent))
            row = {"windows": it + 1, "samples": samples, "time_s": time.perf_counter() - t0,
                   "train_coverage": float(np.mean(cover[-50:])), "train_reward": float(np.mean(rets[-50:])),
                   "train_coverage_changed": float(np.mean(moved[-50:])), "skipped_windows": skipped,
                   "entropy": float(window.entropy.mean()), "alpha": agent.log_alpha.exp().item(), **real}  # fmt: skip
            rows.append(row)
            print(json.dumps(row))
    return rows, agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/pusht-cpu"), help="pipeline run folder")
    parser.add_argument("--local", type=Path, default=None, help="RSSM (default RUN/local/local.safetensors)")
    parser.add_argument("--reward-model", type=Path, default=None, help="default RUN/reward/reward.safetensors")
    parser.add_argument("--out", type=Path, default=Path("runs/oracle"))
    parser.add_argument("--reward", choices=("learned", "coverage", "head", "motion"), default="learned",
                        help="the values: the ranking reward, true coverage, the RSSM's reward head on the forward "
                        "latents (its gradient and its values agree, e.g. with a --contact head), or 1 where the "
                        "object moved into the frame (>= 40 changed pixels, read from the frames)")  # fmt: skip
    parser.add_argument("--motion-weight", type=float, default=0.0,
                        help="added where the object moved into the frame (train-policy --motion-reward)")  # fmt: skip
    parser.add_argument("--progress-weight", type=float, default=0.0,
                        help="times the learned reward's change from the last frame, added to the values")  # fmt: skip
    parser.add_argument("--iterations", type=int, default=2000,
                        help="windows of H steps (0 with --init: evaluate that run, e.g. on more seeds)")  # fmt: skip
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--episode-len", type=int, default=64)
    parser.add_argument("--action-scale", type=float, default=0.5)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--init", type=Path, default=None,
                        help="start from the agent and RSSM a previous run saved here (its --out)")  # fmt: skip
    parser.add_argument("--init-actor", type=Path, default=None,
                        help="start from the actor a previous run saved here (its --out), with this run's RSSM "
                             "and head and a fresh critic: e.g. a reach head first, then a pushing one")  # fmt: skip
    parser.add_argument("--phase2", type=Path, default=None,
                        help="local.safetensors of the same RSSM with another reward head (e.g. refit_reward_head.py "
                             "output) whose head replaces --local's in an environment once its object has moved this "
                             "episode (>= 40 changed pixels between frames, read from the frames): a two-phase "
                             "objective, reach first, then push")  # fmt: skip
    parser.add_argument("--gamma", type=float, default=SAPOConfig.gamma, help="discount of the return and values")
    parser.add_argument("--progress-reward", action="store_true", help="SAPOConfig.progress_reward")
    parser.add_argument("--mean-posteriors", action="store_true",
                        help="filter with the posteriors' class probabilities instead of samples (the forward "
                             "latents, the restarts and the deployed policy)")  # fmt: skip
    parser.add_argument("--target-entropy-scale", type=float, default=0.5, help="target entropy = -scale * 2")
    parser.add_argument("--finetune-every", type=int, default=4, help="windows per RSSM fine-tuning step (0: never)")
    parser.add_argument("--no-finetune-reward", action="store_true",
                        help="fine-tuning leaves the reward head alone (e.g. label-reward --contact)")  # fmt: skip
    parser.add_argument("--lookahead", type=int, default=0,
                        help="reward head fine-tuned on lookahead labels (as its store label)")  # fmt: skip
    parser.add_argument("--lookahead-weight", type=float, default=1.0)
    parser.add_argument("--play-starts", type=int, default=0,
                        help="start episodes after U{0..N} steps of a scripted operator (as train-policy starts "
                             "from play contexts); 0: from the reset")  # fmt: skip
    parser.add_argument("--critic-windows", type=int, default=1,
                        help="the critic regresses on the last N windows (1: the latest only, as SAPO)")  # fmt: skip
    parser.add_argument("--play-values", type=int, default=0,
                        help="play windows of the store in every critic update (SAPOConfig.play_values)")  # fmt: skip
    parser.add_argument("--critic-pretrain", type=int, default=0,
                        help="critic updates on play windows alone before training (needs --play-values)")  # fmt: skip
    parser.add_argument("--store", type=Path, default=None, help="play store (default RUN/data/play)")
    parser.add_argument("--label", default="reward", help="the store's reward label for --play-values")
    parser.add_argument("--no-value-gradient", action="store_true",
                        help="actor gradient from the window's rewards alone, not through the critic")  # fmt: skip
    parser.add_argument("--bc-weight", type=float, default=0.0, help="behaviour prior (SAPOConfig.bc_weight)")
    parser.add_argument("--bc-pretrain", type=int, default=0, help="behaviour-cloning steps before RL (bc_pretrain)")
    parser.add_argument("--head-ensemble", type=Path, default=None,
                        help="reward heads of `refit_reward_head.py --ensemble` (OUT.heads.safetensors): the "
                             "head becomes their mean minus --uncertainty-weight times their std")  # fmt: skip
    parser.add_argument("--uncertainty-weight", type=float, default=1.0)
    parser.add_argument("--eval-sample", action="store_true",
                        help="also evaluate the stochastic policy (sample_* figures)")  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.critic_pretrain > 0 and args.play_values <= 0:
        parser.error("--critic-pretrain needs play windows to learn from: pass --play-values N")
    torch.set_num_threads(args.threads)
    local = load_local_model(args.local or args.run / "local" / "local.safetensors")
    if args.mean_posteriors:  # every filter call (training, restarts, ImagePolicy) uses the means
        local.cfg = replace(local.cfg, filter_sample=False)
    if args.head_ensemble is not None:
        local.reward = ensemble_reward(local, args.head_ensemble, args.uncertainty_weight)
    reward = load_goal_reward(args.reward_model or args.run / "reward" / "reward.safetensors")
    pusht = PushTConfig(image_size=local.cfg.image_size)

    def evaluate(agent: Agent, name: str) -> dict[str, Any]:
        policy = ImagePolicy.from_agent(local, agent, name=name)
        cfg = EvalConfig(episodes=args.episodes, videos=2, out=args.out / "eval" / name, pusht=pusht)
        out = evaluate_with_reach(lambda env: policy, cfg)
        if args.eval_sample:  # the stochastic policy too, on the same seeds
            policy = ImagePolicy.from_agent(local, agent, name=f"{name}-sample", deterministic=False)
            cfg = EvalConfig(episodes=args.episodes, videos=2, out=args.out / "eval" / f"{name}-sample", pusht=pusht)
            out |= {f"sample_{k}": v for k, v in evaluate_with_reach(lambda env: policy, cfg).items()}
        return out

    random_cfg = EvalConfig(episodes=args.episodes, videos=0, out=args.out / "eval" / "random", pusht=pusht)
    reference = evaluate_with_reach(lambda env: make_policy("random", env), random_cfg)
    print(json.dumps({"random": reference}))

    def evaluate_paired(agent: Agent, name: str) -> dict[str, Any]:
        """Adds the mean per-seed difference in max coverage to random's on the same seeds, and its standard error."""
        out = evaluate(agent, name)
        for prefix in ("", "sample_"):
            if f"{prefix}max_coverages" in out and len(reference["max_coverages"]) > 1:
                diff = np.subtract(out[f"{prefix}max_coverages"], reference["max_coverages"])
                out[f"{prefix}vs_random"] = float(diff.mean())
                out[f"{prefix}vs_random_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        return out

    rows, _ = train(args, local, reward, evaluate_paired)
    args.out.mkdir(parents=True, exist_ok=True)  # the agent and RSSM were saved at the last evaluation
    (args.out / f"oracle_{args.reward}_seed{args.seed}.json").write_text(json.dumps({"rows": rows, "random": reference},
                                                                                  default=str, indent=1))  # fmt: skip
    print(f"random: {reference}")


if __name__ == "__main__":
    main()
