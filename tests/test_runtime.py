import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from worldgrad.runtime.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from worldgrad.runtime.metrics import MetricsLogger, read_metrics
from worldgrad.runtime.resume import resume_or_start, save_training_state
from worldgrad.runtime.run import RunDir, config_from_dict, config_to_dict
from worldgrad.runtime.seeding import pick_device, seed_everything

# ---------------------------------------------------------------- checkpoint files


def test_tree_roundtrip_keeps_dtypes_and_types(tmp_path):
    state = {
        "f32": torch.randn(3, 2),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "i64": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 3),
        "np": np.arange(6, dtype=np.int16).reshape(2, 3),
        "np_u16": np.arange(4, dtype=np.uint16).reshape(2, 2),  # stored as raw bytes
        "np_big_endian": np.arange(3, dtype=">f4"),
        "np_str": np.array(["ab", "c"]),
        "np_0d": np.array(2.5),
        "np_scalar": np.float32(1.5),
        "nested": {0: {"a": 1, "b": 2.5, "c": None, "d": "x", "e": True}, "list": [1, torch.ones(1)]},
        "betas": (0.9, 0.999),
        "big": 2**100,
        "inf": float("inf"),
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", state))
    for k in ("f32", "bf16", "i64", "bool", "scalar", "empty"):
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape and torch.equal(back[k], state[k])
    for k in ("np", "np_u16", "np_big_endian", "np_str", "np_0d"):
        assert isinstance(back[k], np.ndarray) and back[k].dtype == state[k].dtype and back[k].shape == state[k].shape
        assert np.array_equal(back[k], state[k])
    assert back["np_scalar"] == 1.5 and type(back["np_scalar"]) is float  # numpy scalars come back as Python
    assert back["nested"][0] == {"a": 1, "b": 2.5, "c": None, "d": "x", "e": True}
    assert [type(back["nested"][0][k]) for k in "abe"] == [int, float, bool]
    assert torch.equal(back["nested"]["list"][1], torch.ones(1)) and back["nested"]["list"][0] == 1
    assert back["betas"] == [0.9, 0.999]  # tuples come back as lists
    assert back["big"] == 2**100 and back["inf"] == float("inf")


def test_tensor_names_and_state_dict_metadata(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    optim = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    optim.step()
    path = save_checkpoint(tmp_path / "c.safetensors", {"model": model.state_dict(), "optim": optim.state_dict()})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert {"model/0.weight", "model/1.running_mean", "optim/state/0/exp_avg"} <= keys
    back = load_checkpoint(path)
    assert isinstance(back["model"], OrderedDict) and back["model"]._metadata["1"]["version"] == 2
    assert list(back["optim"]["state"]) == [0, 1, 2, 3]  # int keys stay ints
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    fresh.load_state_dict(back["model"])


def test_tied_noncontiguous_and_gpu_like_tensors_are_saved(tmp_path):
    shared = nn.Linear(3, 3)
    model = nn.ModuleDict({"a": shared, "b": shared})  # tied weights: two keys, one storage
    base = torch.arange(12.0).reshape(3, 4)
    state = {"model": model.state_dict(), "t": base.t(), "half": base[:, :2], "param": nn.Parameter(torch.ones(2))}
    back = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", state))
    assert torch.equal(back["model"]["a.weight"], back["model"]["b.weight"])
    assert torch.equal(back["t"], base.t()) and torch.equal(back["half"], base[:, :2])
    assert not back["param"].requires_grad


def test_unsupported_values_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"cannot checkpoint a object at x/0"):
        save_checkpoint(tmp_path / "c.safetensors", {"x": [object()]})
    with pytest.raises(TypeError, match="keys must be str or int"):
        save_checkpoint(tmp_path / "c.safetensors", {"x": {1.5: 1}})
    with pytest.raises(ValueError, match="both appear"):
        save_checkpoint(tmp_path / "c.safetensors", {"x": {1: 1, "1": 2}})
    with pytest.raises(ValueError, match="avoid '/' in keys"):
        save_checkpoint(tmp_path / "c.safetensors", {"a/b": torch.ones(1), "a": {"b": torch.ones(1)}})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_load_to_device_keeps_numpy_on_cpu(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(2), "a": np.ones(2)})
    back = load_checkpoint(path, map_location=torch.device("meta"))
    assert back["w"].device.type == "meta" and isinstance(back["a"], np.ndarray)


