"""Save and resume a whole training state: modules, optimizers, RNGs and the step counter."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worldgrad.runtime.checkpoint import (
    capture_rng,
    checkpoint_path,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from worldgrad.runtime.run import RunDir


def save_training_state(
    run: RunDir,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    extra: dict[str, Any] | None = None,
    keep: int = 3,
) -> None:
    """Checkpoints everything needed to continue exactly where training stopped."""
    state = {
        "step": step,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": capture_rng(),
        "extra": extra or {},
    }
    save_checkpoint(checkpoint_path(run.checkpoints, step), state, keep=keep)


def _check_shapes(name: str, module: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    for key, value in saved.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"checkpoint {name}.{key} has shape {tuple(value.shape)} but the model has {tuple(own[key].shape)}; "
                "the run folder was made with another config: use a new run name"
            )


def resume_or_start(
    run: RunDir, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> tuple[int, dict[str, Any]]:
    """Loads the newest valid checkpoint of ``run`` into the given objects.

    Returns:
        (step to continue from, the ``extra`` dict saved with it); (0, {}) for a fresh run.
    """
    path = run.latest_checkpoint()
    if path is None:
        return 0, {}
    state = load_checkpoint(path)
    for name, module in modules.items():
        _check_shapes(name, module, state["modules"][name])
        module.load_state_dict(state["modules"][name])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    restore_rng(state["rng"])
    return int(state["step"]), state["extra"]
