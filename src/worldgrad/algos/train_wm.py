"""``worldgrad train-wm``: train the diffusion world model on the episode store (resumable, optionally multi-GPU).

One step draws windows of ``context + 1 + autoregressive_steps`` frames. The first target is predicted from
recorded context; with ``autoregressive_steps`` > 0 each further target is predicted from a context that
holds the model's own (detached, quantized) estimates of the earlier targets, as DIAMOND does, so the
model learns to recover from its own errors; ``autoregressive_from`` starts them late in the schedule (a plain
phase first is cheaper per step). Launch with ``torchrun --nproc-per-node N worldgrad train-wm``
for DistributedDataParallel (NCCL on GPUs, gloo on CPUs); rank 0 writes the run folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from worldgrad.data.sampler import WindowSampler
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.eval.fidelity import psnr
from worldgrad.models.diffusion import Denoiser, DenoiserConfig, SamplerConfig, edm_loss, quantize, sample_next
from worldgrad.models.image import to_model
from worldgrad.runtime.checkpoint import load_checkpoint, save_checkpoint
from worldgrad.runtime.metrics import MetricsLogger
from worldgrad.runtime.resume import resume_or_start, save_training_state
from worldgrad.runtime.run import RunDir, config_from_dict, config_to_dict
from worldgrad.runtime.seeding import bf16_autocast, pick_device, seed_everything

VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0)
"""fixed noise levels of the validation loss (comparable across runs, unlike the random training levels)"""


@dataclass(frozen=True)
class TrainWMConfig:
    """Train the global diffusion world model on the frames and actions of an episode store."""

    store: Path = Path("runs/pusht-tiny/data/play")
    """episode store with the play data (frames and actions are read)"""
    runs: Path = Path("runs")
    """parent folder of run folders"""
    name: str = "wm-tiny"
    """run folder name; re-running with the same name resumes (a larger --steps extends the run)"""
    model: DenoiserConfig = field(
        default_factory=lambda: DenoiserConfig(channels=(16, 16, 32, 32), cond_dim=64, stem=2, motion_weight=2.0)
    )
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """sampler used for validation samples and strips (and stored with the model as its default)"""
    steps: int = 300
    """optimizer steps"""
    batch_size: int = 32
    """windows per step (per process under torchrun)"""
    lr: float = 1e-3
    """AdamW learning rate (linear warm-up, then constant, as DIAMOND)"""
    warmup: int = 100
    """warm-up steps"""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    autoregressive_steps: int = 0
    """extra targets predicted from the model's own estimates (DIAMOND: 1)"""
    autoregressive_from: int = 0
    """step from which windows carry the ``autoregressive_steps`` targets (0: from the first): a cheap plain phase,
    then an autoregressive one that teaches the model to recover from its own drift. Both may change on resume,
    e.g. to give a finished plain run an autoregressive phase with a larger ``--steps``"""
    val_fraction: float = 0.1
    """share of episodes held out for the validation loss"""
    eval_every: int = 100
    """steps between validation, sample strip and checkpoint"""
    strip_horizon: int = 10
    """open-loop steps shown in the sample strip"""
    seed: int = 0
    device: str = "auto"
    """auto, cpu, cuda or cuda:N (under torchrun: the local rank's GPU)"""
    amp: bool = True
    """bfloat16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX; fp32 on other CPUs)"""
    compile: bool = False
    """torch.compile the denoiser (faster steps after a compile pause; most useful on GPUs)"""
    threads: int = 0
    """CPU threads for torch (0: torch's default)"""

    def __post_init__(self) -> None:
        if self.autoregressive_steps < 0 or self.autoregressive_from < 0:
            raise ValueError(f"--autoregressive-steps {self.autoregressive_steps} / --autoregressive-from "
                             f"{self.autoregressive_from}: pass values >= 0")  # fmt: skip


