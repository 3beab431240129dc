"""Atomic checkpoints: one safetensors file holding the tensors and, in its metadata, a JSON skeleton.

A training state is a tree (dicts, lists) of tensors, numpy arrays and JSON values, e.g.
``{"model": m.state_dict(), "optim": o.state_dict(), "step": 1200, "rng": capture_rng()}``. Tensors go
into safetensors under their path (``model/conv.weight``); everything else stays in a JSON skeleton stored
in the same file's metadata, so one ``os.replace`` commits both. Tuples come back as lists (torch
optimizers accept lists for ``betas``).
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

_STEP_RE = re.compile(r"^step_(\d{9})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, or not a worldgrad checkpoint)."""


def _flatten(node: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Moves tensors/arrays out of ``node`` into ``tensors``; returns the JSON skeleton."""
    if isinstance(node, torch.Tensor):
        # clone: tied weights share storage, which safetensors refuses to save twice
        tensors[prefix] = node.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(node, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(node).copy())
        return {"__ndarray__": prefix}
    if isinstance(node, dict):
        if not all(isinstance(k, str | int) for k in node):
            raise TypeError(f"checkpoint keys must be str or int, got {list(node)[:3]} at {prefix or 'root'}")
        keys = {str(k): ("int" if isinstance(k, int) else "str") for k in node}
        return {
            "__dict__": {str(k): _flatten(v, f"{prefix}/{k}" if prefix else str(k), tensors) for k, v in node.items()},
            "__keys__": keys,
        }
    if isinstance(node, list | tuple):
        return [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(node)]
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"cannot checkpoint a {type(node).__name__} at {prefix or 'root'}")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__ndarray__" in node:
            return tensors[node["__ndarray__"]].numpy()
        keys = node["__keys__"]
        return {(int(k) if keys[k] == "int" else k): _unflatten(v, tensors) for k, v in node["__dict__"].items()}
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    return node


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], keep: int | None = None) -> Path:
    """Writes ``state`` to ``path`` atomically (temp file, fsync, rename).

    Args:
        path: destination ``.safetensors`` file.
        state: tree of tensors, numpy arrays and JSON values.
        keep: if set, prune all but the ``keep`` newest ``step_*.safetensors`` files in that folder.
    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"worldgrad": json.dumps(skeleton)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if keep is not None:
        steps = sorted(p for p in path.parent.iterdir() if _STEP_RE.match(p.name))
        for old in steps[: max(0, len(steps) - keep)]:
            old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path or the run folder")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(map_location))
        skeleton = json.loads(meta["worldgrad"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); "
            "delete it to resume from the previous checkpoint"
        ) from e
    return _unflatten(skeleton, tensors)


def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    return Path(directory) / f"step_{step:09d}.safetensors"


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest readable ``step_*.safetensors`` in ``directory`` (corrupt ones are skipped with a warning)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for path in sorted((p for p in directory.iterdir() if _STEP_RE.match(p.name)), reverse=True):
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}", stacklevel=2)
            continue
        return path
    return None


def capture_rng() -> dict[str, Any]:
    """The state of every global RNG (python, numpy legacy, torch CPU and CUDA)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": json.loads(json.dumps(random.getstate())),
        "numpy": np.asarray(keys, dtype=np.uint32),
        "numpy_extra": [int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, cached = state["numpy_extra"]
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
