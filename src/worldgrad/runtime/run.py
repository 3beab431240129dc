"""Run folders: one per run, holding the resolved config, checkpoints, metrics and TensorBoard logs.

runs/<name>/config.json          the resolved config (a re-run must match it to resume)
runs/<name>/checkpoints/         step_000001200.safetensors ...
runs/<name>/metrics.jsonl        one JSON line per logged step
runs/<name>/tb/                  TensorBoard event files
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldgrad.runtime.atomic import save_json_atomic
from worldgrad.runtime.checkpoint import latest_checkpoint


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-able dict of a (nested) config dataclass: tuples become lists, paths strings."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix]


@dataclass(frozen=True)
class RunDir:
    """A run folder. Build it with :meth:`create`."""

    path: Path

    @classmethod
    def create(cls, root: str | os.PathLike[str], name: str, config: Any, resume: bool = True) -> RunDir:
        """Creates ``root/name`` and saves ``config``; or reopens it to resume.

        Raises:
            ValueError: the folder holds a run with another config, or exists and ``resume`` is False.
        """
        path = Path(root) / name
        cfg = config_to_dict(config)
        saved = path / "config.json"
        if saved.exists():
            if not resume:
                raise ValueError(f"run folder {path} exists; pass another run name or resume it")
            old = json.loads(saved.read_text())
            diff = _diff_keys(old, cfg)
            if diff:
                raise ValueError(
                    f"run folder {path} was made with another config (differs in {', '.join(diff[:5])}); "
                    "use a new run name, or the same config to resume"
                )
        else:
            path.mkdir(parents=True, exist_ok=True)
            save_json_atomic(saved, cfg)
        return cls(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuilds a (nested, frozen) config dataclass from :func:`config_to_dict` output."""
    import typing

    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)  # type: ignore[arg-type]
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        elif hint is Path:
            value = Path(value)
        kwargs[f.name] = value
    return cls(**kwargs)
