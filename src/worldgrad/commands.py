"""The functions behind the simple CLI commands: run a stage, print a readable summary."""

from __future__ import annotations

import json

from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.lerobot import ImportConfig, import_lerobot
from worldgrad.eval.harness import EvalConfig, evaluate, format_table


def format_collect_summary(s: dict[str, float]) -> str:
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
