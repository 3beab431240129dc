import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import worldgrad.algos.train_wm as train_wm_module
from worldgrad.algos.train_wm import TrainWMConfig, load_world_model, sequence_loss, train_wm
from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.envs.pusht import PushTConfig
from worldgrad.eval.wm import EvalWMConfig, evaluate_wm, start_points
from worldgrad.imagine.rollout import StoreContexts, WorldModelRollout
from worldgrad.imagine.vector_env import WorldModelVectorEnv
from worldgrad.models.diffusion import (
    Denoiser,
    DenoiserConfig,
    SamplerConfig,
    edm_loss,
    karras_sigmas,
    precondition,
    quantize,
    sample_next,
)
from worldgrad.models.image import to_model
from worldgrad.runtime import seeding
from worldgrad.runtime.checkpoint import load_checkpoint

SIZE = 16
MODEL = DenoiserConfig(image_size=SIZE, channels=(8, 8, 16), depths=(1, 1, 1), cond_dim=32)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("wm") / "play"
    cfg = CollectConfig(out=out, operator="explorer:0.5,expert:0.5", frames=400, episode_len=100,
                        pusht=PushTConfig(image_size=SIZE))  # fmt: skip
    collect(cfg, progress=False)
    return out


def config(store, runs, steps, **kw):
    return TrainWMConfig(store=store, runs=runs, name="wm", model=MODEL, steps=steps, batch_size=4, eval_every=5,
                         strip_horizon=3, warmup=2, device="cpu", **kw)  # fmt: skip


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(n, MODEL.context, 3, SIZE, SIZE, generator=g) * 2 - 1
    actions = torch.rand(n, MODEL.context, 2, generator=g) * 2 - 1
    target = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1
    return target, frames, actions


def test_preconditioning_gives_the_clean_target_when_f_predicts_its_ideal_value():
    torch.manual_seed(0)
    model = Denoiser(MODEL)
    target, frames, actions = batch()
    sigma = torch.tensor([0.01, 0.3, 2.0, 15.0])
    x_noisy = target + torch.randn_like(target) * sigma.view(-1, 1, 1, 1)
    p = precondition(sigma, MODEL.sigma_data, MODEL.sigma_offset)
    ideal = (target - p.c_skip * x_noisy) / p.c_out
    model.inner = lambda *args: ideal  # F outputs exactly what the loss asks of it
    torch.testing.assert_close(model(x_noisy, sigma, frames, actions), target, atol=1e-5, rtol=0)
    # EDM identities: unit-variance input and skip + out weights matching the data scale
    s2 = sigma**2 + MODEL.sigma_offset**2
    torch.testing.assert_close(p.c_in.flatten() ** 2 * (s2 + 0.25), torch.ones(4))
    torch.testing.assert_close(p.c_skip.flatten() + p.c_out.flatten() ** 2 / 0.25, torch.ones(4))


def test_edm_loss_is_zero_exactly_when_f_is_ideal():
    torch.manual_seed(0)
    model = Denoiser(MODEL)
    target, frames, actions = batch()
    sigma = torch.full((4,), 0.7)

    def ideal_inner(x_in, c_noise, f, a):
        p = precondition(sigma, MODEL.sigma_data, MODEL.sigma_offset)
        x_noisy = x_in / p.c_in
        return (target - p.c_skip * x_noisy) / p.c_out

    model.inner = ideal_inner
    loss, denoised = edm_loss(model, target, frames, actions, sigma)
    assert float(loss) < 1e-10
    torch.testing.assert_close(denoised, target, atol=1e-5, rtol=0)


def test_sampler_shapes_dtype_range_and_8bit_grid():
    torch.manual_seed(0)
    model = Denoiser(MODEL).eval()
    _, frames, actions = batch(3)
    for order in (1, 2):
        out = sample_next(model, frames, actions, SamplerConfig(steps=3, order=order))
        assert out.shape == (3, 3, SIZE, SIZE) and out.dtype == torch.float32
        assert out.min() >= -1 and out.max() <= 1
        torch.testing.assert_close(out, quantize(out), atol=0, rtol=0)
        levels = (out + 1) * 127.5
        torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    sig = karras_sigmas(SamplerConfig(steps=3))
    assert sig[0] == pytest.approx(5.0) and sig[2] == pytest.approx(2e-3) and sig[-1] == 0.0
    assert sig[0] > sig[1] > sig[2]


