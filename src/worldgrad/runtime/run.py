"""Run folders: one per run, holding the resolved config, checkpoints, metrics and TensorBoard logs.

runs/<name>/config.json          the resolved config (a re-run must match it to resume)
runs/<name>/checkpoints/         step_000001200.safetensors ...
runs/<name>/metrics.jsonl        one JSON line per logged step
runs/<name>/tb/                  TensorBoard event files

The config check exists because resuming a checkpoint under another config silently trains a different
experiment (or fails deep inside ``load_state_dict``); naming the differing keys up front is cheaper.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldgrad.runtime.atomic import save_json_atomic
from worldgrad.runtime.checkpoint import latest_checkpoint

__all__ = ["RunDir", "config_from_dict", "config_to_dict", "save_json_atomic"]


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able dict of a (nested) config dataclass: tuples become lists, paths (and other objects) strings.

    Args:
        cfg: a dataclass instance, or a mapping (taken as already resolved).

    Returns:
        The dict exactly as ``config.json`` stores it.
    """
    if isinstance(cfg, Mapping):
        data: Any = dict(cfg)
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        data = dataclasses.asdict(cfg)
    else:
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return json.loads(json.dumps(data, default=str))


_ABSENT = object()  # a key one of two configs lacks (unlike an explicit null)


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs (lists compare whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [(prefix, a, b)]


def _short(v: Any, width: int = 40) -> str:
    if v is _ABSENT:
        return "absent"
    s = json.dumps(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def _defaults(config: Any) -> dict[str, Any]:
    """The flattened defaults of a config dataclass (empty for mappings or classes without full defaults)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return {}
    try:
        return dict(_flatten(config_to_dict(type(config)())))
    except TypeError:
        return {}


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(d, dict):
        return [(prefix, d)]
    return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else k)]


def _new_default(d: tuple[str, Any, Any], defaults: dict[str, Any]) -> bool:
    key, old, new = d
    return old is _ABSENT and key in defaults and defaults[key] == new


def _ignored(key: str, ignore: Iterable[str]) -> bool:
    return any(key == i or key.startswith(i + ".") for i in ignore)


@dataclass(frozen=True)
class RunDir:
    """A run folder. Build it with :meth:`create`; the paths below are created lazily by their writers."""

    path: Path

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        name: str,
        config: Any,
        resume: bool = True,
        ignore: Iterable[str] = (),
    ) -> RunDir:
        """Creates ``root/name`` and saves ``config``; or reopens it to resume.

        Args:
            root: the folder holding all runs.
            name: this run's folder name.
            config: the resolved config (dataclass or mapping), saved as ``config.json``.
            resume: reopen an existing folder (its config must match); False refuses an existing run.
            ignore: dotted keys (``"device"``, ``"train.steps"``) allowed to differ on resume, e.g. a
                longer schedule; when only those differ, ``config.json`` is rewritten with the new values.

        Returns:
            The run folder.

        Raises:
            ValueError: the folder holds a run with another config, or exists and ``resume`` is False.
        """
        if not name or name in (".", ".."):
            raise ValueError(f"run name {name!r} is not a folder name; pass --name <something>")
        path = Path(root) / name
        cfg = config_to_dict(config)
        saved = path / "config.json"
        if saved.exists():
            if not resume:
                raise ValueError(f"run folder {path} exists; pass another run name or resume it")
            try:
                old = json.loads(saved.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{saved} is not valid JSON ({e}); fix or delete it, or use a new run name") from e
            diff = _diff(old, cfg)
            # a field added to the config after the run was made: the run used its default behaviour
            defaults = _defaults(config)
            blocking = [d for d in diff if not _ignored(d[0], ignore) and not _new_default(d, defaults)]
            if blocking:
                shown = ", ".join(f"{k} ({_short(a)} -> {_short(b)})" for k, a, b in blocking[:5])
                more = f" and {len(blocking) - 5} more" if len(blocking) > 5 else ""
                raise ValueError(
                    f"run folder {path} was made with another config (differs in {shown}{more}); "
                    "use a new run name, or the same config to resume"
                )
            if diff:
                save_json_atomic(saved, cfg)
        else:
            path.mkdir(parents=True, exist_ok=True)
            save_json_atomic(saved, cfg)
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def config(self) -> dict[str, Any]:
        """The saved ``config.json``."""
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def latest_checkpoint(self) -> Path | None:
        """The newest valid checkpoint in :attr:`checkpoints`, or None."""
        return latest_checkpoint(self.checkpoints)


def _coerce(hint: Any, value: Any) -> Any:
    """Undoes :func:`config_to_dict` for one field: nested dataclasses, tuples and paths (optional ones too)."""
    if value is None:
        return None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return config_from_dict(hint, value)
    if hint is Path:
        return Path(value)
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            if arm is Path or typing.get_origin(arm) is tuple or dataclasses.is_dataclass(arm):
                return _coerce(arm, value)
    return value


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuilds a (nested, frozen) config dataclass from :func:`config_to_dict` output.

    Args:
        cls: the config dataclass.
        data: its dict; keys it lacks keep their defaults, unknown keys are ignored.

    Returns:
        An instance of ``cls``.
    """
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init and f.name in data]
    return cls(**{name: _coerce(hints[name], data[name]) for name in fields})
