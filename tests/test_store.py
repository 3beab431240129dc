import os

import numpy as np
import pytest

from helpers import META, make_store, synthetic_episode
from worldgrad.data.store import EpisodeStore, StoreError, StoreMeta


def test_roundtrip_and_memory_mapped_reads(tmp_path):
    store = make_store(tmp_path / "s", [5, 7])
    again = EpisodeStore.open(tmp_path / "s")
    assert again.keys() == ["ep0000", "ep0001"] and again.num_frames() == 12
    ep = again.episode("ep0001")
    frames, actions, intent = synthetic_episode(1, 7)
    assert isinstance(ep.frames, np.memmap) and not ep.frames.flags.writeable
    assert np.array_equal(ep.frames, frames) and np.array_equal(ep.actions, actions)
    assert np.array_equal(ep.intent, intent) and ep.info["ep"] == 1 and len(ep) == 7
    assert again.meta == store.meta


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match=r"no episode store at .*worldgrad collect"):
        EpisodeStore.open(tmp_path / "nowhere")


def test_wrong_image_size_requested_from_existing_store(tmp_path):
    make_store(tmp_path / "s", [3])
    other = StoreMeta(env="pusht", image_shape=(16, 16, 3), action_dim=2, fps=5.0)
    with pytest.raises(StoreError, match=r"image_shape=\(8, 8, 3\) but \(16, 16, 3\) was requested"):
        EpisodeStore.create(tmp_path / "s", other)


def test_bad_episodes_are_refused_and_nothing_is_written(tmp_path):
    store = make_store(tmp_path / "s", [3])
    frames, actions, intent = synthetic_episode(0, 4)
    with pytest.raises(StoreError, match="uint8"):
        store.append("x", frames[:, :4], actions, intent)
    with pytest.raises(StoreError, match="actions must have shape"):
        store.append("x", frames, actions[:3], intent)
    with pytest.raises(StoreError, match="outside"):
        store.append("x", frames, actions * 1000, intent)
    with pytest.raises(StoreError, match="non-finite"):
        store.append("x", frames, np.full_like(actions, np.nan), intent)
    with pytest.raises(StoreError, match="already exists"):
        store.append("ep0000", frames, actions, intent)
    with pytest.raises(StoreError, match="invalid"):
        store.append("../evil", frames, actions, intent)
    assert store.keys() == ["ep0000"] and not os.listdir(tmp_path / "s" / ".tmp")


def test_non_store_directory_is_not_overwritten(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "precious.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        EpisodeStore.create(tmp_path / "d", META)


def test_crash_before_commit_leaves_no_episode(tmp_path, monkeypatch):
    store = make_store(tmp_path / "s", [3])
    frames, actions, intent = synthetic_episode(1, 3)

    def crash(*args, **kwargs):
        raise OSError("simulated crash at the commit point")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        store.append("ep0001", frames, actions, intent)
    monkeypatch.undo()
    assert EpisodeStore.open(tmp_path / "s").keys() == ["ep0000"]


def test_clean_tmp_removes_leftovers_of_dead_writers(tmp_path):
    store = make_store(tmp_path / "s", [3])
    dead = tmp_path / "s" / ".tmp" / "ep9.999999999.abcd1234"
    alive = tmp_path / "s" / ".tmp" / f"ep8.{os.getpid()}.abcd1234"
    dead.mkdir()
    alive.mkdir()
    assert store.clean_tmp() == 1 and not dead.exists() and alive.exists()


def test_labels_are_written_atomically_and_idempotently(tmp_path):
    store = make_store(tmp_path / "s", [4])
    values = np.arange(4, dtype=np.float32)
    store.write_label("ep0000", "reward", values)
    store.write_label("ep0000", "reward", values)
    ep = EpisodeStore.open(tmp_path / "s").episode("ep0000")
    assert ep.label_names() == ["reward"] and np.array_equal(ep.label("reward"), values)
    with pytest.raises(StoreError, match="rows"):
        store.write_label("ep0000", "reward", values[:3])
    with pytest.raises(StoreError, match="no label 'value'"):
        ep.label("value")
    assert sorted(os.listdir(ep.path / "labels")) == ["reward.npy"]
