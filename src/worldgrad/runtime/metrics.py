"""Metrics to a JSONL file (always; tests and reports read it) and to TensorBoard (optional sink)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _scalar(v: Any) -> float | None:
    f = float(v.item()) if hasattr(v, "item") else float(v)
    return f if math.isfinite(f) else None  # JSON has no NaN; null marks a non-finite value


class MetricsLogger:
    """Logs ``{"step": s, "wm/train/loss": ...}`` lines; keys read ``component/split/name``."""

    def __init__(self, run_path: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(run_path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.path / "metrics.jsonl"
        self._file = open(self.jsonl, "a")  # noqa: SIM115 (closed in close())
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is slow to import

            self._tb = SummaryWriter(str(self.path / "tb"))

    def log(self, step: int, metrics: dict[str, Any], **extra: Any) -> None:
        """Writes one line with ``step``, the metrics (as floats or null) and JSON-able extras."""
        values = {k: _scalar(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **values, **extra}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(k, v, step)

    def log_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An (H, W, 3) uint8 image to TensorBoard."""
        if self._tb is not None:
            self._tb.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after ``step`` (a resumed run re-logs them, so none is duplicated)."""
        self._file.close()
        lines = self.jsonl.read_text().splitlines() if self.jsonl.exists() else []
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= step]
        tmp = self.jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept))
        tmp.replace(self.jsonl)
        self._file = open(self.jsonl, "a")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All lines of a metrics.jsonl file."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
