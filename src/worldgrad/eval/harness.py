"""Zero-shot evaluation on the real system over a fixed list of held-out seeds.

Seeds are ``EVAL_SEED_START + i``: the same list for every policy and every run, disjoint from the
collection seeds by construction. Metrics per episode: success (coverage ever > 0.95), final coverage,
max coverage, steps to success.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldgrad.data.collect import EVAL_SEED_START, PUSHT_SIM_KEYS, CollectConfig, store_meta
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.envs.pushcube import PushCubeConfig
from worldgrad.envs.pusht import PushTConfig, PushTEnv
from worldgrad.eval.policies import Policy, make_policy
from worldgrad.eval.video import annotate, write_video


@dataclass(frozen=True)
class EvalConfig:
    """Evaluate policies zero-shot on the real system."""

    policies: tuple[str, ...] = ("random", "operator:explorer", "operator:pusher", "operator:expert")
    """policy specs: random, operator:NAME, checkpoint:PATH (a trained policy.safetensors), sampled:PATH (a
    train-policy policy acting with samples of its action distribution instead of its mode)"""
    env: str = "pusht"
    """real system to evaluate on: pusht or pushcube"""
    episodes: int = 50
    """episodes per policy, on seeds EVAL_SEED_START + 0 .. episodes - 1"""
    videos: int = 3
    """episodes per policy saved as mp4"""
    out: Path = Path("runs/eval")
    """folder for results.json, results.md and videos"""
    pusht: PushTConfig = field(default_factory=PushTConfig)
    """Push-T settings (the evaluation protocol: 150 steps at 5 Hz, stop on success)"""
    pushcube: PushCubeConfig = field(default_factory=PushCubeConfig)
    """Push Cube settings (300 steps at 5 Hz, stop on success; --pushcube.controller picks the low-level loop)"""
    record: bool = False
    """also write each policy's episodes (frames, actions) into an episode store, OUT/episodes/POLICY, so that
    `worldgrad eval-wm --store` measures the world model under that policy's own actions (Push-T only)"""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError("eval: --episodes must be >= 1")
        if self.env not in ("pusht", "pushcube"):
            raise ValueError(f"unknown env {self.env!r}; choose one of: pusht, pushcube")
        if self.record and self.env != "pusht":
            raise ValueError("eval: --record is available for --env pusht only")


def eval_seeds(n: int) -> list[int]:
    """The fixed evaluation seed list (never used for collection)."""
    return [EVAL_SEED_START + i for i in range(n)]


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool
    final_coverage: float
    max_coverage: float
    steps: int
    steps_to_success: int | None


@dataclass
class Trace:
    """What an evaluation episode saw and did, in the episode store's layout (frame t, then action t)."""

    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    sim: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, obs: np.ndarray, action: np.ndarray, info: dict[str, Any]) -> None:
        self.frames.append(obs)
        self.actions.append(np.clip(np.asarray(action, np.float32), -1.0, 1.0))  # what the env executes
        for k in PUSHT_SIM_KEYS:  # the ground truth collection keeps (for evaluation only)
            self.sim.setdefault(k, []).append(np.asarray(info[k], np.float32))


def run_episode(
    env: PushTEnv, policy: Policy, seed: int, record: bool = False, trace: Trace | None = None
) -> tuple[EpisodeResult, list[np.ndarray]]:
    """Runs one evaluation episode; returns its result and (if ``record``) annotated frames; ``trace`` (if
    given) receives every observation with the action taken on it."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    coverages = [info["coverage"]]
    frames = [annotate(obs, f"t=0 cov={info['coverage']:.2f}")] if record else []
    success_at = None
    for t in range(1, env.config.max_episode_steps + 1):
        action = policy.act(obs)
        if trace is not None:
            trace.add(obs, action, info)
        obs, _, terminated, truncated, info = env.step(action)
        coverages.append(info["coverage"])
        if info["is_success"] and success_at is None:
            success_at = t
        if record:
            frames.append(annotate(obs, f"t={t} cov={info['coverage']:.2f}" + (" SUCCESS" if success_at else "")))
        if terminated or truncated:
            break
    result = EpisodeResult(
        seed=seed,
        success=success_at is not None,
        final_coverage=float(coverages[-1]),
        max_coverage=float(max(coverages)),
        steps=len(coverages) - 1,
        steps_to_success=success_at,
    )
    return result, frames


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (sound at 0 and n successes)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(results: Sequence[EpisodeResult]) -> dict[str, float]:
    n = len(results)
    wins = sum(r.success for r in results)
    lo, hi = wilson_interval(wins, n)
    return {
        "episodes": n,
        "success_rate": wins / n,
        "success_ci_low": lo,
        "success_ci_high": hi,
        "mean_final_coverage": float(np.mean([r.final_coverage for r in results])),
        "mean_max_coverage": float(np.mean([r.max_coverage for r in results])),
    }


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a - b over paired episodes (the same seeds) and its standard error (nan for fewer than 2 pairs).

    Pairing removes the seeds' own spread (where the T starts decides much of an episode's coverage), so a small
    lead over random shows in a few hundred seeds instead of thousands."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"a paired difference needs as many episodes on each side, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def evaluate_policy(
    make: Callable[[PushTEnv], Policy],
    cfg: EvalConfig,
    progress: bool = True,
    on_episode: Callable[[EpisodeResult, Trace], None] | None = None,
) -> tuple[dict[str, float], list[EpisodeResult]]:
    """Evaluates one policy on ``cfg.episodes`` held-out seeds, saving ``cfg.videos`` videos; ``on_episode`` gets
    every episode's result and trace (with the simulator's ground truth, for evaluation-only metrics)."""
    env = PushTEnv(replace(cfg.pusht, terminate_on_success=True))
    policy = make(env)
    name = policy.name.replace(":", "_").replace("/", "_")
    store = _episode_store(cfg, name) if cfg.record else None
    results = []
    for i, seed in enumerate(tqdm(eval_seeds(cfg.episodes), desc=f"eval {policy.name}", disable=not progress)):
        trace = Trace() if store is not None or on_episode is not None else None
        result, frames = run_episode(env, policy, seed, record=i < cfg.videos, trace=trace)
        results.append(result)
        if on_episode is not None and trace is not None:
            on_episode(result, trace)
        if frames:
            write_video(cfg.out / "videos" / f"{name}_seed{seed}.mp4", frames, fps=env.config.control_hz)
        if store is not None and trace is not None:
            sim = {k: np.stack(v) for k, v in trace.sim.items()}
            info = {"seed": seed, "operator": policy.name, "env": "pusht", "evaluation": True}
            store.append(f"s{seed:09d}", np.stack(trace.frames), np.stack(trace.actions), info=info, sim=sim)
    env.close()
    return summarize(results), results


def _episode_store(cfg: EvalConfig, name: str) -> EpisodeStore:
    """A new store for one policy's recorded evaluation episodes; an existing one is never appended to."""
    path = cfg.out / "episodes" / name
    if path.exists():
        raise StoreError(f"{path} exists from an earlier --record run; remove it or pick another --out")
    return EpisodeStore.create(path, store_meta(CollectConfig(env="pusht", pusht=cfg.pusht)))


