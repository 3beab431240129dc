import json
from dataclasses import replace

from worldgrad.algos.train_reward import TrainRewardConfig
from worldgrad.envs.pusht import PushTConfig
from worldgrad.pipeline import PipelineConfig, run_pipeline


def test_pipeline_runs_end_to_end_and_reuses_finished_stages(tmp_path, capsys):
    cfg = PipelineConfig(
        runs=tmp_path, name="t", play_frames=120, heldout_frames=120, episode_len=60, workers=1,
        eval_episodes=2, eval_videos=1, pusht=PushTConfig(image_size=32, max_episode_steps=10),
        reward=replace(TrainRewardConfig(), steps=4, eval_every=2, batch_size=8, norm_frames=256, max_window=20),
    )  # fmt: skip
    first = run_pipeline(cfg)
    run = tmp_path / "t"
    assert json.loads((run / "config.json").read_text())["play_frames"] == 120
    report = (run / "report.md").read_text()
    assert "| random | 2 |" in report and "not implemented yet" in report and "## Reward model" in report
    assert len(list((run / "data" / "play" / "episodes").iterdir())) == 2
    assert (run / "reward" / "reward.safetensors").exists()
    assert all(
        "reward" in [p.stem for p in (ep / "labels").glob("*.npy")]
        for ep in (run / "data" / "play" / "episodes").iterdir()
    )
    capsys.readouterr()
    second = run_pipeline(cfg)
    out = capsys.readouterr().out
    assert out.count("done earlier, reused") == 6
    assert second["eval"] == first["eval"]
