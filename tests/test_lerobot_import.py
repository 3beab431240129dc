import json

import cv2
import imageio.v2 as imageio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from worldgrad.data.lerobot import ImportConfig, import_lerobot
from worldgrad.data.store import EpisodeStore


def make_dataset(root, video: bool, lengths=(12, 9)) -> list[np.ndarray]:
    """A tiny LeRobot v2.0 dataset: a moving white square on black, absolute actions in [0, 512]."""
    info = {
        "codebase_version": "v2.0", "robot_type": "2d pointer", "fps": 10, "total_episodes": len(lengths),
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "observation.image": {"dtype": "video" if video else "image", "shape": [96, 96, 3]},
            "action": {"dtype": "float32", "shape": [2]},
            "next.success": {"dtype": "bool", "shape": [1]},
        },
    }  # fmt: skip
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    all_frames = []
    for e, n in enumerate(lengths):
        frames = np.zeros((n, 96, 96, 3), np.uint8)
        for t in range(n):
            frames[t, 20:50, 5 * t : 5 * t + 30] = 255
        all_frames.append(frames)
        actions = np.stack([np.linspace(0, 512, n), np.full(n, 100.0 * e)], axis=1).astype(np.float32)
        columns = {
            "action": actions.tolist(),
            "frame_index": list(range(n)),
            "next.success": [t == n - 1 for t in range(n)],
        }
        if video:
            path = root / info["video_path"].format(episode_chunk=0, video_key="observation.image", episode_index=e)
            path.parent.mkdir(parents=True, exist_ok=True)
            imageio.mimsave(path, list(frames), fps=10, codec="libx264", quality=10, macro_block_size=1)
        else:
            columns["observation.image"] = [
                {"bytes": cv2.imencode(".png", f)[1].tobytes(), "path": None} for f in frames
            ]
        path = root / info["data_path"].format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
    return all_frames


@pytest.mark.parametrize("video", [True, False])
def test_import_reads_frames_actions_and_intent(tmp_path, video):
    src = make_dataset(tmp_path / "ds", video)
    cfg = ImportConfig(src=tmp_path / "ds", out=tmp_path / "store", image_size=32, intent_key="next.success")
    assert import_lerobot(cfg, progress=False)["new_frames"] == 21
    store = EpisodeStore.open(tmp_path / "store")
    assert store.keys() == ["lerobot000000", "lerobot000001"] and store.meta.fps == 10.0
    ep = store.episode("lerobot000001")
    assert ep.frames.shape == (9, 32, 32, 3) and ep.intent.tolist() == [False] * 8 + [True]
    expected = cv2.resize(src[1][4], (32, 32), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ep.frames[4].astype(int) - expected).mean() < (6 if video else 0.01)
    assert ep.actions.min() == -1.0 and ep.actions.max() == 1.0  # per-dimension min/max -> [-1, 1]
    assert store.meta.env_config["action_max"] == [512.0, 100.0]
    assert import_lerobot(cfg, progress=False)["new_frames"] == 0  # resumable: nothing twice


def test_import_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meta/info\.json"):
        import_lerobot(ImportConfig(src=tmp_path, out=tmp_path / "s"), progress=False)
    make_dataset(tmp_path / "ds", video=False)
    with pytest.raises(ValueError, match=r"feature 'observation\.images\.top' is not in the dataset"):
        import_lerobot(ImportConfig(src=tmp_path / "ds", out=tmp_path / "s", image_key="observation.images.top"))
