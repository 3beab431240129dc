"""The main job: every stage of the Push-T pipeline in one run folder, reusing finished stages.

Stages today: (1) record play data, (2) record held-out recordings with a different operator (for
world-model and reward validation), (3) evaluate the reference policies zero-shot. The learning stages
(global world model, reward model, local RSSM, DMO-SAPO) plug in here as they land.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from worldgrad.commands import format_collect_summary
from worldgrad.data.collect import CollectConfig, collect
from worldgrad.envs.pusht import PushTConfig
from worldgrad.eval.harness import EvalConfig, evaluate, format_table
from worldgrad.runtime.run import RunDir, save_json_atomic


@dataclass(frozen=True)
class PipelineConfig:
    """Run the Push-T pipeline end to end."""

    task: str = "pusht"
    """task to solve (pusht)"""
    preset: str = "tiny"
    """preset the defaults came from (recorded in the run folder)"""
    runs: Path = Path("runs")
    """parent folder of run folders"""
    name: str = "pusht-tiny"
    """run folder name; re-running with the same name resumes"""
    play_operator: str = "explorer:0.4,pusher:0.6"
    """operator mix recording the training play data"""
    play_frames: int = 3_000
    """play frames to record (the paper used 4 h = 72k frames at 5 Hz)"""
    heldout_operator: str = "explorer"
    """operator recording the held-out recordings (a different one tests generalization)"""
    heldout_frames: int = 1_000
    """held-out frames to record (seeds disjoint from the play data)"""
    episode_len: int = 500
    """frames per recorded episode"""
    workers: int = 2
    """parallel collector processes"""
    eval_episodes: int = 10
    """held-out evaluation episodes per policy"""
    eval_videos: int = 2
    """evaluation episodes saved as videos per policy"""
    pusht: PushTConfig = field(default_factory=PushTConfig)
    """the real system"""

    def __post_init__(self) -> None:
        if self.task != "pusht":
            raise ValueError(f"pipeline --task {self.task!r} is not available yet; use --task pusht")


PRESETS: dict[str, PipelineConfig] = {
    # Correctness in minutes on 2 CPU cores (CI).
    "tiny": PipelineConfig(),
    # The best result 2 cores reach, about two hours per stage.
    "cpu": PipelineConfig(
        preset="cpu", name="pusht-cpu", play_frames=72_000, heldout_frames=6_000, episode_len=1000,
        eval_episodes=50, eval_videos=4,
    ),
    # Sized like the paper (4 h of play at 5 Hz), for a GPU.
    "paper": PipelineConfig(
        preset="paper", name="pusht-paper", play_frames=72_000, heldout_frames=6_000, episode_len=1000,
        eval_episodes=100, eval_videos=4,
    ),
}  # fmt: skip

PLAY_SEED = 0
HELDOUT_SEED = 900_000


def _stage_done(run: RunDir, stage: str, spec: dict[str, Any]) -> bool:
    marker = run.path / "stages" / f"{stage}.json"
    return marker.exists() and json.loads(marker.read_text()).get("spec") == spec


def _mark_done(run: RunDir, stage: str, spec: dict[str, Any], result: Any) -> None:
    (run.path / "stages").mkdir(exist_ok=True)
    save_json_atomic(run.path / "stages" / f"{stage}.json", {"spec": spec, "result": result})


def _jsonable(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Runs (or resumes) every stage and writes ``report.md`` in the run folder."""
    run = RunDir.create(cfg.runs, cfg.name, cfg, resume=True)
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    collections = {
        "play": CollectConfig(
            out=run.path / "data" / "play", operator=cfg.play_operator, frames=cfg.play_frames,
            episode_len=cfg.episode_len, workers=cfg.workers, seed=PLAY_SEED, pusht=cfg.pusht,
        ),
        "heldout": CollectConfig(
            out=run.path / "data" / "heldout", operator=cfg.heldout_operator, frames=cfg.heldout_frames,
            episode_len=cfg.episode_len, workers=cfg.workers, seed=HELDOUT_SEED, pusht=cfg.pusht,
        ),
    }  # fmt: skip
    for stage, ccfg in collections.items():
        spec = _jsonable(ccfg)
        if _stage_done(run, f"collect_{stage}", spec):
            results[stage] = json.loads((run.path / "stages" / f"collect_{stage}.json").read_text())["result"]
            print(f"[pipeline] collect {stage}: done earlier, reused")  # noqa: T201
            continue
        print(f"[pipeline] collect {stage}: {ccfg.frames} frames with {ccfg.operator}")  # noqa: T201
        results[stage] = collect(ccfg)
        print(f"[pipeline]   {format_collect_summary(results[stage])}")  # noqa: T201
        _mark_done(run, f"collect_{stage}", spec, results[stage])

    ecfg = EvalConfig(
        policies=("random", "operator:explorer", "operator:pusher", "operator:expert"), episodes=cfg.eval_episodes,
        videos=cfg.eval_videos, out=run.path / "eval" / "reference", pusht=replace(cfg.pusht),
    )  # fmt: skip
    spec = _jsonable(ecfg)
    if _stage_done(run, "eval_reference", spec):
        results["eval"] = json.loads((run.path / "stages" / "eval_reference.json").read_text())["result"]
        print("[pipeline] eval reference policies: done earlier, reused")  # noqa: T201
    else:
        print(f"[pipeline] eval reference policies on {cfg.eval_episodes} held-out seeds")  # noqa: T201
        results["eval"] = evaluate(ecfg)
        _mark_done(run, "eval_reference", spec, results["eval"])

    report = write_report(run, cfg, results, time.perf_counter() - t_start)
    print(f"[pipeline] report: {report}")  # noqa: T201
    print(format_table(results["eval"]))  # noqa: T201
    return results


def write_report(run: RunDir, cfg: PipelineConfig, results: dict[str, Any], seconds: float) -> Path:
    """A markdown report of what ran and what it measured."""
    lines = [
        f"# worldgrad pipeline: {cfg.task}, preset `{cfg.preset}`",
        "",
        f"Run folder `{run.path}`; this invocation took {seconds:.0f} s (finished stages are reused).",
        "",
        "## Play data",
        "",
        f"- play (`{cfg.play_operator}`): {format_collect_summary(results['play'])}",
        f"- held-out (`{cfg.heldout_operator}`): {format_collect_summary(results['heldout'])}",
        "",
        "## Zero-shot evaluation of reference policies",
        "",
        f"{cfg.eval_episodes} held-out seeds, {cfg.pusht.max_episode_steps} steps at {cfg.pusht.control_hz} Hz. "
        "Operators read the screen state like a human teleoperator; they are references, not learned policies.",
        "",
        format_table(results["eval"]),
        "",
        "## Stages not implemented yet",
        "",
        "Global world model, reward model, local RSSM and DMO-SAPO policy optimization are not part of this "
        "pipeline yet; no learned-policy result exists.",
        "",
    ]
    path = run.path / "report.md"
    path.write_text("\n".join(lines))
    return path
