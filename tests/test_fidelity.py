import numpy as np
import pytest

from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.store import EpisodeStore
from worldgrad.eval.fidelity import copy_last_baseline, fidelity_table, pose_errors, psnr, segment, ssim

CENTROID_Y = (3600 * 15 + 2700 * 75) / 6300  # the T's area centroid in its body frame (gym-pusht add_tee)


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    out = tmp_path_factory.mktemp("fid") / "store"
    collect(CollectConfig(out=out, operator="expert", frames=120, episode_len=120), progress=False)
    store = EpisodeStore.open(out)
    return store.episode(store.keys()[0])


def test_segmentation_reads_the_simulator_pose_from_pixels(episode):
    frames = episode.frames[::3]
    seg = segment(frames)
    block, agent = episode.sim("block_pose")[::3], episode.sim("agent_pos")[::3]
    th = block[:, 2]
    centroid = np.stack([block[:, 0] - np.sin(th) * CENTROID_Y, block[:, 1] + np.cos(th) * CENTROID_Y], axis=1)
    assert seg.t_found.all() and seg.agent_found.all()
    t_err = np.linalg.norm(seg.t_xy - centroid, axis=1)
    ang_err = np.degrees(np.abs(np.angle(np.exp(1j * (seg.t_angle - th)))))
    a_err = np.linalg.norm(seg.agent_xy - agent, axis=1)
    assert np.median(t_err) < 4 and t_err.max() < 10  # 8 board px per image pixel at 64x64
    assert np.median(ang_err) < 8 and ang_err.max() < 20
    assert np.median(a_err) < 4 and a_err.max() < 8


def test_a_lost_object_is_an_infinite_error_not_a_centroid(episode):
    real = episode.frames[:4]
    blank = np.full_like(real, 255)
    errs = pose_errors(segment(real), segment(blank))
    assert np.isinf(errs["t_pos_err_px"]).all() and np.isinf(errs["agent_err_px"]).all()
    smeared = np.broadcast_to(real.mean(axis=(1, 2), keepdims=True).astype(np.uint8), real.shape)
    assert not segment(smeared).t_found.any()


def test_fidelity_table_of_a_perfect_and_of_the_copy_last_prediction(episode):
    frames = episode.frames[:30].reshape(2, 15, *episode.frames.shape[1:])
    perfect = fidelity_table(frames, frames.copy(), (1, 5, 15))
    assert perfect[5]["psnr"] == 100 and perfect[5]["ssim"] == pytest.approx(1.0)
    assert perfect[15]["t_pos_err_px"] == 0 and perfect[15]["agent_err_px"] == 0 and perfect[1]["t_missing"] == 0
    copy = fidelity_table(frames, copy_last_baseline(frames[:, 0], 15), (1, 15))
    assert copy[1]["psnr"] == 100 and copy[15]["agent_err_px"] > 0  # the expert moves the agent
    with pytest.raises(ValueError, match="horizons"):
        fidelity_table(frames, frames, (16,))


def test_psnr_and_ssim_order_degradations():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    small = np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
    large = np.clip(img.astype(int) + rng.integers(-60, 61, img.shape), 0, 255).astype(np.uint8)
    assert psnr(img, small)[0] > psnr(img, large)[0] > 0
    assert 1 >= ssim(img, img)[0] > ssim(img, small)[0] > ssim(img, large)[0]
