"""Trajectory metrics of a mobile base and the Push Cube evaluation built on them.

- steps to success: first step at which the cube is in the goal (None if never);
- straightness index: straight-line displacement of the base / the length of its path (1 = a straight
  line; near 0 = wandering back and forth);
- curvature: total absolute change of heading per metre travelled (rad/m; 0 for a straight line, 1/R on
  a circle of radius R driven facing along it). Turning on the spot makes it large, as it should.

The paper reports ACT on its quadruped at 0 % success, straightness 0.447 and curvature 0.588 rad/m.
The metrics read the simulator's base pose from ``info``: evaluation only, never training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from worldgrad.eval.harness import EvalConfig, eval_seeds, wilson_interval
from worldgrad.eval.policies import Policy, make_policy
from worldgrad.eval.video import annotate, write_video

MIN_PATH_M = 1e-3  # below this the base did not move: straightness and curvature are undefined (NaN)


@dataclass(frozen=True)
class PathMetrics:
    path_length: float
    """metres the base travelled (sum of step lengths)"""
    displacement: float
    """straight-line distance from the first to the last position (m)"""
    straightness: float
    """displacement / path length, in [0, 1]; NaN if the base did not move"""
    curvature: float
    """total |heading change| / path length (rad/m); NaN if the base did not move"""


def path_metrics(poses: np.ndarray) -> PathMetrics:
    """Metrics of a base path given as (T, 3) poses: x, y (m) and heading (rad, any unwrapping)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != 3 or len(poses) < 1:
        raise ValueError(f"path_metrics takes (T, 3) poses [x, y, yaw] with T >= 1, got shape {poses.shape}")
    steps = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1)
    length = float(steps.sum())
    displacement = float(np.linalg.norm(poses[-1, :2] - poses[0, :2]))
    turned = float(np.abs((np.diff(poses[:, 2]) + np.pi) % (2 * np.pi) - np.pi).sum())
    if length < MIN_PATH_M:
        return PathMetrics(length, displacement, math.nan, math.nan)
    return PathMetrics(length, displacement, min(1.0, displacement / length), turned / length)


def steps_to_success(success: Sequence[bool]) -> int | None:
    """The first step whose flag is set: ``success[t]`` is the flag after t steps (``success[0]``: at reset)."""
    hits = np.flatnonzero(np.asarray(success, dtype=bool))
    return int(hits[0]) if len(hits) else None


# -- Push Cube evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CubeEpisodeResult:
    seed: int
    success: bool
    steps: int
    steps_to_success: int | None
    final_distance: float
    """cube centre to goal centre at the end (m)"""
    min_distance: float
    path_length: float
    straightness: float
    curvature: float
    cube_in_view: float
    """fraction of frames with the cube in the onboard camera's view"""