PRESETS: dict[str, TrainWMConfig] = {
    "tiny": TrainWMConfig(),
    # The best model 2 CPU cores train in about two hours: the U-Net works at 32x32 after a lossless
    # pixel-unshuffle of the 64x64 frames, widening as it goes down (0.31 s per step at batch 32 on 2 cores,
    # against 0.86 s for the full-resolution (32, 32, 64, 64) net of the calibration run; bench/wm_throughput.py).
    # The last 2,000 steps predict a second frame from the model's own estimate: open-loop drift (the T fading
    # away within 10-20 steps) varied from run to run after the plain phase, and 1,000 such steps after 10,000
    # plain ones removed it (docs/pusht_policy_journal.md, stop 32).
    "cpu": TrainWMConfig(
        name="wm-cpu", store=Path("runs/pusht-cpu/data/play"), steps=20_000, batch_size=32, lr=3e-4, eval_every=500,
        autoregressive_steps=1, autoregressive_from=18_000,
        model=DenoiserConfig(channels=(32, 64, 96, 128), depths=(1, 1, 1, 1), cond_dim=128, stem=2, motion_weight=2.0),
    ),
    # DIAMOND's Atari denoiser (channels 64 at 4 levels, 2 blocks each, attention in the middle: ~4.4M parameters).
    "paper": TrainWMConfig(
        name="wm-paper", store=Path("runs/pusht-paper/data/play"), steps=200_000, batch_size=32, lr=1e-4,
        eval_every=2000, autoregressive_steps=1, compile=True,
        model=DenoiserConfig(channels=(64, 64, 64, 64), depths=(2, 2, 2, 2), cond_dim=256, mid_attention=True),
    ),
}  # fmt: skip


