"""Import real-robot recordings in the LeRobot dataset layout (v2.x) into an episode store.

LeRobot v2.x keeps ``meta/info.json`` (fps, features, path templates), one parquet file per episode
(``data/chunk-XXX/episode_XXXXXX.parquet``) and, for video features, one mp4 per episode and camera
(``videos/chunk-XXX/<key>/episode_XXXXXX.mp4``, often AV1: imageio-ffmpeg's ffmpeg decodes it).
Image features stored inside the parquet (PNG bytes) work too. Actions are rescaled to [-1, 1] with
the dataset's per-dimension min/max; the scale is saved in the store meta so a policy's output can be
mapped back to robot units. Needs ``pyarrow`` (``pip install worldgrad[lerobot]``).

Written here rather than through the ``lerobot`` package because that package requires torchvision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from worldgrad.data.store import EpisodeStore, StoreError, StoreMeta


@dataclass(frozen=True)
class ImportConfig:
    """Import a LeRobot (v2.x) dataset folder into an episode store."""

    src: Path = Path("lerobot_dataset")
    """dataset root (the folder holding meta/info.json)"""
    out: Path = Path("data/imported")
    """episode store to write (appended to if it exists)"""
    image_key: str = "observation.image"
    """camera feature to import"""
    action_key: str = "action"
    """action feature"""
    intent_key: str = ""
    """optional boolean per-frame feature used as the intent flag (empty: none)"""
    image_size: int = 64
    """frames are resized (INTER_AREA) to this square size"""


def _require_pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("importing LeRobot data needs pyarrow; run `pip install 'worldgrad[lerobot]'`") from None
    return pq


def _read_info(src: Path) -> dict[str, Any]:
    path = src / "meta" / "info.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --src must be a LeRobot dataset root (with meta/info.json)")
    info = json.loads(path.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v2"):
        raise ValueError(f"LeRobot dataset version {version!r} is not supported; this importer reads v2.x")
    return info


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    return cv2.resize(np.ascontiguousarray(frame[..., :3]), (size, size), interpolation=cv2.INTER_AREA)


def _video_frames(path: Path, size: int) -> np.ndarray:
    import imageio.v2 as imageio

    if not path.is_file():
        raise FileNotFoundError(f"video {path} is missing from the dataset")
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([_resize(f, size) for f in reader])


def _parquet_images(column: list[Any], size: int) -> np.ndarray:
    frames = []
    for cell in column:
        data = cell["bytes"] if isinstance(cell, dict) else cell
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        frames.append(_resize(image[..., ::-1], size))  # cv2 decodes BGR
    return np.stack(frames)


def import_lerobot(cfg: ImportConfig, progress: bool = True) -> dict[str, float]:
    """Imports every episode of ``cfg.src``; episodes already in the store are skipped (resumable)."""
    pq = _require_pyarrow()
    info = _read_info(cfg.src)
    features = info["features"]
    for key in (cfg.image_key, cfg.action_key, *([cfg.intent_key] if cfg.intent_key else [])):
        if key not in features:
            raise ValueError(f"feature {key!r} is not in the dataset; it has {', '.join(sorted(features))}")
    n_episodes, chunk = int(info["total_episodes"]), int(info.get("chunks_size", 1000))
    data_path = lambda e: cfg.src / info["data_path"].format(episode_chunk=e // chunk, episode_index=e)  # noqa: E731
    tables = [pq.read_table(data_path(e)) for e in range(n_episodes)]
    actions = [np.asarray(t.column(cfg.action_key).to_pylist(), dtype=np.float64) for t in tables]
    all_actions = np.concatenate(actions)
    lo, hi = all_actions.min(axis=0), all_actions.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    meta = StoreMeta(
        env=f"lerobot:{info.get('robot_type', 'robot')}",
        image_shape=(cfg.image_size, cfg.image_size, 3),
        action_dim=all_actions.shape[1],
        fps=float(info["fps"]),
        env_config={"source": str(cfg.src), "action_min": lo.tolist(), "action_max": hi.tolist()},
    )
    store = EpisodeStore.create(cfg.out, meta)
    is_video = features[cfg.image_key].get("dtype") == "video"
    frames_written = 0
    for e in tqdm(range(n_episodes), desc="import", disable=not progress):
        key = f"lerobot{e:06d}"
        if key in store:
            continue
        if is_video:
            video = info["video_path"].format(episode_chunk=e // chunk, video_key=cfg.image_key, episode_index=e)
            frames = _video_frames(cfg.src / video, cfg.image_size)
        else:
            frames = _parquet_images(tables[e].column(cfg.image_key).to_pylist(), cfg.image_size)
        n = len(actions[e])
        if len(frames) < n:
            raise StoreError(f"episode {e}: video has {len(frames)} frames for {n} actions; the dataset is damaged")
        norm = np.clip(2.0 * (actions[e] - lo) / scale - 1.0, -1.0, 1.0).astype(np.float32)
        intent = (
            np.asarray(tables[e].column(cfg.intent_key).to_pylist(), dtype=bool).reshape(n) if cfg.intent_key else None
        )
        store.append(key, frames[:n], norm, intent, info={"source_episode": e})
        frames_written += n
    return {"episodes": float(len(store)), "new_frames": float(frames_written)}