def test_bad_context_shape_is_a_clear_error():
    model = Denoiser(MODEL)
    with pytest.raises(ValueError, match="denoiser expects context frames"):
        model.check_inputs(torch.zeros(2, 3, 3, SIZE, SIZE), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="divisible"):
        DenoiserConfig(image_size=20, channels=(8, 8, 8, 8), depths=(1, 1, 1, 1))


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = Denoiser(replace(MODEL, channels=(16, 16, 32), cond_dim=64))
    target, frames, actions = batch(8)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        torch.manual_seed(1)  # the same noise every step: a fixed objective
        loss, _ = edm_loss(model, target, frames, actions)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def _nontrivial_denoiser() -> Denoiser:
    torch.manual_seed(0)
    model = Denoiser(MODEL).eval()
    for p in model.unet.conv_out.parameters():  # a non-trivial output (zero-init would predict c_skip * x only)
        torch.nn.init.normal_(p, std=0.3)
    return model


def _assert_within_a_level(a: np.ndarray, b: np.ndarray) -> None:
    """8-bit frames from differently ordered arithmetic: at most a quantization level apart, and rarely."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def _rollout_inputs(envs: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random context frames (B, C, H, W, 3), context actions (B, C - 1, 2) and step actions (T, B, 2)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (envs, MODEL.context, SIZE, SIZE, 3), dtype=np.uint8)
    acts = rng.uniform(-1, 1, (envs, MODEL.context - 1, 2)).astype(np.float32)
    return frames, acts, rng.uniform(-1, 1, (steps, envs, 2)).astype(np.float32)


def _roll(engine: WorldModelRollout, frames: np.ndarray, acts: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Resets ``engine`` on the contexts and returns its frames (B, T, H, W, 3) under the step actions."""
    engine.reset(frames, acts)
    return np.stack([engine.step(a).numpy() for a in steps], axis=1)


def test_batched_rollout_equals_single_env_rollouts():
    model = _nontrivial_denoiser()
    frames, acts, steps = _rollout_inputs(3, 5)
    batched = WorldModelRollout(model, SamplerConfig(), 3, seeds=[11, 12, 13])
    out_b = _roll(batched, frames, acts, steps)
    for i, s in enumerate([11, 12, 13]):
        single = WorldModelRollout(model, SamplerConfig(), 1, seeds=[s])
        out_s = _roll(single, frames[i : i + 1], acts[i : i + 1], steps[:, i : i + 1])
        _assert_within_a_level(out_b[i], out_s[0])  # batched and single convolutions may round differently
    assert out_b.shape == (3, 5, SIZE, SIZE, 3) and out_b.dtype == np.uint8
    assert not np.array_equal(out_b[:, 0], out_b[:, 1])  # frames evolve
    with pytest.raises(ValueError, match="step needs actions"):
        batched.step(np.zeros((2, 2), np.float32))


def test_bf16_rollout_runs_where_asked_and_the_cpu_has_it_and_stays_near_fp32(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(seeding, "cpu_has_native_bf16", lambda: False)
    assert not seeding.bf16_enabled(cpu)  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(seeding, "cpu_has_native_bf16", lambda: True)
    assert seeding.bf16_enabled(cpu) and not seeding.bf16_enabled(cpu, wanted=False)
    model = _nontrivial_denoiser()
    frames, acts, steps = _rollout_inputs(2, 3)
    fp32, bf16 = (_roll(WorldModelRollout(model, SamplerConfig(), 2, seeds=[5, 6], amp=amp), frames, acts, steps)
                  for amp in (False, True))  # fmt: skip
    diff = np.abs(fp32.astype(int) - bf16.astype(int))
    assert bf16.dtype == np.uint8 and diff.max() > 0  # bf16 did run: some level moved
    assert diff.mean() < 2.0  # and the frames stay those of the fp32 model


@pytest.mark.slow  # torch.compile takes about a minute on a CPU
def test_compiled_rollout_equals_the_eager_one():
    model = _nontrivial_denoiser()
    frames, acts, steps = _rollout_inputs(2, 3)
    for amp in (False, True):
        outs = [_roll(WorldModelRollout(model, SamplerConfig(), 2, seeds=[5, 6], amp=amp, compile=compiled),
                      frames, acts, steps) for compiled in (False, True)]  # fmt: skip
        if amp:  # bf16 (where the CPU has it): fused kernels round bf16 differently, frames stay close
            assert np.abs(outs[0].astype(int) - outs[1].astype(int)).mean() < 2.0
        else:
            _assert_within_a_level(*outs)  # fused kernels may round differently


def test_rollout_context_shifts_and_partial_reset():
    model = Denoiser(MODEL).eval()
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, MODEL.context, SIZE, SIZE, 3), dtype=np.uint8)
    acts = rng.uniform(-1, 1, (2, MODEL.context - 1, 2)).astype(np.float32)
    engine = WorldModelRollout(model, SamplerConfig(), 2)
    obs = engine.reset(frames, acts)
    np.testing.assert_array_equal(obs.numpy(), frames[:, -1])
    a = np.array([[0.5, -0.5], [2.0, 0.0]], np.float32)
    new = engine.step(a)
    torch.testing.assert_close(engine.actions[:, -1], torch.tensor([[0.5, -0.5], [1.0, 0.0]]))  # clamped to [-1, 1]
    torch.testing.assert_close(engine.frames[:, -1], to_model(new))
    torch.testing.assert_close(engine.frames[:, :-1], to_model(frames[:, 1:]))
    engine.reset(frames[:1], acts[:1], env_ids=[1])
    assert engine.steps.tolist() == [1, 0]
    torch.testing.assert_close(engine.frames[1], to_model(frames[0]))