def _to_batch(frames: np.ndarray, actions: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return to_model(frames, device), torch.as_tensor(actions, device=device)


def sequence_loss(
    model: torch.nn.Module,
    denoiser: Denoiser,
    frames: torch.Tensor,
    actions: torch.Tensor,
    sigma: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean EDM loss over the targets of windows (B, L, 3, H, W); later contexts hold the model's own estimates.

    ``model`` is what is called (the DDP wrapper, if any); ``denoiser`` carries the config. Returns the loss
    and the last (detached) denoised estimate.
    """
    c = denoiser.cfg.context
    ctx = frames[:, :c]
    losses, denoised = [], frames[:, c]
    for k in range(c, frames.shape[1]):
        loss, denoised = edm_loss(_Call(model, denoiser), frames[:, k], ctx, actions[:, k - c : k], sigma)
        losses.append(loss)
        ctx = torch.cat([ctx[:, 1:], quantize(denoised)[:, None]], dim=1)
    return torch.stack(losses).mean(), denoised


class _Call:
    """Lets :func:`edm_loss` run through a DDP wrapper (which must see the forward call to sync gradients)."""

    def __init__(self, wrapped: torch.nn.Module, denoiser: Denoiser) -> None:
        self.wrapped, self.cfg = wrapped, denoiser.cfg
        self.sample_sigma = denoiser.sample_sigma

    def inner(self, x: torch.Tensor, c_noise: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor) -> Any:
        return self.wrapped(x, c_noise, frames, actions)


class _InnerForward(torch.nn.Module):
    """Exposes ``Denoiser.inner`` as ``forward`` so DDP (and torch.compile) wrap the network call."""

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, frames: torch.Tensor, actions: torch.Tensor) -> Any:
        return self.denoiser.inner(x, c_noise, frames, actions)


@torch.no_grad()
def validate(
    denoiser: Denoiser, sampler: WindowSampler, sampler_cfg: SamplerConfig, device: torch.device, n: int = 64
) -> dict[str, float]:
    """Loss at fixed noise levels and one-step sample PSNR on fixed validation windows (same every time)."""
    denoiser.eval()
    b = sampler.sample(n, np.random.default_rng(12345))
    frames, actions = _to_batch(b.frames, b.actions, device)
    c = denoiser.cfg.context
    gen_state = torch.get_rng_state()
    torch.manual_seed(12345)  # fixed noise: the numbers move only when the model does
    out: dict[str, float] = {}
    for s in VAL_SIGMAS:
        sigma = torch.full((n,), s, device=device)
        loss, _ = edm_loss(denoiser, frames[:, c], frames[:, :c], actions[:, :c], sigma)
        out[f"loss_sigma_{s:g}"] = float(loss)
    out["loss"] = float(np.mean([out[f"loss_sigma_{s:g}"] for s in VAL_SIGMAS]))
    pred = sample_next(denoiser, frames[:, :c], actions[:, :c], sampler_cfg)
    mse = ((pred - frames[:, c]) / 2).pow(2).mean(dim=(1, 2, 3))
    out["psnr_1step"] = float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
    torch.set_rng_state(gen_state)
    denoiser.train()
    return out


@torch.no_grad()
def open_loop(
    denoiser: Denoiser, store: EpisodeStore, split: str, sampler_cfg: SamplerConfig, horizon: int, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(real, predicted) uint8 frames (n, horizon, H, W, 3) of n fixed windows, the model's open loop from their
    recorded context and actions."""
    from worldgrad.imagine.rollout import WorldModelRollout

    c = denoiser.cfg.context
    b = WindowSampler(store, c + horizon, split).sample(n, np.random.default_rng(seed))  # type: ignore[arg-type]
    engine = WorldModelRollout(denoiser, sampler_cfg, num_envs=n, seed=seed)
    engine.reset(b.frames[:, :c], b.actions[:, : c - 1])
    preds = [engine.step(b.actions[:, c - 1 + t]).cpu().numpy() for t in range(horizon)]
    denoiser.train()
    return b.frames[:, c:], np.stack(preds, axis=1)


def open_loop_psnr(
    denoiser: Denoiser, store: EpisodeStore, split: str, sampler_cfg: SamplerConfig, horizon: int, n: int = 16
) -> float:
    """Mean PSNR (dB) of the ``horizon``-th open-loop frame on n fixed windows: the drift one-step figures miss
    (two ``cpu`` models of equal validation loss kept the T for 20 steps and lost it within 10)."""
    real, pred = open_loop(denoiser, store, split, sampler_cfg, horizon, n, seed=4242)
    return float(psnr(real[:, -1], pred[:, -1]).mean())


def sample_strip(
    denoiser: Denoiser, store: EpisodeStore, split: str, sampler_cfg: SamplerConfig, horizon: int, device: torch.device
) -> np.ndarray:
    """A real-vs-imagined image: rows of (real, predicted) frames for 2 validation windows, open loop."""
    real, pred = open_loop(denoiser, store, split, sampler_cfg, horizon, n=2, seed=777)
    rows = [np.concatenate(list(r), axis=1) for pair in zip(real, pred, strict=True) for r in pair]
    return np.concatenate(rows, axis=0)


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) when launched by torchrun, else (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train_wm(cfg: TrainWMConfig, progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the world model; returns the final validation metrics and the exported model path."""
    rank, world, local_rank = _dist_info()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    store = EpisodeStore.open(cfg.store)
    m = cfg.model
    if store.meta.image_shape[:2] != (m.image_size, m.image_size) or store.meta.action_dim != m.action_dim:
        raise StoreError(
            f"store {cfg.store} holds {store.meta.image_shape[0]}x{store.meta.image_shape[1]} images and "
            f"{store.meta.action_dim}-D actions but the model expects {m.image_size}x{m.image_size} and "
            f"{m.action_dim}-D; pass --model.image-size {store.meta.image_shape[0]} "
            f"--model.action-dim {store.meta.action_dim}"
        )
    started_dist = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
        started_dist = True
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if rank == 0:
        schedule = ("steps", "autoregressive_steps", "autoregressive_from")
        run = RunDir.create(cfg.runs, cfg.name, cfg, resume=True, ignore=(*schedule, "device", "threads"))
    if world > 1:
        dist.barrier()
    run = RunDir(Path(cfg.runs) / cfg.name)
    seed_everything(cfg.seed)
    # channels-last convolutions: ~12 % faster steps on 2 CPU cores (bench/wm_throughput.py), and the fast path on GPUs
    denoiser = Denoiser(m).to(device, memory_format=torch.channels_last)
    decay = [p for n, p in denoiser.named_parameters() if p.ndim > 1 and "noise_emb" not in n]
    no_decay = [p for n, p in denoiser.named_parameters() if p.ndim <= 1]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    start, extra = resume_or_start(run, {"model": denoiser}, {"optim": optim})
    rng = np.random.default_rng([cfg.seed, rank, start])
    if "data_rng" in extra and rank == 0 and world == 1:  # exact resume: same batches as an uninterrupted run
        rng.bit_generator.state = extra["data_rng"]
    net: torch.nn.Module = _InnerForward(denoiser)
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    if world > 1:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    train = WindowSampler(store, m.context + 1, "train", cfg.val_fraction)
    train_ar = (WindowSampler(store, m.context + 1 + cfg.autoregressive_steps, "train", cfg.val_fraction)
                if cfg.autoregressive_steps > 0 else train)  # fmt: skip
    val = WindowSampler(store, m.context + 1, "val", cfg.val_fraction)
    logger = MetricsLogger(run.path) if rank == 0 else None
    if logger is not None:
        logger.truncate_after(start)
    autocast = bf16_autocast(device, cfg.amp)
    metrics: dict[str, float] = {}
    # time_s is the run's training wall time summed over resumes (saved with each checkpoint)
    t_run, seen = time.perf_counter(), 0
    t0 = t_run - float(extra.get("time_s", 0.0))
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-wm",
               disable=not progress or rank != 0)  # fmt: skip
    for step in bar:
        for group in optim.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        b = (train_ar if step >= cfg.autoregressive_from else train).sample(cfg.batch_size, rng)
        frames, actions = _to_batch(b.frames, b.actions, device)
        with autocast:
            loss, _ = sequence_loss(net, denoiser, frames, actions)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"world-model loss became {loss.item()} at step {step}; lower --lr or resume from the last checkpoint"
            )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), cfg.grad_clip)
        optim.step()
        done, seen = step + 1, seen + cfg.batch_size * world
        if logger is not None and done % 10 == 0:
            now = time.perf_counter()
            logger.log(done, {"wm/train/loss": loss, "wm/train/grad_norm": grad_norm, "time_s": now - t0,
                              "wm/train/samples_per_s": seen / (now - t_run)})  # fmt: skip
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if done % cfg.eval_every == 0 or done == cfg.steps:
            if rank == 0 and logger is not None:
                metrics = _validate_all(denoiser, val, store, cfg, device)
                logger.log(done, {f"wm/val/{k}": v for k, v in metrics.items()})
                strip = sample_strip(denoiser, store, "val", cfg.sampler, cfg.strip_horizon, device)
                logger.log_image(done, "wm/val/strip", strip)
                _save_png(run.path / "strips" / f"step_{done:09d}.png", strip)
                save_training_state(run, done, {"model": denoiser}, {"optim": optim},
                                    extra={"data_rng": rng.bit_generator.state,
                                           "time_s": time.perf_counter() - t0}, keep=2)  # fmt: skip
            if world > 1:
                dist.barrier()
    result: dict[str, Any] = {}
    if rank == 0:
        if not metrics:
            metrics = _validate_all(denoiser, val, store, cfg, device)
        path = run.path / "wm.safetensors"
        export_world_model(path, denoiser, cfg.sampler)
        result = {"val": metrics, "path": str(path), "params": sum(p.numel() for p in denoiser.parameters())}
        assert logger is not None
        logger.close()
    if started_dist:
        dist.destroy_process_group()
    return result


def _validate_all(
    denoiser: Denoiser, val: WindowSampler, store: EpisodeStore, cfg: TrainWMConfig, device: torch.device
) -> dict[str, float]:
    metrics = validate(denoiser, val, cfg.sampler, device)
    h = cfg.strip_horizon
    metrics[f"psnr_open_loop_h{h}"] = open_loop_psnr(denoiser, store, "val", cfg.sampler, h)
    return metrics


def _save_png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    iio.imwrite(tmp, image, extension=".png")
    os.replace(tmp, path)


def export_world_model(path: Path, denoiser: Denoiser, sampler: SamplerConfig) -> None:
    """The deployable world model: weights, architecture and default sampler in one file."""
    save_checkpoint(
        path,
        {"model": denoiser.state_dict(), "config": config_to_dict(denoiser.cfg), "sampler": config_to_dict(sampler)},
    )


def load_world_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Denoiser, SamplerConfig]:
    """Loads a world model in eval mode, with its sampler settings.

    Args:
        path: ``wm.safetensors`` written at the end of ``train-wm``, or a train-wm run folder (its newest
            checkpoint is used, so a model can be evaluated while it still trains).
        device: where to put it.
    """
    path = Path(path)
    if path.is_dir():
        from worldgrad.runtime.checkpoint import load_latest_checkpoint

        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a train-wm run folder (no config.json); pass wm.safetensors")
        cfg = config_from_dict(TrainWMConfig, json.loads((path / "config.json").read_text()))
        found = load_latest_checkpoint(path / "checkpoints")
        if found is None:
            raise FileNotFoundError(f"run folder {path} has no checkpoint yet; wait for the first one (--eval-every)")
        denoiser = Denoiser(cfg.model).to(device)
        denoiser.load_state_dict(found[1]["modules"]["model"])
        return denoiser.eval(), cfg.sampler
    state = load_checkpoint(path)
    if "sampler" not in state or "config" not in state:
        raise ValueError(f"{path} is not a world model written by train-wm (wm.safetensors); pass that file")
    denoiser = Denoiser(config_from_dict(DenoiserConfig, state["config"])).to(device)
    denoiser.load_state_dict(state["model"])
    return denoiser.eval(), config_from_dict(SamplerConfig, state["sampler"])
