"""Atomic checkpoints: one safetensors file holding the tensors and, in its metadata, a JSON skeleton.

A training state is a tree (dicts, lists) of tensors, numpy arrays and JSON values, e.g.
``{"model": m.state_dict(), "optim": o.state_dict(), "step": 1200, "rng": capture_rng()}``. Tensors go
into safetensors under their path (``model/conv.weight``, ``optim/state/0/exp_avg``); everything else stays
in a JSON skeleton stored in the same file's metadata, so one ``os.replace`` commits both and a reader
never sees new tensors with an old step. A CRC32 per tensor (also in the metadata) turns silent data
corruption into a :class:`CheckpointError`.

What round-trips: tensor dtypes (bf16 included), numpy arrays with their dtype, ``int``/``float``/``bool``/
``None``/``str``, int dict keys (optimizer states), and a state dict's ``_metadata`` (module versions).
What changes: tuples come back as lists (torch optimizers accept lists for ``betas``), numpy scalars as
Python scalars, mappings as plain dicts (``OrderedDict`` for state dicts that carried ``_metadata``).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from worldgrad.runtime.atomic import commit_temp, temp_path

_SKELETON_KEY = "worldgrad"
_CRC_KEY = "worldgrad_crc32"
_STEP_RE = re.compile(r"^step_(\d{9,})\.safetensors$")
# our temp files, and the ones safetensors itself writes first (Rust ``tempfile``: ``.tmp`` + 6 characters)
_TEMP_RE = re.compile(r"^\.(step_\d{9,}\.safetensors\.[0-9a-f]{8}\.tmp|tmp[A-Za-z0-9]{6})$")
_STALE_TEMP_S = 600.0  # a temp file untouched this long belongs to a killed writer, not a live one
# numpy dtypes stored as same-typed tensors (readable by any safetensors tool); others go as raw bytes
_PLAIN_NUMPY = {
    np.dtype(n) for n in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt, or not a worldgrad checkpoint)."""


class CheckpointWarning(UserWarning):
    """An unreadable checkpoint was skipped while looking for the newest valid one."""


def _crc(t: torch.Tensor) -> int:
    return zlib.crc32(t.reshape(-1).view(torch.uint8).numpy())


def _cpu_copy(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """A contiguous CPU tensor safe to serialize: storage shared with an earlier tensor (tied weights) is cloned."""
    t = t.detach()
    if t.device.type != "cpu":
        return t.to("cpu").contiguous()
    ptr = t.untyped_storage().data_ptr()
    if ptr in seen:
        return t.clone(memory_format=torch.contiguous_format)
    seen.add(ptr)
    return t.contiguous()


def _flatten(node: Any, name: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    """Moves tensors/arrays out of ``node`` into ``tensors`` (keyed by their path); returns the JSON skeleton."""
    where = name or "the root"
    if isinstance(node, torch.Tensor | np.ndarray):
        if name in tensors:
            raise ValueError(f"two checkpoint entries map to the tensor name {name!r}; avoid '/' in keys")
        if isinstance(node, torch.Tensor):
            tensors[name] = _cpu_copy(node, seen)
            return {"__tensor__": name}
        if node.dtype.hasobject or node.dtype.fields is not None:
            raise TypeError(f"cannot checkpoint a numpy array of dtype {node.dtype} at {where}")
        arr = np.array(node, order="C", copy=True)
        if arr.dtype in _PLAIN_NUMPY and arr.dtype.isnative:
            tensors[name] = torch.from_numpy(arr)
            return {"__ndarray__": name}
        tensors[name] = torch.from_numpy(arr.reshape(-1).view(np.uint8))
        return {"__ndarray__": name, "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(node, Mapping):
        keys: dict[str, str] = {}
        items: dict[str, Any] = {}
        for k, v in node.items():
            if isinstance(k, bool) or not isinstance(k, str | int):
                raise TypeError(f"checkpoint keys must be str or int, got {k!r} at {where}")
            key = str(k)
            if key in keys:
                raise ValueError(f"keys {key!r} and {k!r} both appear at {where}; a checkpoint cannot tell them apart")
            keys[key] = "int" if isinstance(k, int) else "str"
            items[key] = _flatten(v, f"{name}/{key}" if name else key, tensors, seen)
        out = {"__dict__": items, "__keys__": keys}
        meta = getattr(node, "_metadata", None)  # nn.Module.state_dict() versions, used by _load_from_state_dict
        if isinstance(meta, Mapping):
            out["__meta__"] = json.loads(json.dumps(meta))
        return out
    if isinstance(node, list | tuple):
        return [_flatten(v, f"{name}/{i}" if name else str(i), tensors, seen) for i, v in enumerate(node)]
    if isinstance(node, np.generic):
        return _flatten(node.item(), name, tensors, seen)
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"cannot checkpoint a {type(node).__name__} at {where}; use tensors, arrays or JSON values")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor], device: torch.device) -> Any:
    if isinstance(node, dict):
        if "__tensor__" in node:
            t = tensors[node["__tensor__"]]
            return t if device.type == "cpu" else t.to(device)
        if "__ndarray__" in node:
            arr = tensors[node["__ndarray__"]].numpy()
            return arr.view(np.dtype(node["dtype"])).reshape(node["shape"]) if "dtype" in node else arr
        items = {
            (int(k) if node["__keys__"][k] == "int" else k): _unflatten(v, tensors, device)
            for k, v in node["__dict__"].items()
        }
        if "__meta__" not in node:
            return items
        tree: OrderedDict[Any, Any] = OrderedDict(items)
        tree._metadata = node["__meta__"]  # type: ignore[attr-defined]
        return tree
    if isinstance(node, list):
        return [_unflatten(v, tensors, device) for v in node]
    return node


