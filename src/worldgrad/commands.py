"""The functions behind the simple CLI commands: run a stage, print a readable summary."""

from __future__ import annotations

import json

from worldgrad.algos.refit_head import RefitHeadConfig, refit_head
from worldgrad.algos.reward_labels import LabelRewardConfig, label_store
from worldgrad.algos.train_bc import TrainBCConfig, train_bc
from worldgrad.algos.train_local import TrainLocalConfig, train_local
from worldgrad.algos.train_policy import TrainPolicyConfig, train_policy_from_files
from worldgrad.algos.train_ppo import TrainPPOConfig, train_ppo_from_files
from worldgrad.algos.train_reward import TrainRewardConfig, train_reward
from worldgrad.algos.train_wm import TrainWMConfig, train_wm
from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.lerobot import ImportConfig, import_lerobot
from worldgrad.eval.harness import EvalConfig, evaluate, format_table
from worldgrad.eval.local import EvalLocalConfig, evaluate_local
from worldgrad.eval.reward import EvalRewardConfig, evaluate_reward
from worldgrad.eval.wm import EvalWMConfig, evaluate_wm


def format_collect_summary(s: dict[str, float]) -> str:
    if "cube_in_view" in s:  # Push Cube
        return (
            f"{int(s['episodes'])} episodes, {int(s['frames'])} frames in the store "
            f"({int(s['new_frames'])} new in {s['seconds']:.1f} s, {s['frames_per_s']:.0f} frames/s)\n"
            f"  cube in view in {s['cube_in_view']:.1%} of frames; cube moved in {s['cube_moved']:.1%} of steps; "
            f"within 1 m of the goal in {s['near_goal']:.1%}; in the goal in {s['success']:.2%}; "
            f"{s['respawns_per_1k']:.1f} cube put-backs per 1000 frames; intent on in {s['intent']:.1%}"
        )
    return (
        f"{int(s['episodes'])} episodes, {int(s['frames'])} frames in the store "
        f"({int(s['new_frames'])} new in {s['seconds']:.1f} s, {s['frames_per_s']:.0f} frames/s)\n"
        f"  T moved in {s['t_moved']:.1%} of steps; mean coverage {s['coverage_mean']:.3f}; "
        f"coverage > 0.5 (T near goal) in {s['near_goal']:.1%}; > 0.95 (success) in {s['success']:.2%}; "
        f"intent on in {s['intent']:.1%}"
    )


def run_collect(cfg: CollectConfig) -> dict[str, float]:
    summary = collect(cfg)
    (cfg.out / "collect_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"collected into {cfg.out}: {format_collect_summary(summary)}")  # noqa: T201
    return summary


def run_eval(cfg: EvalConfig) -> dict[str, dict[str, float]]:
    summaries = evaluate(cfg)
    print(format_table(summaries))  # noqa: T201
    print(f"results and videos in {cfg.out}")  # noqa: T201
    return summaries


def run_import_lerobot(cfg: ImportConfig) -> dict[str, float]:
    summary = import_lerobot(cfg)
    print(f"imported into {cfg.out}: {int(summary['new_frames'])} new frames, {int(summary['episodes'])} episodes")  # noqa: T201
    return summary


def _goal_image(path: object, size: int) -> object:
    """The goal the user shows: a PNG if given, else Push-T's goal rendered at ``size`` (agent at 8 spots)."""
    import cv2
    import numpy as np

    if path is not None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"goal image {path} cannot be read; pass a PNG or JPEG file")
        image = cv2.resize(image[..., ::-1], (size, size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image)[None]
    from worldgrad.envs.pusht import PushTConfig, render_goal_images

    return render_goal_images(PushTConfig(image_size=size))


def run_train_reward(cfg: TrainRewardConfig) -> dict[str, object]:
    result = train_reward(cfg, _goal_image(cfg.goal_image, cfg.model.image_size))
    print(f"reward model: {result['path']}; validation {result['val']}")  # noqa: T201
    return result


def run_label_reward(cfg: LabelRewardConfig) -> dict[str, int]:
    result = label_store(cfg)
    print(f"labelled {cfg.store}: {result['written']} episodes written, {result['skipped']} up to date")  # noqa: T201
    return result


def run_eval_reward(cfg: EvalRewardConfig) -> dict[str, object]:
    result = evaluate_reward(cfg)
    print(json.dumps(result, indent=2))  # noqa: T201
    print(f"scatter plot and video in {cfg.out}")  # noqa: T201
    return result


def run_train_wm(cfg: TrainWMConfig) -> dict[str, object]:
    result = train_wm(cfg)
    if result:  # rank 0 only under torchrun
        print(f"world model: {result['path']} ({result['params']:,} parameters); validation {result['val']}")  # noqa: T201
    return result


def run_eval_wm(cfg: EvalWMConfig) -> dict[str, object]:
    result = evaluate_wm(cfg)
    print(result["table"])  # noqa: T201
    print(f"table and strip in {cfg.out}")  # noqa: T201
    return result


def run_train_local(cfg: TrainLocalConfig) -> dict[str, object]:
    result = train_local(cfg)
    print(f"local model: {result['path']} ({result['params']:,} parameters); validation {result['val']}")  # noqa: T201
    return result


def run_eval_local(cfg: EvalLocalConfig) -> dict[str, object]:
    result = evaluate_local(cfg)
    print(result["table"])  # noqa: T201
    print(f"table and strip in {cfg.out}")  # noqa: T201
    return result


def run_refit_head(cfg: RefitHeadConfig) -> dict[str, object]:
    result = refit_head(cfg)
    val = {k: round(v, 3) for k, v in result["val"].items() if k != "step"}
    print(f"local model with the refit head: {result['path']} (step {result['kept_step']}); validation {val}")  # noqa: T201
    return result


def run_train_ppo(cfg: TrainPPOConfig) -> dict[str, object]:
    result = train_ppo_from_files(cfg)
    speed = f"{result['samples_per_s']:.1f} samples/s" if result["resumed_from"] < cfg.iterations else "already done"
    print(f"PPO policy: {result['policy']} after {result['samples']:,} samples ({speed}); "  # noqa: T201
          f"real system: {result['real']}")  # fmt: skip
    return result


def run_train_policy(cfg: TrainPolicyConfig) -> dict[str, object]:
    result = train_policy_from_files(cfg)
    print(f"policy: {result['policy']} after {result['samples']:,} samples; real system: {result['real']}")  # noqa: T201
    return result


def run_train_bc(cfg: TrainBCConfig) -> dict[str, object]:
    result = train_bc(cfg)
    print(f"ACT policy: {result['path']} ({result['params']:,} parameters, {result['steps']} steps in "  # noqa: T201
          f"{result['train_seconds'] / 60:.1f} min); validation {result['val']}")  # fmt: skip
    return result