def run_cube_episode(env: Any, policy: Policy, seed: int, record: bool = False) -> tuple[CubeEpisodeResult, list]:
    """One Push Cube episode; with ``record``, frames of the onboard camera beside the top-down view."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    poses, success, dist, seen = [info["base_pose"]], [info["is_success"]], [info["distance_to_goal"]], []
    frames = [_video_frame(env, obs, "t=0")] if record else []
    for t in range(1, env.config.max_episode_steps + 1):
        seen.append(info["cube_in_view"])
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        poses.append(info["base_pose"])
        success.append(info["is_success"])
        dist.append(info["distance_to_goal"])
        if record:
            frames.append(_video_frame(env, obs, f"t={t} d={dist[-1]:.2f}m" + (" SUCCESS" if any(success) else "")))
        if terminated or truncated:
            break
    m = path_metrics(np.stack(poses))
    result = CubeEpisodeResult(
        seed=seed,
        success=bool(any(success)),
        steps=len(poses) - 1,
        steps_to_success=steps_to_success(success),
        final_distance=float(dist[-1]),
        min_distance=float(min(dist)),
        path_length=m.path_length,
        straightness=m.straightness,
        curvature=m.curvature,
        cube_in_view=float(np.mean(seen)) if seen else 0.0,
    )
    return result, frames


def _video_frame(env: Any, obs: np.ndarray, text: str) -> np.ndarray:
    """The onboard image (upscaled, captioned) beside the top-down view at the same height."""
    scale = max(1, env.config.topdown_size // obs.shape[0])
    ego = annotate(obs, text, scale=scale)
    top = env.render_topdown()
    top = cv2.resize(top, (ego.shape[0] - 22, ego.shape[0] - 22), interpolation=cv2.INTER_AREA)
    return np.concatenate([ego, annotate(top, "top-down (evaluation only)", scale=1)], axis=1)


def _nanmean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def summarize_cube(results: Sequence[CubeEpisodeResult]) -> dict[str, Any]:
    n = len(results)
    wins = sum(r.success for r in results)
    lo, hi = wilson_interval(wins, n)
    return {
        "episodes": n,
        "success_rate": wins / n,
        "success_ci_low": lo,
        "success_ci_high": hi,
        "mean_steps_to_success": _nanmean([r.steps_to_success for r in results]),
        "mean_steps": float(np.mean([r.steps for r in results])),
        "mean_straightness": _nanmean([r.straightness for r in results]),
        "mean_curvature": _nanmean([r.curvature for r in results]),
        "mean_final_distance": float(np.mean([r.final_distance for r in results])),
        "mean_cube_in_view": float(np.mean([r.cube_in_view for r in results])),
    }


def format_cube_table(summaries: dict[str, dict[str, Any]]) -> str:
    """A markdown table of Push Cube summaries, one row per policy."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        "| policy | episodes | success rate (95% CI) | steps to success | straightness | curvature (rad/m) "
        "| final cube-goal distance (m) | cube in view |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        ci = f"{s['success_ci_low']:.0%}-{s['success_ci_high']:.0%}"
        lines.append(
            f"| {name} | {s['episodes']} | {s['success_rate']:.1%} ({ci}) | {num(s['mean_steps_to_success'], '.1f')}"
            f" | {num(s['mean_straightness'], '.3f')} | {num(s['mean_curvature'], '.3f')}"
            f" | {s['mean_final_distance']:.2f} | {s['mean_cube_in_view']:.1%} |"
        )
    return "\n".join(lines)


def evaluate_cube(cfg: EvalConfig, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluates every policy of ``cfg`` on Push Cube; writes results.json, results.md and videos."""
    from worldgrad.envs.pushcube import PushCubeEnv

    cfg.out.mkdir(parents=True, exist_ok=True)
    env = PushCubeEnv(replace(cfg.pushcube, terminate_on_success=True, respawn_cube_after=0))
    summaries: dict[str, dict[str, Any]] = {}
    per_episode: dict[str, list[dict[str, Any]]] = {}
    try:
        for spec in cfg.policies:
            policy = make_policy(spec, env)
            results = []
            for i, seed in enumerate(tqdm(eval_seeds(cfg.episodes), desc=f"eval {spec}", disable=not progress)):
                result, frames = run_cube_episode(env, policy, seed, record=i < cfg.videos)
                results.append(result)
                if frames:
                    name = spec.replace(":", "_").replace("/", "_")
                    write_video(cfg.out / "videos" / f"{name}_seed{seed}.mp4", frames, fps=env.config.control_hz)
            summaries[spec] = summarize_cube(results)
            per_episode[spec] = [asdict(r) for r in results]
    finally:
        env.close()
    p = cfg.pushcube
    record = {
        "protocol": {
            "env": "pushcube",
            "seeds": f"{eval_seeds(1)[0]}..{eval_seeds(cfg.episodes)[-1]}",
            "max_episode_steps": p.max_episode_steps,
            "control_hz": p.control_hz,
            "controller": p.controller,
            "image_size": p.image_size,
            "success": "the whole cube past the goal line between the posts, at any step",
        },
        "summary": summaries,
        "episodes": per_episode,
    }
    # NaN is not JSON: undefined metrics (a base that never moved) are written as null.
    text = json.dumps(record, indent=2).replace("NaN", "null")
    (cfg.out / "results.json").write_text(text)
    (cfg.out / "results.md").write_text(format_cube_table(summaries) + "\n")
    return summaries