# ---------------------------------------------------------------- crashes and corruption


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    save_checkpoint(checkpoint_path(d, 1), {"w": torch.ones(3)})

    def crash(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(checkpoint_path(d, 2), {"w": torch.zeros(3)})
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(checkpoint_path(d, 1), {"w": torch.zeros(3)})  # overwriting the same step
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == ["step_000000001.safetensors"]  # no temp file left
    assert latest_checkpoint(d) == checkpoint_path(d, 1)
    assert torch.equal(load_checkpoint(checkpoint_path(d, 1))["w"], torch.ones(3))


WRITER = """
import os, signal, sys, torch
import worldgrad.runtime.checkpoint as ck

directory, mode = sys.argv[1], sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_save, real_commit = ck.save_file, ck.commit_temp
if mode == "mid_file":  # killed while the temp file is half written
    def save_file(tensors, path, metadata):
        real_save(tensors, path, metadata=metadata)
        if step == 3:
            os.truncate(path, os.path.getsize(path) // 2)
            die()
    ck.save_file = save_file
if mode == "before_rename":  # the temp file is complete, the rename never happens
    def commit_temp(tmp, path):
        if step == 3:
            die()
        real_commit(tmp, path)
    ck.commit_temp = commit_temp
step = 0
while True:
    step += 1
    w = torch.full((4_000_000,), float(step))
    ck.save_checkpoint(ck.checkpoint_path(directory, step), {"w": w, "step": step}, keep=2)
    print(step, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_during_writes_leaves_a_valid_checkpoint(tmp_path):
    modes = ("mid_file", "before_rename", "random")
    procs = {  # in parallel: each pays the torch import once
        m: subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / m), m],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in modes
    }
    for mode, proc in procs.items():
        if mode == "random":  # a real kill at an arbitrary moment of a 16 MB write loop
            try:
                for _ in range(3):
                    assert proc.stdout is not None and proc.stdout.readline(), proc.communicate()[1]
                time.sleep(0.005)
            finally:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.communicate()[1]
        d = tmp_path / mode
        path = latest_checkpoint(d)
        assert path is not None
        state = load_checkpoint(path)
        assert bool((state["w"] == state["step"]).all()) and path == checkpoint_path(d, state["step"])
        if mode != "random":
            assert state["step"] == 2 and any(p.name.startswith(".") for p in d.iterdir())  # a temp file was left
        for p in d.iterdir():  # age the leftovers: the next save of a resumed run removes them
            os.utime(p, (time.time() - 3600, time.time() - 3600))
        save_checkpoint(checkpoint_path(d, state["step"] + 1), {"step": state["step"] + 1}, keep=2)
        assert not [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_truncated_or_flipped_checkpoint_is_reported_and_skipped(tmp_path):
    d = tmp_path / "ck"
    save_checkpoint(checkpoint_path(d, 1), {"w": torch.ones(100)})
    bad = save_checkpoint(checkpoint_path(d, 2), {"w": torch.ones(100)})
    good = bad.read_bytes()
    bad.write_bytes(good[:-50])
    with pytest.raises(CheckpointError, match=r"step_000000002.safetensors is truncated or corrupt.*delete it") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    with pytest.warns(CheckpointWarning, match="skipping unreadable"):
        assert latest_checkpoint(d) == checkpoint_path(d, 1)
    bad.write_bytes(good[:-4] + bytes(4))  # same size, last float zeroed: only the CRC notices
    with pytest.raises(CheckpointError, match=r"tensor w fails its CRC check"):
        load_checkpoint(bad)
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=r"nope.safetensors does not exist"):
        load_checkpoint(d / "nope.safetensors")
    save_file({"w": torch.ones(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a worldgrad checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_keep_prunes_old_checkpoints_and_stale_temps(tmp_path):
    for step in range(5):
        save_checkpoint(checkpoint_path(tmp_path, step), {"s": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000003.safetensors", "step_000000004.safetensors"]
    # a resume from an older step (newer file corrupt) must never prune the file it just wrote
    save_checkpoint(checkpoint_path(tmp_path, 2), {"s": 2}, keep=1)
    assert checkpoint_path(tmp_path, 2).exists() and not checkpoint_path(tmp_path, 4).exists()
    stale = tmp_path / ".step_000000009.safetensors.0123abcd.tmp"
    fresh = tmp_path / ".step_000000010.safetensors.4567abcd.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    save_checkpoint(checkpoint_path(tmp_path, 3), {"s": 3}, keep=2)
    assert not stale.exists() and fresh.exists()  # a live writer's temp file is left alone
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 3)
    with pytest.raises(ValueError, match="keep must be at least 1"):
        save_checkpoint(checkpoint_path(tmp_path, 5), {"s": 5}, keep=0)


def test_steps_sort_numerically_past_nine_digits(tmp_path):
    save_checkpoint(checkpoint_path(tmp_path, 999_999_999), {"s": 1})
    save_checkpoint(checkpoint_path(tmp_path, 1_000_000_000), {"s": 2})
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1_000_000_000)
    assert latest_checkpoint(tmp_path / "missing") is None


def test_rng_capture_and_restore(tmp_path):
    seed_everything(3)
    state = load_checkpoint(save_checkpoint(tmp_path / "r.safetensors", {"rng": capture_rng()}))["rng"]
    first = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item()) == first


# ---------------------------------------------------------------- resume


@dataclass(frozen=True)
class Inner:
    size: int = 4


@dataclass(frozen=True)
class Cfg:
    lr: float = 1e-3
    dims: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    out: Path | None = None
    device: str = "cpu"


def make_model(hidden: int = 8) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Dropout(0.5), nn.Linear(hidden, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.linspace(-1, 1, 32).reshape(8, 4)
    loss = (model(x) ** 2).mean()  # dropout: equal results need the restored torch RNG too
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_resume_gives_identical_training(tmp_path):
    model, opt = make_model()
    train_step(model, opt)
    train_step(model, opt)
    run = RunDir.create(tmp_path, "r", Cfg())
    path = save_training_state(run, 2, {"model": model}, {"opt": opt}, extra={"best": 0.5, "data": [1, 2]})
    assert path == checkpoint_path(run.checkpoints, 2) == run.latest_checkpoint()
    train_step(model, opt)
    model2, opt2 = make_model()
    step, extra = resume_or_start(run, {"model": model2}, {"opt": opt2})
    assert step == 2 and extra == {"best": 0.5, "data": [1, 2]}
    train_step(model2, opt2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert opt2.param_groups[0]["betas"] == [0.9, 0.999]


def test_fresh_run_starts_at_zero_and_mismatches_are_clear(tmp_path):
    run = RunDir.create(tmp_path, "r", Cfg())
    model, opt = make_model()
    assert resume_or_start(run, {"model": model}, {"opt": opt}) == (0, {})
    save_training_state(run, 1, {"model": model}, {"opt": opt})
    bigger, _ = make_model(hidden=16)
    with pytest.raises(
        ValueError, match=r"model\.0\.weight has shape \(8, 4\) but the model has \(16, 4\).*another config"
    ):
        resume_or_start(run, {"model": bigger}, {})
    with pytest.raises(ValueError, match=r"has no module 'policy' \(it has \['model'\]\)"):
        resume_or_start(run, {"policy": model}, {})
    deeper = nn.Sequential(*make_model()[0], nn.Linear(1, 1))
    with pytest.raises(ValueError, match=r"the model has model\.4\.weight, the checkpoint does not"):
        resume_or_start(run, {"model": deeper}, {})
    with pytest.raises(ValueError, match=r"it has model\.3\.bias, the model does not"):
        resume_or_start(
            run, {"model": nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(), nn.Linear(8, 1, bias=False))}, {}
        )
    lonely = torch.optim.AdamW([nn.Parameter(torch.ones(1))])
    with pytest.raises(ValueError, match=r"does not fit optimizer 'opt'.*another config"):
        resume_or_start(run, {}, {"opt": lonely})


# ---------------------------------------------------------------- run folders


def test_run_dir_saves_config_and_detects_mismatch(tmp_path):
    run = RunDir.create(tmp_path, "r", Cfg(out=tmp_path / "x"))
    assert json.loads(run.config_path.read_text()) == {
        "lr": 1e-3,
        "dims": [1, 2],
        "inner": {"size": 4},
        "out": str(tmp_path / "x"),
        "device": "cpu",
    }
    assert (run.checkpoints, run.tb, run.metrics_path) == (
        run.path / "checkpoints",
        run.path / "tb",
        run.path / "metrics.jsonl",
    )
    assert run.latest_checkpoint() is None
    assert RunDir.create(tmp_path, "r", Cfg(out=tmp_path / "x")) == run
    with pytest.raises(ValueError, match=r"differs in inner\.size \(4 -> 8\), lr \(0\.001 -> 1\.0\), out") as e:
        RunDir.create(tmp_path, "r", Cfg(lr=1.0, inner=Inner(8)))
    assert "use a new run name" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="exists"):
        RunDir.create(tmp_path, "r", Cfg(out=tmp_path / "x"), resume=False)
    # keys the caller allows to change (a longer schedule, another device) resume and update config.json
    RunDir.create(tmp_path, "r", Cfg(out=tmp_path / "x", device="cuda"), ignore=["device"])
    assert run.config()["device"] == "cuda"
    assert config_from_dict(Cfg, run.config()) == Cfg(out=tmp_path / "x", device="cuda")
    with pytest.raises(ValueError, match="not a folder name"):
        RunDir.create(tmp_path, "", Cfg())


def test_run_made_before_a_config_field_existed_resumes_with_its_default(tmp_path):
    run = RunDir.create(tmp_path, "r", Cfg())
    old = run.config()
    del old["inner"]["size"]  # as written by a version without the field
    run.config_path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"inner\.size \(absent -> 8\)"):  # not the behaviour the run had
        RunDir.create(tmp_path, "r", Cfg(inner=Inner(8)))
    assert RunDir.create(tmp_path, "r", Cfg()) == run  # the default is what the run did
    assert run.config()["inner"] == {"size": 4}


def test_config_to_dict_rejects_non_configs():
    assert config_to_dict({"a": (1, Path("p"))}) == {"a": [1, "p"]}
    with pytest.raises(TypeError, match="config dataclass"):
        config_to_dict(Cfg)


# ---------------------------------------------------------------- metrics


def strict_lines(path: Path) -> list[dict]:
    def no_nan(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return [json.loads(ln, parse_constant=no_nan) for ln in path.read_text().splitlines()]


def test_metrics_jsonl_nan_and_truncate(tmp_path):
    run = RunDir.create(tmp_path, "r", Cfg())
    with MetricsLogger(run, tensorboard=True) as log:
        for step in range(1, 5):
            log.log(step, {"wm/train/loss": torch.tensor(1.0 / step), "x": float("nan"), "n": np.int64(3)}, note="a")
        log.log_image(4, "wm/val/frame", np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            log.log_image(4, "bad", np.zeros((3, 8, 8), np.float32))
        with pytest.raises(ValueError, match="'step' is reserved"):
            log.log(5, {"step": 1})
        with pytest.raises(ValueError, match="metric 'v' must be a number"):
            log.log(5, {"v": torch.ones(3)})
        log.truncate_after(2)
        log.log(3, {"wm/train/loss": 0.1}, extra_nan=[float("inf")])
    lines = strict_lines(run.metrics_path)
    assert [ln["step"] for ln in lines] == [1, 2, 3] and lines[0]["x"] is None
    assert lines[0]["n"] == 3.0 and lines[0]["note"] == "a"
    assert lines[-1]["wm/train/loss"] == pytest.approx(0.1) and lines[-1]["extra_nan"] == [None]
    assert read_metrics(run.metrics_path) == lines
    assert any(run.tb.iterdir())


def test_metrics_after_a_kill_mid_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')  # killed mid-write
    assert [ln["step"] for ln in read_metrics(path)] == [1, 2]
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.truncate_after(1)
        log.log(2, {"a": 4.0})
    assert strict_lines(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 4.0}]
    path.write_text(path.read_text() + '{"step": 3')
    with MetricsLogger(tmp_path, tensorboard=False) as log:  # reopening alone drops the partial line
        log.log(3, {"a": 5.0})
    assert [ln["step"] for ln in strict_lines(path)] == [1, 2, 3]


# ---------------------------------------------------------------- seeding and devices


def test_device_and_seed():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu9")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("xla")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda:0")
    a = seed_everything(1).random()
    assert a == seed_everything(1).random()
    seed_everything(1)
    x = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(1, deterministic=True)
    try:
        assert torch.are_deterministic_algorithms_enabled()
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == x
    finally:
        seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ValueError, match="seed must be >= 0"):
        seed_everything(-1)
