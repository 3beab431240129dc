"""One explicit seed and one explicit device per run (no hidden random defaults)."""

from __future__ import annotations

import functools
import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> np.random.Generator:
    """Seeds python, numpy (legacy global) and torch (CPU and every GPU).

    Args:
        seed: a non-negative integer.
        deterministic: make torch pick deterministic kernels (slower; ops without one only warn).
            False switches a previous request off, so the setting always matches the run's config.

    Returns:
        A fresh ``np.random.Generator`` seeded with ``seed``, for the caller's own sampling. Its state
        is not global, so a resumable caller stores ``rng.bit_generator.state`` in its checkpoint.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first call to be deterministic; harmless on the CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=deterministic)
    return np.random.default_rng(seed)


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for a ``--device`` value.

    Args:
        name: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        The device, checked to exist on this machine.

    Raises:
        ValueError: an unknown name, or a GPU this machine does not have.
    """
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but CUDA is not available; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} asked for but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} asked for but MPS is not available; use --device cpu or auto")
    elif device.type != "cpu":
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


@functools.cache  # read once: every rollout engine asks
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), read from /proc/cpuinfo.

    Elsewhere oneDNN emulates bf16 and autocast would slow the CPU down, so it stays off there.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_enabled(device: torch.device, wanted: bool = True) -> bool:
    """Whether :func:`bf16_autocast` runs bfloat16 on ``device``: asked for, and CUDA or a CPU with native bf16."""
    return wanted and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def bf16_autocast(device: torch.device, wanted: bool = True) -> torch.autocast:
    """bfloat16 autocast on CUDA, and on CPUs with native bf16 (about 1.6x faster world-model steps on AVX512-BF16)."""
    kind = device.type if device.type in ("cuda", "cpu") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16_enabled(device, wanted))