def format_table(summaries: dict[str, dict[str, float]]) -> str:
    """A markdown table of the summaries, one row per policy."""
    if any("mean_straightness" in s for s in summaries.values()):  # Push Cube: trajectory metrics
        from worldgrad.eval.trajectory import format_cube_table

        return format_cube_table(summaries)
    paired = any(VS_RANDOM in s for s in summaries.values())
    lines = [
        "| policy | episodes | success rate (95% CI) | mean final coverage | mean max coverage |"
        + (" max coverage vs random (paired, +- s.e.) |" if paired else ""),
        "|---|---|---|---|---|" + ("---|" if paired else ""),
    ]
    for name, s in summaries.items():
        ci = f"{s['success_ci_low']:.0%}-{s['success_ci_high']:.0%}"
        vs = f" {s[VS_RANDOM]:+.4f} +- {s[VS_RANDOM + '_se']:.4f} |" if VS_RANDOM in s else " |"
        lines.append(
            f"| {name} | {s['episodes']} | {s['success_rate']:.1%} ({ci})"
            f" | {s['mean_final_coverage']:.3f} | {s['mean_max_coverage']:.3f} |" + (vs if paired else "")
        )
    return "\n".join(lines)


VS_RANDOM = "max_coverage_vs_random"
"""summary key: the mean per-seed difference in max coverage to the random policy on the same seeds"""


def with_vs_random(
    summary: dict[str, float], max_coverages: Sequence[float], random: Sequence[float]
) -> dict[str, float]:
    """``summary`` plus its paired difference to random's max coverages (``VS_RANDOM`` and ``VS_RANDOM_se``)."""
    d, se = paired_difference(max_coverages, random)
    return {**summary, VS_RANDOM: d, VS_RANDOM + "_se": se}


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict[str, dict[str, float]]:
    """Evaluates every policy of ``cfg`` and writes results.json and results.md to ``cfg.out``."""
    if cfg.env == "pushcube":
        from worldgrad.eval.trajectory import evaluate_cube  # it imports this module

        return evaluate_cube(cfg, progress)
    cfg.out.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, float]] = {}
    per_episode: dict[str, list[dict[str, object]]] = {}
    for spec in cfg.policies:
        summary, results = evaluate_policy(lambda env, spec=spec: make_policy(spec, env), cfg, progress)
        summaries[spec] = summary
        per_episode[spec] = [asdict(r) for r in results]
    if "random" in per_episode:  # each other policy's paired lead over random, on the same seeds
        base = [e["max_coverage"] for e in per_episode["random"]]
        for spec in summaries.keys() - {"random"}:
            summaries[spec] = with_vs_random(summaries[spec], [e["max_coverage"] for e in per_episode[spec]], base)
    record = {
        "protocol": {
            "env": cfg.env,
            "seeds": f"{EVAL_SEED_START}..{EVAL_SEED_START + cfg.episodes - 1}",
            "max_episode_steps": cfg.pusht.max_episode_steps,
            "control_hz": cfg.pusht.control_hz,
            "image_size": cfg.pusht.image_size,
            "success": "coverage > 0.95 at any step",
        },
        "summary": summaries,
        "episodes": per_episode,
    }
    (cfg.out / "results.json").write_text(json.dumps(record, indent=2))
    (cfg.out / "results.md").write_text(format_table(summaries) + "\n")
    return summaries