def _corrupt(path: Path, why: object) -> CheckpointError:
    reason = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt ({reason}); delete it to resume from the previous checkpoint"
    )


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any], keep: int | None = None) -> Path:
    """Writes ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then one rename.

    A crash at any point leaves either the old file or the new one, never a mix; a killed writer can
    leave a hidden temp file, which later saves with ``keep`` remove once it is stale.

    Args:
        path: destination ``.safetensors`` file (its folder is created).
        state: tree of dicts/lists of tensors (any device, any dtype), numpy arrays and JSON values.
        keep: if set (>= 1), keep only the ``keep`` newest ``step_*.safetensors`` files in that folder;
            the file just written is never removed, even when older-numbered than stale ones.

    Returns:
        The written path.

    Raises:
        TypeError: ``state`` holds something that is neither a tensor, an array nor a JSON value.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"a checkpoint state must be a dict, got {type(state).__name__}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (the checkpoint just written), got {keep}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors, set())
    metadata = {
        _SKELETON_KEY: json.dumps(skeleton),
        _CRC_KEY: json.dumps({k: _crc(t) for k, t in tensors.items()}),
    }
    tmp = temp_path(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        commit_temp(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when something failed
    if keep is not None:
        _prune(path, keep)
    return path


def _step_files(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step_*.safetensors`` files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = ((_STEP_RE.match(p.name), p) for p in directory.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def _prune(current: Path, keep: int) -> None:
    files = [p for _, p in _step_files(current.parent) if p != current]
    kept = keep - 1 if _STEP_RE.match(current.name) else keep
    for old in files[: max(0, len(files) - kept)]:
        old.unlink(missing_ok=True)
    now = time.time()
    for p in current.parent.iterdir():
        if _TEMP_RE.match(p.name):
            try:
                if now - p.stat().st_mtime > _STALE_TEMP_S:
                    p.unlink()
            except FileNotFoundError:
                pass


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint`, checking every tensor's CRC.

    Args:
        path: the ``.safetensors`` file.
        map_location: device for the tensors (numpy arrays always stay on the CPU).

    Returns:
        The saved tree (see the module docstring for what changes type).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt or not a worldgrad checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path (runs keep theirs in checkpoints/)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if _SKELETON_KEY not in meta:
            raise CheckpointError(
                f"{path} is a safetensors file but not a worldgrad checkpoint (no skeleton metadata); "
                "pass a file written by save_checkpoint"
            )
        skeleton = json.loads(meta[_SKELETON_KEY])
        crcs: dict[str, int] = json.loads(meta.get(_CRC_KEY, "{}"))  # older files carry no CRCs
        tensors = load_file(str(path))
    except (SafetensorError, json.JSONDecodeError) as e:
        raise _corrupt(path, e) from e
    for key, crc in crcs.items():
        if key not in tensors or _crc(tensors[key]) != crc:
            raise _corrupt(path, f"tensor {key} fails its CRC check")
    try:
        return _unflatten(skeleton, tensors, torch.device(map_location))
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(path, f"skeleton does not match the tensors: {type(e).__name__} {e}") from e


def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """The file name of step ``step``: ``directory/step_{step:09d}.safetensors`` (sorts by step).

    Args:
        directory: the checkpoint folder.
        step: a non-negative training step.

    Returns:
        The path (not created).
    """
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return Path(directory) / f"step_{step:09d}.safetensors"


def load_latest_checkpoint(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """Loads the newest readable ``step_*.safetensors`` in ``directory``.

    Unreadable files (e.g. a disk filled mid-copy) are skipped with a :class:`CheckpointWarning`, so a
    broken newest file never blocks a resume; temp files of killed writers are not candidates.

    Args:
        directory: the checkpoint folder (may not exist).
        map_location: device for the tensors.

    Returns:
        ``(path, state)``, or None when no valid checkpoint exists.
    """
    for _, path in reversed(_step_files(Path(directory))):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}", CheckpointWarning, stacklevel=2)
    return None


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest valid ``step_*.safetensors`` in ``directory`` (each candidate is fully read and checked).

    Args:
        directory: the checkpoint folder (may not exist).

    Returns:
        Its path, or None when there is none; see :func:`load_latest_checkpoint`.
    """
    found = load_latest_checkpoint(directory)
    return None if found is None else found[0]


def capture_rng() -> dict[str, Any]:
    """The state of every global RNG (python, numpy legacy, torch CPU, and CUDA once it is in use).

    Returns:
        A tree storable in a checkpoint; pass it to :func:`restore_rng`.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": np.asarray(keys, dtype=np.uint32),
        "numpy_extra": [int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    # an uninitialized CUDA has drawn nothing yet (its seeded state is recreated by seeding), and
    # querying it would create a context on every GPU
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`: the next random numbers equal those drawn after the capture.

    Args:
        state: a :func:`capture_rng` tree, possibly loaded from a checkpoint on any device.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, cached = state["numpy_extra"]
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):  # a resume may see fewer GPUs
            torch.cuda.set_rng_state(s.cpu(), i)
