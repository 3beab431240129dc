import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import tiny_world
from worldgrad.algos.dmo_sapo import SAPOConfig
from worldgrad.algos.ppo import AgentConfig, PPOConfig
from worldgrad.algos.train_policy import TrainPolicyConfig
from worldgrad.algos.train_ppo import TrainPPOConfig
from worldgrad.cli import parse
from worldgrad.eval.compare import (
    PRESETS,
    CompareConfig,
    compare,
    eval_curve,
    format_bptt_table,
    iterations_for,
    load_bptt_rows,
    run_config,
    train_time,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def _cfg(world, out, **kw) -> CompareConfig:
    # 4 samples per DMO window (H 2 x 2 envs), 8 per PPO rollout (4 steps x 2 envs)
    sapo = SAPOConfig(horizon=2, critic_iterations=1, critic_minibatches=1, actor_hidden=(8,), critic_hidden=(8,))
    ppo = TrainPPOConfig(agent=AgentConfig(channels=(4, 8), kernels=(4, 3), strides=(2, 1), cnn_hidden=16),
                         ppo=PPOConfig(num_steps=4, update_epochs=1, num_minibatches=2, norm_reward=True), num_envs=2,
                         max_episode_len=3)  # fmt: skip
    base = CompareConfig(wm=world["wm"], reward=world["reward"], local=world["local"], store=world["store"], out=out,
                         methods=("dmo_sapo", "ppo"), seeds=(0, 1), budget=16, eval_points=2, eval_episodes=1,
                         final_episodes=2, policy=TrainPolicyConfig(sapo=sapo, num_envs=2, max_episode_len=4),
                         ppo=ppo, pusht=world["pusht"], device="cpu")  # fmt: skip
    return replace(base, **kw)


def test_report_has_table_curves_and_cost_table_and_a_rerun_skips_finished_runs(world, tmp_path):
    bptt = tmp_path / "bptt.json"
    rows = [{"horizon": 4, "bptt_time_s": 3.0, "dmo_time_s": 0.5, "bptt_peak_mib": 900.0, "dmo_peak_mib": 100.0,
             "cosine": 0.42}]  # fmt: skip
    bptt.write_text(json.dumps({"device": "cpu", "batch": 8, "rows": rows}))
    cfg = _cfg(world, tmp_path / "cmp", level=0.0, bptt_json=bptt)
    res = compare(cfg, progress=False)

    runs = res["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("dmo_sapo", 0), ("dmo_sapo", 1), ("ppo", 0), ("ppo", 1)]
    assert all(r["samples"] == 16 and r["final"]["episodes"] == 2 and not r["skipped"] for r in runs)
    assert [r["iterations"] for r in runs] == [4, 4, 2, 2]
    for r in runs:  # DMO evaluates every 2 windows (8 samples), PPO every rollout (8 samples)
        curve = r["curves"]["mean_max_coverage"]
        assert [p["samples"] for p in curve] == [8, 16]
        assert 0 < curve[0]["time_s"] <= curve[1]["time_s"] <= r["train_time_s"]
        assert r["reached"]["samples"] == 8  # level 0: reached at the first evaluation
    assert res["methods"]["ppo"]["reached"] == 2 and res["methods"]["dmo_sapo"]["samples"] == 16

    report = (cfg.out / "report.md").read_text()
    assert "## Table I" in report and "| DMO-SAPO | 2 |" in report and "| PPO (global WM) | 2 |" in report
    assert "| 2/2 | 8 (8-8) |" in report and "| random (reference) | - | 0.0% |" in report
    assert "| 4 | 3.00 s | 0.50 s | 6.0x | 900 | 100 | 9.0x | 0.420 |" in report
    for png in ("curves_samples.png", "curves_time.png"):
        assert (cfg.out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report
    saved = json.loads((cfg.out / "results.json").read_text())
    assert len(saved["runs"]) == 4 and saved["bptt"]["rows"][0]["cosine"] == 0.42

    # a re-run with another level reuses every run: no training, no evaluation, same files
    files = [*cfg.out.glob("*/metrics.jsonl"), *cfg.out.glob("*/policy.safetensors"), cfg.out / "references.json"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = compare(replace(cfg, level=2.0, bptt_json=None), progress=False)
    assert len(files) == 9 and all(r["skipped"] for r in again["runs"])
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    assert [r["final"] for r in again["runs"]] == [r["final"] for r in runs]
    report = (cfg.out / "report.md").read_text()
    assert "| 0/2 | not reached | not reached |" in report and "BPTT" not in report

    # a larger budget resumes the finished runs instead of starting over
    more = compare(replace(cfg, methods=("ppo",), seeds=(0,), budget=24), progress=False)
    (r,) = more["runs"]
    assert not r["skipped"] and r["samples"] == 24 and r["iterations"] == 3
    assert [p["samples"] for p in r["curves"]["success_rate"]] == [8, 16, 24]


def test_budget_becomes_whole_iterations_of_each_method():
    tiny = PRESETS["tiny"]
    assert iterations_for(tiny, "dmo_sapo") == 8192 // (8 * 8) == iterations_for(tiny, "no_diffusion") == 128
    assert iterations_for(tiny, "ppo") == 8192 // (128 * 8) == 8
    for preset, dmo, ppo in (("cpu", 2000, 250), ("paper", 20_000, 2500)):
        assert (iterations_for(PRESETS[preset], "dmo_sapo"), iterations_for(PRESETS[preset], "ppo")) == (dmo, ppo)
    odd = replace(tiny, budget=1100, eval_points=4)
    dmo, nodiff, ppo = (run_config(odd, m, 3) for m in ("dmo_sapo", "no_diffusion", "ppo"))
    assert (dmo.iterations, dmo.eval_every, dmo.forward, dmo.seed, dmo.name) == (17, 5, "global", 3, "dmo_sapo-seed3")
    assert nodiff.forward == "local" and nodiff.local == odd.local and nodiff.runs == odd.out
    assert (ppo.iterations, ppo.eval_every, ppo.eval_episodes, ppo.wm) == (1, 1, odd.eval_episodes, odd.wm)
    with pytest.raises(ValueError, match="less than one ppo iteration"):
        iterations_for(replace(tiny, budget=1000), "ppo")
    with pytest.raises(ValueError, match="choose from"):
        replace(tiny, methods=("dmo_sapo", "bptt"))
    name, cfg = parse(["compare", "--preset", "cpu", "--seeds", "3", "4", "--methods", "ppo"])
    assert name == "compare" and (cfg.preset, cfg.budget, cfg.seeds, cfg.methods) == ("cpu", 512_000, (3, 4), ("ppo",))
    assert cfg.wm == Path("runs/pusht-cpu/wm/wm.safetensors") and cfg.ppo.num_envs == 16


def test_curves_keep_a_running_clock_across_a_resume(tmp_path):
    lines = [
        {"step": 1, "samples": 4, "time_s": 1.0},
        {"step": 2, "samples": 8, "time_s": 2.0},
        {"step": 2, "policy/real/success_rate": 0.5, "samples": 8},  # train-policy logs no time here
        {"step": 3, "samples": 12, "time_s": 0.5},  # resumed at 2: the clock restarted
        {"step": 4, "samples": 16, "time_s": 1.5},
        {"step": 4, "policy/real/success_rate": 1.0, "samples": 16},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    curve = eval_curve(path, "dmo_sapo", "success_rate")
    assert [(p["samples"], p["time_s"], p["value"]) for p in curve] == [(8, 2.0, 0.5), (16, 3.5, 1.0)]
    assert train_time(path) == 3.5 and eval_curve(path, "ppo", "success_rate") == []


def test_bptt_bench_writes_the_json_compare_reads(world, tmp_path):
    bench = Path(__file__).parents[1] / "bench" / "bptt_vs_dmo.py"
    out = subprocess.run([sys.executable, str(bench), "--wm", str(world["wm"]), "--local", str(world["local"]),
                          "--reward", str(world["reward"]), "--store", str(world["store"]), "--horizons", "1",
                          "--batch", "2", "--reps", "1", "--out", str(tmp_path), "--json", str(tmp_path / "b.json")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = load_bptt_rows(tmp_path / "b.json")
    assert [r["horizon"] for r in data["rows"]] == [1] and data["batch"] == 2
    assert data["rows"][0]["bptt_time_s"] > 0 and -1 <= data["rows"][0]["cosine"] <= 1
    assert format_bptt_table(data).count("\n") == 2


def test_missing_artifacts_name_the_command_that_makes_them(world, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"local model .* run `worldgrad pipeline --preset tiny` first"):
        compare(_cfg(world, tmp_path / "c", local=tmp_path / "none.safetensors"), progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(FileNotFoundError, match=r"bench/bptt_vs_dmo\.py"):
        compare(_cfg(world, tmp_path / "c", bptt_json=tmp_path / "none.json"), progress=False)
    env = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    out = subprocess.run([sys.executable, "-m", "worldgrad.cli", "compare", "--preset", "cpu", "--wm", str(tmp_path)
                          + "/missing"], capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "world model" in out.stderr and "worldgrad pipeline --preset cpu" in out.stderr