def test_vector_env_follows_the_gymnasium_api(store_path):
    model = Denoiser(MODEL).eval()
    store = EpisodeStore.open(store_path)
    calls = []

    def reward_fn(frames, start):
        calls.append(start.clone())
        return frames.float().mean(dim=(1, 2, 3))

    env = WorldModelVectorEnv(WorldModelRollout(model, SamplerConfig(), 3), StoreContexts(store, MODEL.context),
                              reward_fn=reward_fn, horizon=2)  # fmt: skip
    assert isinstance(env, gym.vector.VectorEnv)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, SIZE, SIZE, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    first = obs.copy()
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert rew.shape == (3,) and not trunc.any() and not term.any() and info == {}
    np.testing.assert_array_equal(calls[-1].numpy(), first)  # s_start is the rollout's first frame
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert trunc.all() and info["_final_obs"].all() and info["final_obs"].shape == obs.shape
    assert env.engine.steps.tolist() == [0, 0, 0]  # restarted from fresh real contexts


def test_vector_env_with_the_learned_reward_and_a_run_folder_model(store_path, tmp_path):
    from worldgrad.algos.train_reward import TrainRewardConfig, train_reward
    from worldgrad.envs.pusht import render_goal_image
    from worldgrad.imagine.vector_env import make_world_model_env
    from worldgrad.models.encoders import ConvEncoderConfig
    from worldgrad.models.reward import RewardModelConfig

    train_wm(config(store_path, tmp_path, 5), progress=False)
    reward_model = RewardModelConfig(image_size=SIZE, encoder=ConvEncoderConfig(depth=4, out_dim=8))
    rcfg = TrainRewardConfig(store=store_path, runs=tmp_path, name="r", steps=2, eval_every=2, batch_size=4,
                             norm_frames=64, max_window=20, device="cpu", model=reward_model)  # fmt: skip
    rpath = train_reward(rcfg, render_goal_image(PushTConfig(image_size=SIZE)), progress=False)["path"]
    env = make_world_model_env(tmp_path / "wm", store_path, rpath, num_envs=2, horizon=3, device="cpu")
    env.reset(seed=1)
    _, rew, _, _, _ = env.step(np.zeros((2, 2), np.float32))
    assert rew.shape == (2,) and np.isfinite(rew).all() and rew.dtype == np.float32
    with pytest.raises(FileNotFoundError, match="not a train-wm run folder"):
        make_world_model_env(tmp_path, store_path)


def test_train_eval_export_and_load(store_path, tmp_path):
    result = train_wm(config(store_path, tmp_path, 10, autoregressive_steps=1), progress=False)
    run = tmp_path / "wm"
    assert (run / "strips" / "step_000000010.png").exists()
    assert {"loss", "psnr_1step", "loss_sigma_0.05", "psnr_open_loop_h3"} <= set(result["val"])
    assert 0 < result["val"]["psnr_open_loop_h3"] < 100
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("wm/val/loss" in x for x in lines) and any("wm/train/loss" in x for x in lines)
    model, sampler = load_world_model(result["path"])
    assert model.cfg == MODEL and sampler == SamplerConfig() and not model.training
    ecfg = EvalWMConfig(wm=run / "wm.safetensors", store=store_path, out=tmp_path / "eval", rollouts=3, horizon=6,
                        horizons=(1, 3, 6), batch_size=2, device="cpu")  # fmt: skip
    out = evaluate_wm(ecfg, progress=False)
    assert set(out["model"]) == {1, 3, 6} and out["copy_last"][1]["t_pos_err_px"] >= 0
    assert (tmp_path / "eval" / "strip.png").exists() and (tmp_path / "eval" / "fidelity.md").exists()


def test_autoregressive_step_feeds_the_models_own_estimate():
    torch.manual_seed(0)
    model = Denoiser(MODEL)
    frames = torch.rand(2, MODEL.context + 2, 3, SIZE, SIZE) * 2 - 1
    actions = torch.rand(2, MODEL.context + 2, 2)
    seen = []
    real_inner = model.inner

    def spy(x, c_noise, f, a):
        seen.append(f.clone())
        return real_inner(x, c_noise, f, a)

    model.inner = spy
    sequence_loss(model, model, frames, actions)
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], frames[:, : MODEL.context])
    torch.testing.assert_close(seen[1][:, :-1], frames[:, 1 : MODEL.context])
    assert not torch.equal(seen[1][:, -1], frames[:, MODEL.context])  # an estimate, not the recorded frame


