"""Metrics to a JSONL file (always; tests and reports read it) and to TensorBoard (optional sink).

Each ``log`` call is one flushed line, so a killed run loses at most the line being written; on resume
:meth:`MetricsLogger.truncate_after` drops what was logged after the checkpoint, so the re-run's lines
do not duplicate steps. Non-finite values are written as ``null``: JSON has no NaN, and a bare ``NaN``
token breaks strict parsers (``jq``, browsers).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worldgrad.runtime.atomic import commit_temp, temp_path

if TYPE_CHECKING:
    from worldgrad.runtime.run import RunDir


def _scalar(key: str, v: Any) -> float | None:
    try:
        f = float(v.item()) if hasattr(v, "item") else float(v)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"metric {key!r} must be a number or a one-element tensor, got {type(v).__name__}") from None
    return f if math.isfinite(f) else None


def _jsonable(v: Any) -> Any:
    """Extras as JSON: tensors and numpy values become Python values, non-finite floats null."""
    if hasattr(v, "tolist") and not isinstance(v, str):  # tensors, arrays, numpy scalars
        v = v.detach().cpu().tolist() if hasattr(v, "detach") else v.tolist()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _drop_partial_line(path: Path) -> None:
    """Cuts an unterminated last line (a write killed midway), so the next append starts a clean line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            chunk = f.read(pos - start)
            if pos == end and chunk.endswith(b"\n"):
                return
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)


class MetricsLogger:
    """Logs ``{"step": s, "wm/train/loss": ...}`` lines; keys read ``component/split/name``."""

    def __init__(self, run_dir: str | os.PathLike[str] | RunDir, tensorboard: bool = True) -> None:
        """Opens ``<run_dir>/metrics.jsonl`` for appending and, if asked, a TensorBoard writer in ``<run_dir>/tb``.

        Args:
            run_dir: the run folder (a :class:`RunDir` or its path); created if missing.
            tensorboard: also write scalars and images to TensorBoard.
        """
        self.path = Path(getattr(run_dir, "path", run_dir))
        self.path.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.path / "metrics.jsonl"
        _drop_partial_line(self.jsonl)
        self._file = open(self.jsonl, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._tb: Any = self._open_tb() if tensorboard else None

    def _open_tb(self, purge_step: int | None = None) -> Any:
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is slow to import

        return SummaryWriter(str(self.path / "tb"), purge_step=purge_step)

    def log(self, step: int, metrics: Mapping[str, Any], **extra: Any) -> None:
        """Writes one line with ``step``, the metrics (floats, or null when not finite) and JSON-able extras.

        Args:
            step: the global step the values belong to.
            metrics: scalar values (numbers, one-element tensors/arrays); these also go to TensorBoard.
            **extra: other JSON-able fields for the line only (e.g. ``phase="warmup"``).
        """
        if "step" in metrics or "step" in extra:
            raise ValueError("'step' is reserved for the step argument; rename that metric")
        values = {k: _scalar(k, v) for k, v in metrics.items()}
        line = {"step": int(step), **values, **{k: _jsonable(v) for k, v in extra.items()}}
        self._file.write(json.dumps(line, default=str, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(k, v, step)

    def log_image(self, step: int, tag: str, image: Any) -> None:
        """An ``(H, W, C)`` uint8 image (C in 1, 3, 4) to TensorBoard; a no-op without TensorBoard.

        Args:
            step: the global step.
            tag: TensorBoard tag, e.g. ``"wm/val/rollout"``.
            image: numpy array or tensor.
        """
        if hasattr(image, "detach"):
            image = image.detach().cpu().numpy()
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.dtype != np.uint8:
            raise ValueError(f"log_image wants an (H, W, 1|3|4) uint8 image, got {image.dtype} {image.shape}")
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def truncate_after(self, step: int) -> None:
        """Drops what was logged after ``step`` (a resumed run re-logs it, so no step appears twice).

        The JSONL file is rewritten atomically; TensorBoard hides the later events through ``purge_step``.

        Args:
            step: the step training resumes from (0 for a fresh start: everything logged after 0 goes).
        """
        self._file.close()
        kept: list[str] = []
        if self.jsonl.exists():
            for ln in self.jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(ln)["step"] <= step:
                        kept.append(ln)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a partial or foreign line: nothing to keep
        tmp = temp_path(self.jsonl)
        try:
            tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
            commit_temp(tmp, self.jsonl)
        finally:
            tmp.unlink(missing_ok=True)
        self._file = open(self.jsonl, "a", encoding="utf-8")  # noqa: SIM115
        if self._tb is not None:
            self._tb.close()
            self._tb = self._open_tb(purge_step=step + 1)

    def close(self) -> None:
        """Flushes and closes both sinks (safe to call twice)."""
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All lines of a metrics.jsonl file.

    An unterminated last line (a live or killed writer) is left out; a malformed complete line is
    skipped with a warning.

    Args:
        path: the ``metrics.jsonl`` file.

    Returns:
        One dict per line, in file order.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the piece after the last newline is empty or still being written
    out = []
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{i} is not a JSON line; skipped", stacklevel=2)
    return out


def train_time(metrics: str | os.PathLike[str]) -> float:
    """A training run's wall time from its ``time_s`` lines (periodic evaluations included): the last one, as
    the trainers keep their clock across resumes; a clock that went back (a run written before they did, resumed)
    adds what it had reached before."""
    total, last = 0.0, 0.0
    for row in read_metrics(metrics):
        t = row.get("time_s")
        if t is not None:
            if t < last:
                total += last
            last = t
    return total + last
