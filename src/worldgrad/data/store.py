"""The episode store: play data on disk, crash-safe to append, memory-mapped to read.

Layout (one folder per episode, plain ``.npy`` files so reads are zero-copy memory maps)::

    store/
      meta.json                    env name, image shape, action bounds, fps, env config
      episodes/<key>/
        frames.npy                 (T, H, W, 3) uint8   frame t, seen before action t
        actions.npy                (T, A) float32       action taken at frame t
        intent.npy                 (T,) bool            operator's "doing the task" button
        info.json                  seed, operator, length, ...
        labels/<name>.npy          (T, ...) per-frame labels written later (e.g. learned rewards)
        sim/<name>.npy             simulator ground truth (coverage, poses): EVALUATION ONLY
      .tmp/                        episodes being written

An episode is written into ``.tmp/`` and renamed into ``episodes/`` in one ``rename``: a collector
killed at any point leaves every completed episode intact and no half-written one visible. Labels are
replaced file by file with the same write-then-rename rule.

Why not zarr/HDF5: one directory rename is the simplest commit a POSIX file system makes atomic, and
``np.load(mmap_mode="r")`` reads windows without decoding; a dependency would add neither.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from worldgrad.runtime.atomic import save_json_atomic

FORMAT = "worldgrad-episodes"
VERSION = 1
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class StoreError(ValueError):
    """A store that is missing, malformed, or does not match what was asked of it."""


@dataclass(frozen=True)
class StoreMeta:
    """What every episode of a store shares."""

    env: str
    image_shape: tuple[int, int, int]
    action_dim: int
    fps: float
    action_low: float = -1.0
    action_high: float = 1.0
    env_config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self), "image_shape": list(self.image_shape)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StoreMeta:
        if d.get("format") != FORMAT:
            raise StoreError(f"meta.json is not a worldgrad episode store (format={d.get('format')!r})")
        if d.get("version") != VERSION:
            raise StoreError(f"store version {d.get('version')} is not supported; this worldgrad reads {VERSION}")
        return cls(
            env=d["env"],
            image_shape=tuple(d["image_shape"]),  # type: ignore[arg-type]
            action_dim=int(d["action_dim"]),
            fps=float(d["fps"]),
            action_low=float(d["action_low"]),
            action_high=float(d["action_high"]),
            env_config=dict(d.get("env_config", {})),
        )

    def check_compatible(self, other: StoreMeta, path: Path) -> None:
        """Raises if ``other`` (what a writer wants) differs from this store's meta."""
        for name in ("env", "image_shape", "action_dim", "fps", "action_low", "action_high"):
            have, want = getattr(self, name), getattr(other, name)
            if have != want:
                raise StoreError(
                    f"store {path} holds {name}={have} but {want} was requested; "
                    f"write to a new store or request {name}={have}"
                )


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Episode:
    """One stored episode. Arrays are read-only memory maps, loaded on first access."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = path.name

    def _load(self, name: str) -> np.ndarray:
        return np.load(self.path / name, mmap_mode="r", allow_pickle=False)

    @cached_property
    def frames(self) -> np.ndarray:
        """(T, H, W, 3) uint8."""
        return self._load("frames.npy")

    @cached_property
    def actions(self) -> np.ndarray:
        """(T, A) float32; action t is taken after seeing frame t."""
        return self._load("actions.npy")

    @cached_property
    def intent(self) -> np.ndarray:
        """(T,) bool."""
        return self._load("intent.npy")

    @cached_property
    def info(self) -> dict[str, Any]:
        return json.loads((self.path / "info.json").read_text())

    def __len__(self) -> int:
        return int(self.info["length"])

    def label_names(self) -> list[str]:
        d = self.path / "labels"
        return sorted(p.stem for p in d.glob("*.npy")) if d.is_dir() else []

    def label(self, name: str) -> np.ndarray:
        """A per-frame label written by ``EpisodeStore.write_label`` (T, ...)."""
        p = self.path / "labels" / f"{name}.npy"
        if not p.exists():
            raise StoreError(
                f"episode {self.key} has no label {name!r} (has {self.label_names()}); run the labelling command first"
            )
        return np.load(p, mmap_mode="r", allow_pickle=False)

    def sim(self, name: str) -> np.ndarray:
        """Simulator ground truth recorded at collection (e.g. ``coverage``).

        For evaluation only: training code must never call this, or every result is meaningless.
        """
        p = self.path / "sim" / f"{name}.npy"
        if not p.exists():
            raise StoreError(f"episode {self.key} has no simulator record {name!r}; it was not recorded")
        return np.load(p, mmap_mode="r", allow_pickle=False)


class EpisodeStore:
    """An on-disk collection of episodes sharing one :class:`StoreMeta`.

    Several processes may append to one store at once (each episode key is written once).
    """

    def __init__(self, path: Path, meta: StoreMeta) -> None:
        self.path = path
        self.meta = meta
        self._episodes: dict[str, Episode] = {}

    # -- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EpisodeStore:
        """Opens an existing store; raises :class:`StoreError` with a fix if there is none."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise StoreError(
                f"no episode store at {path} (missing meta.json); "
                "create one with `worldgrad collect --out DIR` or check the path"
            )
        try:
            meta = StoreMeta.from_json(json.loads(meta_path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise StoreError(f"{meta_path} is unreadable ({e}); the store is damaged, re-collect it") from e
        return cls(path, meta)

    @classmethod
    def create(cls, path: str | os.PathLike[str], meta: StoreMeta) -> EpisodeStore:
        """Opens the store at ``path`` for appending, creating it if needed.

        An existing store must have the same meta; otherwise a :class:`StoreError` names the mismatch.
        """
        path = Path(path)
        if (path / "meta.json").exists():
            store = cls.open(path)
            store.meta.check_compatible(meta, path)
            return store
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"{path} exists, is not empty and is not an episode store; choose another --out")
        (path / "episodes").mkdir(parents=True, exist_ok=True)
        (path / ".tmp").mkdir(exist_ok=True)
        save_json_atomic(path / "meta.json", meta.to_json())
        return cls(path, meta)

    # -- reading -------------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Keys of the completed episodes, sorted (a stable order for splits and sampling)."""
        d = self.path / "episodes"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def episode(self, key: str) -> Episode:
        if key not in self._episodes:
            p = self.path / "episodes" / key
            if not p.is_dir():
                raise StoreError(f"store {self.path} has no episode {key!r}")
            self._episodes[key] = Episode(p)
        return self._episodes[key]

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[Episode]:
        return (self.episode(k) for k in self.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.path / "episodes" / key).is_dir()

    def num_frames(self) -> int:
        return sum(len(ep) for ep in self)

    # -- writing -------------------------------------------------------------------------------------

    def append(
        self,
        key: str,
        frames: np.ndarray,
        actions: np.ndarray,
        intent: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
        sim: Mapping[str, np.ndarray] | None = None,
    ) -> Episode:
        """Writes one complete episode atomically.

        Args:
            key: unique episode name (letters, digits, ``_.-``); an existing key raises.
            frames: (T, H, W, 3) uint8 matching the store's image shape.
            actions: (T, A) float, within the store's action bounds.
            intent: (T,) bool, default all False.
            info: JSON-able episode metadata (seed, operator, ...).
            sim: simulator ground truth per frame, for evaluation only.
        Returns:
            The stored :class:`Episode`.
        """
        frames, actions, intent = self._validate(key, frames, actions, intent)
        tmp = self.path / ".tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            _write_npy(tmp / "frames.npy", frames)
            _write_npy(tmp / "actions.npy", actions)
            _write_npy(tmp / "intent.npy", intent)
            if sim:
                (tmp / "sim").mkdir()
                for name, values in sim.items():
                    _write_npy(tmp / "sim" / f"{name}.npy", np.asarray(values))
            save_json_atomic(tmp / "info.json", {**(info or {}), "length": len(frames)})
            _fsync_dir(tmp)
            final = self.path / "episodes" / key
            if final.exists():
                raise StoreError(f"episode {key!r} already exists in {self.path}; keys are written once")
            os.rename(tmp, final)  # the commit point
            _fsync_dir(final.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.episode(key)

    def write_label(self, key: str, name: str, values: np.ndarray) -> None:
        """Writes (or replaces) a per-frame label of one episode atomically; idempotent."""
        if not _KEY_RE.match(name):
            raise StoreError(f"label name {name!r} is invalid; use letters, digits and _.-")
        ep = self.episode(key)
        values = np.asarray(values)
        if values.shape[:1] != (len(ep),):
            raise StoreError(
                f"label {name!r} for episode {key} has {values.shape[:1]} rows, the episode has {len(ep)} frames"
            )
        d = ep.path / "labels"
        d.mkdir(exist_ok=True)
        tmp = d / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        _write_npy(tmp, values)
        os.replace(tmp, d / f"{name}.npy")

    def clean_tmp(self) -> int:
        """Removes leftovers of killed writers (whose process is gone). Returns how many."""
        removed = 0
        tmp = self.path / ".tmp"
        for p in tmp.iterdir() if tmp.is_dir() else []:
            parts = p.name.split(".")
            pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
            if pid is None or not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        return removed

    def _validate(
        self, key: str, frames: np.ndarray, actions: np.ndarray, intent: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not _KEY_RE.match(key):
            raise StoreError(f"episode key {key!r} is invalid; use 1-128 letters, digits and _.-")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != self.meta.image_shape:
            raise StoreError(
                f"frames must be uint8 (T, {', '.join(map(str, self.meta.image_shape))}) for store {self.path}, "
                f"got {frames.dtype} {frames.shape}; resize the images or use a store of that size"
            )
        n = len(frames)
        if n < 1:
            raise StoreError(f"episode {key!r} is empty; an episode needs at least one frame")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (n, self.meta.action_dim):
            raise StoreError(
                f"actions must have shape ({n}, {self.meta.action_dim}), got {actions.shape}; "
                "one action per frame, of the store's action dimension"
            )
        if not np.all(np.isfinite(actions)):
            raise StoreError(f"episode {key!r} has non-finite actions; refusing to store them")
        lo, hi = self.meta.action_low, self.meta.action_high
        if actions.min() < lo - 1e-6 or actions.max() > hi + 1e-6:
            raise StoreError(f"episode {key!r} has actions outside [{lo}, {hi}]; clip or rescale them first")
        intent = np.zeros(n, bool) if intent is None else np.asarray(intent, dtype=bool)
        if intent.shape != (n,):
            raise StoreError(f"intent must have shape ({n},), got {intent.shape}")
        return np.ascontiguousarray(frames), np.ascontiguousarray(actions), np.ascontiguousarray(intent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
