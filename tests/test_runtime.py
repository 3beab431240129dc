import json
import os
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from worldgrad.runtime.checkpoint import (
    CheckpointError,
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from worldgrad.runtime.metrics import MetricsLogger, read_metrics
from worldgrad.runtime.resume import resume_or_start, save_training_state
from worldgrad.runtime.run import RunDir
from worldgrad.runtime.seeding import pick_device, seed_everything


def test_tree_roundtrip_keeps_dtypes_and_types(tmp_path):
    state = {
        "f32": torch.randn(3, 2),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "i64": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "np": np.arange(6, dtype=np.int16).reshape(2, 3),
        "nested": {0: {"a": 1, "b": 2.5, "c": None, "d": "x", "e": True}, "list": [1, torch.ones(1)]},
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", state))
    for k in ("f32", "bf16", "i64", "bool"):
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k])
    assert isinstance(back["np"], np.ndarray) and np.array_equal(back["np"], state["np"])
    assert back["nested"][0] == {"a": 1, "b": 2.5, "c": None, "d": "x", "e": True}
    assert isinstance(back["nested"][0]["a"], int) and torch.equal(back["nested"]["list"][1], torch.ones(1))


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.linspace(-1, 1, 32).reshape(8, 4)
    loss = (model(x) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_resume_gives_identical_training(tmp_path):
    model, opt = make_model()
    train_step(model, opt)
    train_step(model, opt)
    run = RunDir.create(tmp_path, "r", Cfg())
    save_training_state(run, 2, {"model": model}, {"opt": opt}, extra={"best": 0.5})
    train_step(model, opt)
    model2, opt2 = make_model()
    step, extra = resume_or_start(run, {"model": model2}, {"opt": opt2})
    assert step == 2 and extra == {"best": 0.5}
    train_step(model2, opt2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fresh_run_starts_at_zero_and_shape_mismatch_is_clear(tmp_path):
    run = RunDir.create(tmp_path, "r", Cfg())
    model, opt = make_model()
    assert resume_or_start(run, {"model": model}, {"opt": opt}) == (0, {})
    save_training_state(run, 1, {"model": model}, {"opt": opt})
    bigger = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    with pytest.raises(ValueError, match=r"model\.0\.weight has shape \(8, 4\).*another config"):
        resume_or_start(run, {"model": bigger}, {})


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    save_checkpoint(checkpoint_path(d, 1), {"w": torch.ones(3)})

    def crash(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(checkpoint_path(d, 2), {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == ["step_000000001.safetensors"]
    assert latest_checkpoint(d) == checkpoint_path(d, 1)


def test_truncated_checkpoint_is_reported_and_skipped(tmp_path):
    d = tmp_path / "ck"
    save_checkpoint(checkpoint_path(d, 1), {"w": torch.ones(100)})
    bad = save_checkpoint(checkpoint_path(d, 2), {"w": torch.ones(100)})
    bad.write_bytes(bad.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*delete it"):
        load_checkpoint(bad)
    with pytest.warns(UserWarning, match="skipping unreadable"):
        assert latest_checkpoint(d) == checkpoint_path(d, 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(d / "nope.safetensors")


def test_keep_prunes_old_checkpoints(tmp_path):
    for step in range(5):
        save_checkpoint(checkpoint_path(tmp_path, step), {"s": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_000000003.safetensors",
        "step_000000004.safetensors",
    ]


def test_rng_capture_and_restore(tmp_path):
    seed_everything(3)
    state = load_checkpoint(save_checkpoint(tmp_path / "r.safetensors", {"rng": capture_rng()}))["rng"]
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


@dataclass(frozen=True)
class Inner:
    size: int = 4


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-3
    dims: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_run_dir_saves_config_and_detects_mismatch(tmp_path):
    run = RunDir.create(tmp_path, "r", Cfg())
    assert json.loads((run.path / "config.json").read_text()) == {
        "lr": 1e-3,
        "dims": [1, 2],
        "inner": {"size": 4},
    }
    assert RunDir.create(tmp_path, "r", Cfg()).path == run.path
    with pytest.raises(ValueError, match=r"differs in inner\.size, lr"):
        RunDir.create(tmp_path, "r", Cfg(lr=1.0, inner=Inner(8)))
    with pytest.raises(ValueError, match="exists"):
        RunDir.create(tmp_path, "r", Cfg(), resume=False)


def test_metrics_jsonl_nan_and_truncate(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=True) as log:
        for step in range(1, 5):
            log.log(step, {"wm/train/loss": torch.tensor(1.0 / step), "x": float("nan")})
        log.truncate_after(2)
        log.log(3, {"wm/train/loss": 0.1})
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert [ln["step"] for ln in lines] == [1, 2, 3] and lines[0]["x"] is None
    assert lines[-1]["wm/train/loss"] == pytest.approx(0.1)
    assert any((tmp_path / "tb").iterdir())


def test_device_and_seed():
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu9")
    a = seed_everything(1).random()
    assert a == seed_everything(1).random()