def test_resume_after_interruption_equals_uninterrupted(store_path, tmp_path, monkeypatch):
    train_wm(config(store_path, tmp_path / "a", 10), progress=False)
    real_validate, calls = train_wm_module.validate, {"n": 0}

    def killed_after_first_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_wm_module, "validate", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_wm(config(store_path, tmp_path / "b", 10), progress=False)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "b" / "wm" / "checkpoints").iterdir()] == ["step_000000005.safetensors"]
    train_wm(config(store_path, tmp_path / "b", 10), progress=False)
    a = load_checkpoint(tmp_path / "a" / "wm" / "checkpoints" / "step_000000010.safetensors")["modules"]["model"]
    b = load_checkpoint(tmp_path / "b" / "wm" / "checkpoints" / "step_000000010.safetensors")["modules"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a longer schedule extends the run instead of being refused
    train_wm(config(store_path, tmp_path / "b", 15), progress=False)
    assert (tmp_path / "b" / "wm" / "checkpoints" / "step_000000015.safetensors").exists()


def test_wrong_image_size_is_a_clear_error(store_path, tmp_path):
    with pytest.raises(StoreError, match=r"--model\.image-size 16"):
        train_wm(replace(config(store_path, tmp_path, 2), model=DenoiserConfig()), progress=False)


def test_start_points_spread_over_episodes(store_path):
    store = EpisodeStore.open(store_path)
    points = start_points(store, 30, 8)
    assert len(points) == 8 and len({k for k, _ in points}) == len(store.keys())
    assert all(0 <= s <= len(store.episode(k)) - 30 for k, s in points)
    with pytest.raises(StoreError, match="shorter --horizon"):
        start_points(store, 1000, 4)


def _ddp_worker(rank: int, port: int, store: str, runs: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    cfg = config(Path(store), Path(runs), 1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=2)
    seen = {}
    real_step = torch.optim.AdamW.step

    def spy_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        seen["params"] = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        return out

    torch.optim.AdamW.step = spy_step  # type: ignore[method-assign]
    train_wm(cfg, progress=False)
    torch.save(seen["params"], f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_two_cpu_processes_end_with_equal_parameters(store_path, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(store_path), str(tmp_path / "runs"), str(tmp_path)), nprocs=2, join=True)
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a, b) for a, b in zip(p0, p1, strict=True))
    torch.manual_seed(0)
    fresh = Denoiser(MODEL)  # the initialization train_wm starts from (same seed)
    assert any(not torch.equal(a, b) for a, b in zip(p0, fresh.parameters(), strict=True))  # a step was taken


def test_differentiable_sampler_matches_the_sampler_and_passes_gradients_to_actions():
    from worldgrad.models.diffusion import sample_next_differentiable

    torch.manual_seed(0)
    model = Denoiser(MODEL).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the zero-init identity blocks, where actions have no effect yet
            p.add_(0.1 * torch.randn_like(p))
    _, frames, actions = batch(2)
    noise = torch.randn(2, 3, SIZE, SIZE)
    actions = actions.clone().requires_grad_(True)
    out = sample_next_differentiable(model, frames, actions, SamplerConfig(), noise=noise)
    torch.testing.assert_close(out, sample_next(model, frames, actions.detach(), SamplerConfig(), noise=noise))
    (g,) = torch.autograd.grad(out.square().sum(), actions)
    assert g.abs().sum() > 0


def test_autoregressive_phase_starts_at_its_step_and_extends_a_plain_run(store_path, tmp_path, monkeypatch):
    from worldgrad.algos import train_wm as train_wm_module

    lengths = []
    real = train_wm_module.sequence_loss

    def spy(model, denoiser, frames, actions, sigma=None):
        lengths.append(frames.shape[1])
        return real(model, denoiser, frames, actions, sigma)

    monkeypatch.setattr(train_wm_module, "sequence_loss", spy)
    c = MODEL.context
    train_wm(config(store_path, tmp_path, 5), progress=False)  # a finished plain run
    assert lengths == [c + 1] * 5
    lengths.clear()
    # the same run, extended with an autoregressive phase from step 7: resumes at 5, two plain steps, then two more
    train_wm(config(store_path, tmp_path, 9, autoregressive_steps=1, autoregressive_from=7), progress=False)
    assert lengths == [c + 1] * 2 + [c + 2] * 2
    with pytest.raises(ValueError, match="--autoregressive-from -1"):
        config(store_path, tmp_path, 5, autoregressive_from=-1)
