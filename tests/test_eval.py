import json

import numpy as np
import pytest

from worldgrad.data.collect import EVAL_SEED_START
from worldgrad.envs.pusht import GOAL_POSE, PushTConfig, PushTEnv
from worldgrad.eval.harness import (
    VS_RANDOM,
    EvalConfig,
    eval_seeds,
    evaluate,
    evaluate_policy,
    format_table,
    paired_difference,
    run_episode,
    wilson_interval,
    with_vs_random,
)
from worldgrad.eval.policies import make_policy


class StillPolicy:
    name = "still"

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(2, np.float32)


def test_eval_seeds_are_fixed_and_outside_collection_range():
    assert eval_seeds(3) == [EVAL_SEED_START, EVAL_SEED_START + 1, EVAL_SEED_START + 2]


def test_episode_metrics_and_success_detection():
    env = PushTEnv(PushTConfig(max_episode_steps=4))
    result, frames = run_episode(env, StillPolicy(), seed=EVAL_SEED_START, record=True)
    assert result.steps == 4 and not result.success and len(frames) == 5
    assert result.max_coverage >= result.final_coverage >= 0.0

    class AtGoal(PushTEnv):
        def reset(self, *, seed=None, options=None):
            return super().reset(seed=seed, options={"block_pose": GOAL_POSE, "agent_pos": (256.0, 440.0)})

    result, _ = run_episode(AtGoal(PushTConfig(max_episode_steps=4)), StillPolicy(), seed=1)
    assert result.success and result.steps_to_success == 1 and result.steps == 1


def test_summary_and_wilson_interval():
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and 0.05 < hi < 0.09
    lo, hi = wilson_interval(25, 50)
    assert lo < 0.5 < hi
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_paired_difference_to_random_and_its_table_column():
    d, se = paired_difference([0.3, 0.1, 0.2], [0.1, 0.1, 0.1])
    assert d == pytest.approx(0.1) and se == pytest.approx(0.1 / np.sqrt(3))  # diffs 0.2, 0, 0.1: std 0.1
    assert np.isnan(paired_difference([0.5], [0.1])[1])
    with pytest.raises(ValueError, match="as many episodes"):
        paired_difference([0.1, 0.2], [0.1])
    base = {"episodes": 3, "success_rate": 0.0, "success_ci_low": 0.0, "success_ci_high": 0.5,
            "mean_final_coverage": 0.1, "mean_max_coverage": 0.2}  # fmt: skip
    row = with_vs_random(base, [0.3, 0.1, 0.2], [0.1, 0.1, 0.1])
    assert row[VS_RANDOM] == pytest.approx(0.1) and VS_RANDOM not in base
    table = format_table({"p": row, "random": base})
    assert "vs random (paired" in table.splitlines()[0] and "| +0.1000 +- 0.0577 |" in table
    assert table.splitlines()[-1].endswith("| 0.200 | |")  # random itself: an empty cell
    assert "vs random" not in format_table({"random": base})


def test_evaluate_writes_results_and_videos(tmp_path):
    cfg = EvalConfig(policies=("random", "operator:explorer"), episodes=2, videos=1, out=tmp_path,
                     pusht=PushTConfig(max_episode_steps=5))  # fmt: skip
    summaries = evaluate(cfg, progress=False)
    assert set(summaries) == {"random", "operator:explorer"}
    record = json.loads((tmp_path / "results.json").read_text())
    assert len(record["episodes"]["random"]) == 2 and record["summary"]["random"]["episodes"] == 2
    assert "| random | 2 |" in (tmp_path / "results.md").read_text()
    maxes = {k: [e["max_coverage"] for e in v] for k, v in record["episodes"].items()}  # paired on the same seeds
    lead = np.mean(maxes["operator:explorer"]) - np.mean(maxes["random"])
    assert summaries["operator:explorer"][VS_RANDOM] == pytest.approx(lead) and VS_RANDOM not in summaries["random"]
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == [f"operator_explorer_seed{EVAL_SEED_START}.mp4", f"random_seed{EVAL_SEED_START}.mp4"]
    assert all((tmp_path / "videos" / v).stat().st_size > 1000 for v in videos)
    # same seeds, same policy: same numbers
    again = evaluate(cfg, progress=False)
    assert again == summaries


def test_evaluate_policy_hands_every_episode_trace_to_on_episode(tmp_path):
    cfg = EvalConfig(episodes=2, videos=0, out=tmp_path, pusht=PushTConfig(max_episode_steps=5))
    seen = []
    summary, results = evaluate_policy(lambda env: StillPolicy(), cfg, progress=False,
                                       on_episode=lambda result, trace: seen.append((result, trace)))  # fmt: skip
    assert [r for r, _ in seen] == results and summary["episodes"] == 2
    for result, trace in seen:
        assert len(trace.frames) == result.steps == 5
        assert np.asarray(trace.sim["agent_pos"]).shape == (5, 2)
        assert np.asarray(trace.sim["block_pose"]).shape == (5, 3)
    assert not (tmp_path / "episodes").exists()  # a trace for the caller is not a recording


def test_recorded_evaluation_episodes_replay_exactly_and_are_never_appended_to(tmp_path):
    from worldgrad.data.store import EpisodeStore, StoreError

    cfg = EvalConfig(policies=("operator:pusher",), episodes=2, videos=0, out=tmp_path, record=True,
                     pusht=PushTConfig(max_episode_steps=12))  # fmt: skip
    evaluate(cfg, progress=False)
    store = EpisodeStore.open(tmp_path / "episodes" / "operator_pusher")
    assert store.keys() == [f"s{s:09d}" for s in eval_seeds(2)]
    ep = store.episode(store.keys()[1])
    assert ep.frames.shape == (12, 64, 64, 3) and ep.actions.shape == (12, 2)
    # frame t is what the policy saw when it chose action t: replaying the actions reproduces the frames
    env = PushTEnv(PushTConfig(max_episode_steps=12))
    obs, _ = env.reset(seed=eval_seeds(2)[1])
    for t in range(12):
        np.testing.assert_array_equal(obs, ep.frames[t])
        obs, *_ = env.step(ep.actions[t])
    with pytest.raises(StoreError, match="exists from an earlier --record run"):
        evaluate(cfg, progress=False)
    assert len(EpisodeStore.open(tmp_path / "episodes" / "operator_pusher")) == 2


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        make_policy("greedy", PushTEnv())


def test_learning_curves_plot_against_samples(tmp_path):
    from worldgrad.eval.curves import plot_curves, series
    from worldgrad.runtime.metrics import MetricsLogger

    with MetricsLogger(tmp_path / "run", tensorboard=False) as log:
        for i in range(5):
            log.log(i, {"policy/reward": i * 0.5, "samples": i * 32})
        log.log(5, {"policy/reward": float("nan"), "samples": 160})
    xs, ys = series(tmp_path / "run" / "metrics.jsonl", "policy/reward")
    assert xs.tolist() == [0, 32, 64, 96, 128] and ys.tolist() == [0, 0.5, 1.0, 1.5, 2.0]  # the null is dropped
    out = plot_curves({"dmo": tmp_path / "run" / "metrics.jsonl"}, ["policy/reward"], "samples", tmp_path / "c.png")
    assert out.stat().st_size > 1000
