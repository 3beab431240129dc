import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from worldgrad.data.collect import CollectConfig, collect, parse_operator_mix, plan_episodes
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.envs.pusht import PushTConfig

SMALL = PushTConfig(image_size=32)


def collect_cmd(out: Path, frames: int, episode_len: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "worldgrad.cli", "collect", "--out", str(out), "--operator", "explorer",
        "--frames", str(frames), "--episode-len", str(episode_len), "--workers", str(workers),
        "--pusht.image-size", "32",
    ]  # fmt: skip


def assert_intact(store: EpisodeStore, episode_len: int) -> None:
    for ep in store:
        assert len(ep) == episode_len
        assert ep.frames.shape == (episode_len, 32, 32, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (episode_len, 2) and np.isfinite(ep.actions).all()
        assert ep.intent.shape == (episode_len,) and ep.sim("coverage").shape == (episode_len,)
        assert ep.frames[-1].any()  # the last frame was written, not left as zeros


def test_store_survives_sigkill_of_collector_and_resumes(tmp_path):
    out = tmp_path / "store"
    env = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    proc = subprocess.Popen(collect_cmd(out, 1500, 100), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        done = list((out / "episodes").glob("*")) if (out / "episodes").exists() else []
        if len(done) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = EpisodeStore.open(out)
    n_killed = len(killed)
    assert 2 <= n_killed < 15, "the collector should have been killed mid-way"
    assert_intact(killed, 100)

    subprocess.run(collect_cmd(out, 1500, 100), env=env, check=True, capture_output=True)
    resumed = EpisodeStore.open(out)
    assert len(resumed) == 15 and not any((out / ".tmp").iterdir())
    assert_intact(resumed, 100)
    # Resumed episodes are the ones an uninterrupted collection records.
    fresh_cfg = CollectConfig(out=tmp_path / "fresh", operator="explorer", frames=1500, episode_len=100, pusht=SMALL)
    collect(fresh_cfg, progress=False)
    fresh = EpisodeStore.open(tmp_path / "fresh")
    for key in (resumed.keys()[0], resumed.keys()[-1]):
        assert np.array_equal(resumed.episode(key).frames, fresh.episode(key).frames)
        assert np.array_equal(resumed.episode(key).actions, fresh.episode(key).actions)


def test_two_workers_record_the_same_episodes_as_one(tmp_path):
    cfg = CollectConfig(out=tmp_path / "one", operator="explorer:0.5,pusher:0.5", frames=240, episode_len=60,
                        pusht=SMALL)  # fmt: skip
    summary = collect(cfg, progress=False)
    collect(replace(cfg, out=tmp_path / "two", workers=2), progress=False)
    one, two = EpisodeStore.open(tmp_path / "one"), EpisodeStore.open(tmp_path / "two")
    assert one.keys() == two.keys() == ["s000000000", "s000000001", "s000000002", "s000000003"]
    for key in one.keys():
        assert np.array_equal(one.episode(key).frames, two.episode(key).frames)
        assert np.array_equal(one.episode(key).intent, two.episode(key).intent)
        assert one.episode(key).info["seed"] == int(key[1:])
    assert summary["frames"] == 240 and 0.0 <= summary["near_goal"] <= 1.0


def test_collection_refuses_evaluation_seeds_and_bad_operators(tmp_path):
    with pytest.raises(ValueError, match="evaluation range"):
        CollectConfig(out=tmp_path, seed=999_999, frames=2000, episode_len=1000)
    with pytest.raises(ValueError, match="unknown operator 'nobody'"):
        parse_operator_mix("nobody")
    with pytest.raises(ValueError, match="not a number"):
        parse_operator_mix("explorer:lots")
    assert parse_operator_mix("explorer:1,pusher:3") == {"explorer": 0.25, "pusher": 0.75}


def test_plan_is_deterministic_and_covers_the_frames():
    cfg = CollectConfig(frames=2500, episode_len=1000, seed=10, operator="explorer:0.5,pusher:0.5")
    plan = plan_episodes(cfg)
    assert [s.length for s in plan] == [1000, 1000, 500] and [s.seed for s in plan] == [10, 11, 12]
    assert plan == plan_episodes(cfg)


def test_existing_store_with_other_image_size_is_refused(tmp_path):
    cfg = CollectConfig(out=tmp_path / "s", operator="explorer", frames=20, episode_len=20, pusht=SMALL)
    collect(cfg, progress=False)
    with pytest.raises(StoreError, match="image_shape"):
        collect(replace(cfg, pusht=PushTConfig(image_size=64)), progress=False)
    with pytest.raises(StoreError, match="was recorded with operator=explorer"):
        collect(replace(cfg, operator="pusher"), progress=False)
