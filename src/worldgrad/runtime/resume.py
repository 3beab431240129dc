"""Save and resume a whole training state: modules, optimizers, RNGs and the step counter.

Every training command uses this pair, so "kill it, run the same command again" continues exactly where
the last checkpoint left off (same parameters, optimizer moments and random streams).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from worldgrad.runtime.checkpoint import (
    CheckpointWarning,
    capture_rng,
    checkpoint_path,
    load_latest_checkpoint,
    restore_rng,
    save_checkpoint,
)
from worldgrad.runtime.run import RunDir

_OTHER_CONFIG = "the run folder was made with another config: use a new run name, or the config it was made with"


class Stateful(Protocol):
    """Anything with a state dict: optimizers, LR schedulers, ``torch.amp.GradScaler``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


def save_training_state(
    run: RunDir,
    step: int,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Stateful],
    extra: Mapping[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Checkpoints everything needed to continue exactly where training stopped.

    Args:
        run: the run folder; the file is ``checkpoints/step_{step:09d}.safetensors``.
        step: the number of finished steps (training resumes at this step).
        modules: models by name.
        optimizers: optimizers (and schedulers, grad scalers) by name.
        extra: other resumable state, e.g. ``{"data_rng": rng.bit_generator.state, "best": 0.3}``.
        keep: how many step checkpoints to keep in the folder.

    Returns:
        The checkpoint path.
    """
    state = {
        "step": step,
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": capture_rng(),
        "extra": dict(extra or {}),
    }
    return save_checkpoint(checkpoint_path(run.checkpoints, step), state, keep=keep)


def _entry(path: Path, state: dict[str, Any], group: str, name: str) -> Any:
    saved = state[group]
    if name not in saved:
        raise ValueError(f"checkpoint {path} has no {group[:-1]} {name!r} (it has {sorted(saved)}); {_OTHER_CONFIG}")
    return saved[name]


def _load_module(path: Path, name: str, module: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict`` with a one-line error naming the first key that does not fit (nothing is loaded then)."""
    own = module.state_dict()
    for key, value in own.items():
        if key not in saved:
            raise ValueError(f"checkpoint {path}: the model has {name}.{key}, the checkpoint does not; {_OTHER_CONFIG}")
        if value.shape != saved[key].shape:
            raise ValueError(
                f"checkpoint {path}: {name}.{key} has shape {tuple(saved[key].shape)} but the model has "
                f"{tuple(value.shape)}; {_OTHER_CONFIG}"
            )
    for key in saved:
        if key not in own:
            raise ValueError(f"checkpoint {path}: it has {name}.{key}, the model does not; {_OTHER_CONFIG}")
    module.load_state_dict(saved)


def resume_or_start(
    run: RunDir,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Stateful],
    map_location: str | torch.device = "cpu",
    optional: Collection[str] = (),
) -> tuple[int, dict[str, Any]]:
    """Loads the newest valid checkpoint of ``run`` into the given objects and restores the global RNGs.

    Unreadable newer checkpoints are skipped with a warning. Modules keep their device (the state is
    copied into their parameters); optimizers move their state to their parameters' device.

    Args:
        run: the run folder.
        modules: models by name, as passed to :func:`save_training_state`.
        optimizers: optimizers (schedulers, scalers) by name; a subset of those saved is fine.
        map_location: where tensors are loaded before being copied in.
        optional: module/optimizer names a checkpoint written by an older version may lack; they keep their
            current state (with a warning) instead of failing.

    Returns:
        ``(step to continue from, the extra dict saved with it)``; ``(0, {})`` for a fresh run.

    Raises:
        ValueError: the checkpoint does not fit the modules or optimizers (another config).
    """
    found = load_latest_checkpoint(run.checkpoints, map_location)
    if found is None:
        return 0, {}
    path, state = found
    missing = {group: set(objects) & set(optional) - set(state[group])
               for group, objects in (("modules", modules), ("optimizers", optimizers))}  # fmt: skip
    for group, names in missing.items():
        for name in names:
            warnings.warn(f"checkpoint {path} has no {group[:-1]} {name!r}; it starts from its current state",
                          CheckpointWarning, stacklevel=2)  # fmt: skip
    _load_into(path, state, {k: v for k, v in modules.items() if k not in missing["modules"]},
               {k: v for k, v in optimizers.items() if k not in missing["optimizers"]})  # fmt: skip
    restore_rng(state["rng"])
    return int(state["step"]), state["extra"]


def _load_into(path: Path, state: dict[str, Any], modules: Mapping[str, nn.Module],
               optimizers: Mapping[str, Stateful]) -> None:  # fmt: skip
    for name, module in modules.items():
        _load_module(path, name, module, _entry(path, state, "modules", name))
    for name, opt in optimizers.items():
        saved = _entry(path, state, "optimizers", name)
        try:
            opt.load_state_dict(saved)
        except (ValueError, KeyError, RuntimeError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"checkpoint {path} does not fit optimizer {name!r} ({reason}); {_OTHER_CONFIG}") from e


def warm_start(
    directory: str | Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Stateful],
    map_location: str | torch.device = "cpu",
) -> Path:
    """Loads the newest checkpoint of another run folder into the given objects, as a starting point.

    Unlike :func:`resume_or_start` it keeps this run's step counter, random streams and optimizer
    hyperparameters (learning rates): the loaded run only provides the weights and optimizer moments (e.g. a
    policy continued on a retrained world model).

    Args:
        directory: the other run's folder (its ``checkpoints/`` is read).
        modules: models by name; each must be in the checkpoint with the same shapes.
        optimizers: optimizers by name; each must be in the checkpoint.
        map_location: where tensors are loaded before being copied in.

    Returns:
        the checkpoint file that was loaded.

    Raises:
        FileNotFoundError: the folder holds no readable checkpoint.
        ValueError: the checkpoint does not fit the modules or optimizers.
    """
    found = load_latest_checkpoint(Path(directory) / "checkpoints", map_location)
    if found is None:
        raise FileNotFoundError(f"{directory} has no checkpoint to start from: pass a run folder whose "
                                "checkpoints/ holds step_*.safetensors")  # fmt: skip
    path, state = found
    # the moments come from the other run; the hyperparameters (learning rate, ...) stay this run's
    own = {name: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]  # type: ignore[attr-defined]
           for name, opt in optimizers.items() if hasattr(opt, "param_groups")}  # fmt: skip
    _load_into(path, state, modules, optimizers)
    for name, groups in own.items():
        for group, hyper in zip(optimizers[name].param_groups, groups, strict=True):  # type: ignore[attr-defined]
            group.update(hyper)
    return path
