"""Atomic small-file writes (temp file, fsync, rename): readers never see half a file. No torch import."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def save_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` through a temp file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
