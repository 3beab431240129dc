import json
from dataclasses import replace

import pytest

from worldgrad.algos.dmo_sapo import SAPOConfig
from worldgrad.algos.train_local import TrainLocalConfig
from worldgrad.algos.train_policy import TrainPolicyConfig
from worldgrad.algos.train_reward import TrainRewardConfig
from worldgrad.algos.train_wm import TrainWMConfig
from worldgrad.envs.pusht import PushTConfig
from worldgrad.models.rssm import RSSMConfig
from worldgrad.pipeline import HeadConfig, PipelineConfig, run_pipeline


def test_pipeline_runs_end_to_end_and_reuses_finished_stages(tmp_path, capsys):
    cfg = PipelineConfig(
        runs=tmp_path, name="t", play_frames=120, heldout_frames=120, episode_len=60, workers=1,
        eval_episodes=2, eval_videos=1, pusht=PushTConfig(image_size=32, max_episode_steps=10),
        reward=replace(TrainRewardConfig(), steps=4, eval_every=2, batch_size=8, norm_frames=256, max_window=20),
        wm=replace(TrainWMConfig(), steps=4, eval_every=2, batch_size=4, strip_horizon=3), wm_eval_rollouts=2,
        wm_eval_horizon=10,
        local=replace(TrainLocalConfig(), steps=2, eval_every=2, batch_size=2, seq_len=8,
                      model=RSSMConfig(cnn_depth=4, deter=16, hidden=16, stoch=3, classes=4)),
        policy=replace(TrainPolicyConfig(), iterations=2, eval_every=2, eval_episodes=0, num_envs=2,
                       sapo=SAPOConfig(horizon=2, critic_iterations=1, critic_minibatches=1, actor_hidden=(8,),
                                       critic_hidden=(8,))),
    )  # fmt: skip
    first = run_pipeline(cfg)
    run = tmp_path / "t"
    assert json.loads((run / "config.json").read_text())["play_frames"] == 120
    report = (run / "report.md").read_text()
    assert "| random | 2 |" in report and "## Reward model" in report
    assert len(list((run / "data" / "play" / "episodes").iterdir())) == 2
    assert (run / "reward" / "reward.safetensors").exists()
    assert (run / "wm" / "wm.safetensors").exists() and (run / "wm" / "eval" / "strip.png").exists()
    assert "## Global world model" in report and "| 10 |" in report and "## Local world model (RSSM)" in report
    assert "| dmo-sapo (learned, images only) | 2 |" in report and (run / "policy_curves_samples.png").exists()
    # the verdict: the policy's per-seed max coverage paired with random's on the same seeds
    assert "vs random (paired" in report and "Against random on the same 2 seeds: mean max coverage" in report
    pol, rnd = first["policy_eval"]["max_coverages"], first["eval"]["random"]["max_coverages"]
    assert len(pol) == len(rnd) == 2 and f"{(pol[0] + pol[1] - rnd[0] - rnd[1]) / 2:+.4f} +- " in report
    # where the time goes: every stage, the training ones by their own clock
    assert "## Where the time goes" in report and "| train_wm | " in report and "| eval_reference | " in report
    assert "| train_policy | " in report.split("| train_wm | ")[1] and "its training clock, over all resumes" in report
    assert (run / "policy" / "policy.safetensors").exists()
    assert all(
        "reward" in [p.stem for p in (ep / "labels").glob("*.npy")]
        for ep in (run / "data" / "play" / "episodes").iterdir()
    )
    capsys.readouterr()
    second = run_pipeline(cfg)
    out = capsys.readouterr().out
    assert out.count("done earlier, reused") == 12
    assert second["eval"] == first["eval"]
    # the recorded data pins the run folder; learning settings may change (their stages rerun)
    with pytest.raises(ValueError, match="play_frames"):
        run_pipeline(replace(cfg, play_frames=240))
    # a retrained reward invalidates the stages that consume it, not the others
    run_pipeline(replace(cfg, reward=replace(cfg.reward, steps=6)))
    out = capsys.readouterr().out
    assert "train_reward: 6 steps" in out and "label_reward: reward of every play frame" in out
    assert "eval_reward: vs true coverage" in out and out.count("done earlier, reused") == 5
    # a shaping label for the local reward head: labelled, refit, and the policy (only) trains again with it
    shaped = replace(cfg, head=HeadConfig(contact=8, steps=4, windows=4, motion_toward_goal=True),
                     policy=replace(cfg.policy, motion_reward=1.0, motion_goal_reward=0.5))  # fmt: skip
    run_pipeline(shaped)
    out = capsys.readouterr().out
    assert "label_head: contact" in out and "refit_head: local reward head" in out and "train_policy: DMO" in out
    assert "train_local: " in out and "train_local: 2 steps" not in out  # the RSSM itself is reused
    policy_cfg = json.loads((run / "policy" / "config.json").read_text())
    assert policy_cfg["local"].endswith("local_head.safetensors") and policy_cfg["finetune_reward"] is False
    report = (run / "report.md").read_text()
    assert "refit on a shaping label" in report and "as the ranking reward rose / fell" in report
    assert "+ 1.0 for any push, +/- 0.5 as the ranking reward rose / fell" in report
    # a label stage that reruns and rewrites nothing (e.g. its config gained a field) leaves the stages after it alone
    (run / "stages" / "label_head.json").unlink()
    run_pipeline(shaped)
    out = capsys.readouterr().out
    assert "label_head: contact" in out and "refit_head: done earlier" in out and "train_policy: done earlier" in out


def test_verdict_against_random_needs_two_standard_errors():
    from worldgrad.pipeline import policy_row, verdict_lines

    rnd = {"max_coverages": [0.1, 0.2, 0.3, 0.4]}

    def verdict(policy: dict) -> str:
        return verdict_lines(policy_row({"policy_eval": policy, "eval": {"random": rnd}}))[0]

    assert "**beats random**" in verdict({"max_coverages": [0.2, 0.31, 0.4, 0.49]})
    assert "**below random**" in verdict({"max_coverages": [0.0, 0.1, 0.21, 0.3]})
    assert "not distinguishable" in verdict({"max_coverages": [0.2, 0.1, 0.4, 0.3]})
    assert "older worldgrad" in verdict({})  # a run folder from before per-seed figures
