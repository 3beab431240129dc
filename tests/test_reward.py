import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import worldgrad.algos.reward_labels as reward_labels
import worldgrad.algos.train_reward as train_reward_module
from worldgrad.algos.reward_labels import LabelRewardConfig, label_store
from worldgrad.algos.train_reward import TrainRewardConfig, load_goal_reward, train_reward
from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.ranking import RankingSampler
from worldgrad.data.store import Episode, EpisodeStore, StoreError
from worldgrad.envs.pusht import PushTConfig, render_goal_image
from worldgrad.models.encoders import ConvEncoderConfig
from worldgrad.models.image import to_model
from worldgrad.models.reward import RankingReward, RewardModelConfig, bradley_terry_loss
from worldgrad.runtime.checkpoint import load_checkpoint
from worldgrad.runtime.metrics import read_metrics

SIZE = 16
MODEL = RewardModelConfig(image_size=SIZE, encoder=ConvEncoderConfig(depth=4, out_dim=16), hidden=32)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "play"
    cfg = CollectConfig(out=out, operator="explorer:0.5,expert:0.5", frames=400, episode_len=100,
                        pusht=PushTConfig(image_size=SIZE))  # fmt: skip
    collect(cfg, progress=False)
    return out


def test_bradley_terry_loss_on_hand_computed_values():
    f_i, f_j = torch.tensor([2.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])
    later = torch.tensor([True, False, True])
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(2.0)), np.log(2.0)])
    assert bradley_terry_loss(f_i, f_j, later).item() == pytest.approx(expected, rel=1e-6)


def test_tied_pairs_are_pulled_together_and_ranked_pairs_keep_their_bradley_terry_weight():
    from worldgrad.models.image import changed_pixels
    from worldgrad.models.reward import ranking_loss

    f_i, f_j = torch.tensor([2.0, 2.0, 0.0, 1.5]), torch.tensor([0.0, 0.0, 0.0, 0.5])
    later = torch.tensor([True, False, True, True])
    tie = torch.tensor([False, False, False, True])
    bt = bradley_terry_loss(f_i[:3], f_j[:3], later[:3]).item()
    assert ranking_loss(f_i, f_j, later, tie, tie_weight=2.0).item() == pytest.approx(2.0 * 1.0 + 0.75 * bt, rel=1e-6)
    assert ranking_loss(f_i, f_j, later, None).item() == pytest.approx(bradley_terry_loss(f_i, f_j, later).item())
    assert ranking_loss(f_i, f_j, later, torch.ones(4, dtype=torch.bool)).item() == pytest.approx(
        ((f_i - f_j) ** 2).mean().item()
    )
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[0, :2, :3] = 200  # 6 pixels change in the first pair, none in the second
    b[1, 0, 0] = 10  # below the colour threshold
    assert changed_pixels(a, b).tolist() == [6, 0]


def test_swapping_i_and_j_flips_the_logit():
    torch.manual_seed(0)
    model = RankingReward(MODEL)
    s_i, s_j, start, goal = torch.rand(4, 3, 3, SIZE, SIZE) * 2 - 1
    logit_ij = model(s_i, start, goal) - model(s_j, start, goal)
    logit_ji = model(s_j, start, goal) - model(s_i, start, goal)
    assert torch.allclose(logit_ij, -logit_ji)
    loss_ij, _ = model.compute_loss(start, goal, s_i, s_j, torch.tensor([True, False, True]))
    loss_ji, _ = model.compute_loss(start, goal, s_j, s_i, torch.tensor([False, True, False]))
    assert loss_ij.item() == pytest.approx(loss_ji.item(), rel=1e-5)


def test_loader_reads_frames_only(store_path, monkeypatch):
    def forbidden(self):
        raise AssertionError("the ranking loader must not read actions, intent or simulator records")

    for name in ("actions", "intent"):
        monkeypatch.setattr(Episode, name, property(forbidden))
    monkeypatch.setattr(Episode, "sim", forbidden)
    batch = RankingSampler(EpisodeStore.open(store_path), "all", 4, 20).sample(32, np.random.default_rng(0))
    assert set(vars(batch)) == {"start", "goal", "frame_i", "frame_j", "i_later"}
    assert batch.frame_i.shape == (32, SIZE, SIZE, 3) and batch.i_later.dtype == bool


def test_loss_falls_on_a_fixed_batch(store_path):
    torch.manual_seed(0)
    model = RankingReward(MODEL)
    b = RankingSampler(EpisodeStore.open(store_path), "all", 4, 20).sample(32, np.random.default_rng(0))
    args = [to_model(x) for x in (b.start, b.goal, b.frame_i, b.frame_j)] + [torch.as_tensor(b.i_later)]
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.compute_loss(*args)[0].item()
    for _ in range(150):
        loss, logs = model.compute_loss(*args)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.2 * first and logs["accuracy"] > 0.95


def config(store_path, tmp_path, steps: int) -> TrainRewardConfig:
    return TrainRewardConfig(store=store_path, runs=tmp_path, name="r", model=MODEL, steps=steps, batch_size=16,
                             eval_every=5, norm_frames=256)  # fmt: skip


def test_resume_after_interruption_equals_uninterrupted(store_path, tmp_path, monkeypatch):
    goal = render_goal_image(PushTConfig(image_size=SIZE))
    train_reward(config(store_path, tmp_path / "a", 10), goal, progress=False)
    real_validate, calls = train_reward_module.validate, {"n": 0}

    def killed_after_first_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_reward_module, "validate", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_reward(config(store_path, tmp_path / "b", 10), goal, progress=False)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "b" / "r" / "checkpoints").iterdir()] == ["step_000000005.safetensors"]
    train_reward(config(store_path, tmp_path / "b", 10), goal, progress=False)
    a = load_checkpoint(tmp_path / "a" / "r" / "checkpoints" / "step_000000010.safetensors")["modules"]["model"]
    b = load_checkpoint(tmp_path / "b" / "r" / "checkpoints" / "step_000000010.safetensors")["modules"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # one wall-time clock across the kill: the resumed run's step-10 time goes on from the step-5 checkpoint's
    times = [x["time_s"] for x in read_metrics(tmp_path / "b" / "r" / "metrics.jsonl") if "time_s" in x]
    before = load_checkpoint(tmp_path / "b" / "r" / "checkpoints" / "step_000000005.safetensors")["extra"]["time_s"]
    assert times and times[-1] > before > 0
    with pytest.raises(ValueError, match="differs in lr"):
        train_reward(replace(config(store_path, tmp_path / "b", 10), lr=0.5), goal, progress=False)
    train_reward(config(store_path, tmp_path / "b", 12), goal, progress=False)  # a longer schedule extends the run
    assert (tmp_path / "b" / "r" / "checkpoints" / "step_000000012.safetensors").exists()


def test_train_label_idempotent_and_crash_safe(store_path, tmp_path, monkeypatch):
    goal = render_goal_image(PushTConfig(image_size=SIZE))
    result = train_reward(config(store_path, tmp_path, 10), goal, progress=False)
    reward = load_goal_reward(result["path"])
    frames = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    reward(frames * 2 - 1, frames.detach() * 2 - 1).sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0  # differentiable w.r.t. the image

    cfg = LabelRewardConfig(reward=result["path"], store=store_path, name="rtest")
    calls = {"n": 0}
    real = reward_labels.episode_rewards

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(reward_labels, "episode_rewards", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        label_store(cfg, progress=False)
    monkeypatch.undo()
    store = EpisodeStore.open(store_path)
    assert sum("rtest" in ep.label_names() for ep in store) == 1  # one finished, nothing half-written
    assert label_store(cfg, progress=False) == {"written": 3, "skipped": 1}
    first = {ep.key: np.array(ep.label("rtest")) for ep in store}
    assert label_store(cfg, progress=False) == {"written": 0, "skipped": 4}
    (store.episode(store.keys()[0]).path / "labels" / "rtest.json").unlink()
    assert label_store(cfg, progress=False) == {"written": 1, "skipped": 3}
    for ep in EpisodeStore.open(store_path):
        assert np.allclose(ep.label("rtest"), first[ep.key]) and ep.label("rtest").shape == (len(ep),)
        assert json.loads((ep.path / "labels" / "rtest.json").read_text())["start_offset"] == 16
    # the lookahead label: the reward plus the episode's best gain over the next frames, relabelled when it changes
    ahead = replace(cfg, lookahead=3, lookahead_weight=0.5)
    assert label_store(ahead, progress=False) == {"written": 4, "skipped": 0}
    for ep in EpisodeStore.open(store_path):
        want = reward_labels.lookahead_labels(first[ep.key], 3, 0.5)
        assert np.allclose(ep.label("rtest"), want) and (want >= first[ep.key]).all()
    contact = replace(cfg, contact=8, contact_weight=2.0, contact_pixels=4)  # + the contact term (tiny frames)
    assert label_store(contact, progress=False) == {"written": 4, "skipped": 0}
    touched = 0.0
    for ep in EpisodeStore.open(store_path):
        term = reward_labels.contact_labels(np.asarray(ep.frames), 8, min_pixels=4)
        assert np.allclose(ep.label("rtest"), first[ep.key] + 2.0 * term)
        touched += term.sum()
    assert touched > 0  # the fixture's operators do move the T
    two_sided = replace(contact, contact_past=True)  # a new stamp: every episode is relabelled
    assert label_store(two_sided, progress=False) == {"written": 4, "skipped": 0}
    for ep in EpisodeStore.open(store_path):
        term = reward_labels.contact_labels(np.asarray(ep.frames), 8, min_pixels=4, past=True)
        assert np.allclose(ep.label("rtest"), first[ep.key] + 2.0 * term)
    assert label_store(two_sided, progress=False) == {"written": 0, "skipped": 4}
    # the contact term alone: no reward model is read (the path may point nowhere)
    alone = replace(two_sided, contact_only=True, reward=tmp_path / "none.safetensors")
    assert label_store(alone, progress=False) == {"written": 4, "skipped": 0}
    for ep in EpisodeStore.open(store_path):
        term = reward_labels.contact_labels(np.asarray(ep.frames), 8, min_pixels=4, past=True)
        assert np.allclose(ep.label("rtest"), 2.0 * term)
    with pytest.raises(ValueError, match="--contact-only"):
        reward_labels.LabelRewardConfig(contact_only=True)
    pushes = replace(alone, motion_weight=3.0)  # + 3 where the T moved into the frame
    assert label_store(pushes, progress=False) == {"written": 4, "skipped": 0}
    for ep in EpisodeStore.open(store_path):
        frames = np.asarray(ep.frames)
        term = reward_labels.contact_labels(frames, 8, min_pixels=4, past=True)
        assert np.allclose(ep.label("rtest"), 2.0 * term + 3.0 * reward_labels.motion_labels(frames, 4))
    with pytest.raises(ValueError, match="--motion-weight"):
        reward_labels.LabelRewardConfig(motion_weight=-1.0)
    # toward the goal: the motion term takes the sign of the stored reward label's change into the frame
    label_store(replace(cfg, name="rsrc"), progress=False)  # the reward label it reads: as ``first``
    toward = replace(pushes, motion_toward_goal=True, motion_label="rsrc")
    assert label_store(toward, progress=False) == {"written": 4, "skipped": 0}
    signs = []
    for ep in EpisodeStore.open(store_path):
        frames = np.asarray(ep.frames)
        term = reward_labels.contact_labels(frames, 8, min_pixels=4, past=True)
        moved = reward_labels.motion_labels(frames, 4)
        sign = np.sign(np.diff(first[ep.key], prepend=first[ep.key][:1]))
        assert np.allclose(ep.label("rtest"), 2.0 * term + 3.0 * moved * sign)
        signs.append(sign[moved > 0])
    assert {-1.0, 1.0} <= set(np.concatenate(signs).tolist())  # pushes both ways in the fixture
    assert label_store(toward, progress=False) == {"written": 0, "skipped": 4}
    relabelled = replace(cfg, name="rsrc", start_offset=cfg.start_offset + 1)  # a new reward label ...
    label_store(relabelled, progress=False)
    assert label_store(toward, progress=False) == {"written": 4, "skipped": 0}  # ... relabels the signed term
    with pytest.raises(ValueError, match="--motion-weight W > 0"):
        reward_labels.LabelRewardConfig(motion_toward_goal=True)


def test_lookahead_labels_on_hand_computed_values():
    r = np.array([0, 0, 1, 3, 2, 0, 0], np.float32)
    np.testing.assert_allclose(reward_labels.lookahead_labels(r, 2, 1.0), [1, 3, 3, 3, 2, 0, 0])
    np.testing.assert_allclose(reward_labels.lookahead_labels(r, 2, 0.5), [0.5, 1.5, 2, 3, 2, 0, 0])
    np.testing.assert_allclose(reward_labels.lookahead_labels(r, 0, 1.0), r)  # off: the reward itself


def test_lookahead_labels_never_fall_while_the_reward_rises():
    rising = np.array([0, 0, 0, 1, 2, 3, 3], np.float32)  # a push: the reward climbs, then holds
    for w in (0.25, 0.5, 1.0):
        labels = reward_labels.lookahead_labels(rising, 4, w)
        assert np.all(np.diff(labels) >= 0), (w, labels)
        assert labels[1] > rising[1]  # and it pays before the push, the approach cue
    with pytest.raises(ValueError, match="must lie in \\(0, 1\\]"):
        reward_labels.lookahead_labels(rising, 4, 3.0)  # would fall during the push: 9, 9, 9, 7, 5, 3, 3
    with pytest.raises(ValueError, match="--lookahead-weight 1"):
        reward_labels.LabelRewardConfig(lookahead=8, lookahead_weight=2.0)


def test_contact_labels_rise_toward_the_next_object_move_and_ignore_the_agent_alone():
    frames = np.zeros((20, 16, 16, 3), np.uint8)
    for t in range(20):  # the "agent": a 2x2 dot walking right, 4-8 changed pixels per step, under the threshold
        frames[t, 0:2, t % 14 : t % 14 + 2] = 255
    frames[11:, 8:16, 0:8] = 200  # the "object" moves between frames 10 and 11 (64 changed pixels)
    labels = reward_labels.contact_labels(frames, horizon=6, gamma=0.5, min_pixels=40)
    assert labels.dtype == np.float32 and labels.shape == (20,)
    assert labels[10] == 1.0 and labels[9] == 0.5 and labels[5] == 0.5**5  # k = 0, 1, 5 steps before the move
    assert labels[4] == 0.0  # 6 steps away: beyond the horizon
    assert np.all(labels[11:] == 0.0)  # the agent walking on alone is no contact
    assert np.all(np.diff(labels[5:11]) > 0)
    with pytest.raises(ValueError, match="--contact-gamma"):
        reward_labels.LabelRewardConfig(contact=8, contact_gamma=1.5)
    two_sided = reward_labels.contact_labels(frames, horizon=6, gamma=0.5, min_pixels=40, past=True)
    np.testing.assert_array_equal(two_sided[:11], labels[:11])  # before the move: as the one-sided label
    assert two_sided[11] == 1.0 and two_sided[12] == 0.5 and two_sided[16] == 0.5**5  # 0, 1, 5 steps after it
    assert np.all(two_sided[17:] == 0.0)  # 6 steps after: beyond the horizon
    still = frames[:10]  # an episode in which the object never moves: no contact on either side
    assert not reward_labels.contact_labels(still, horizon=6, past=True).any()
    moved = reward_labels.motion_labels(frames, min_pixels=40)  # the frame the object moved into, alone
    assert moved.dtype == np.float32 and np.flatnonzero(moved).tolist() == [11]


def test_wrong_image_size_is_a_clear_error(store_path, tmp_path):
    cfg = replace(config(store_path, tmp_path, 2), model=replace(MODEL, image_size=32))
    with pytest.raises(StoreError, match=r"pass --model\.image-size 16"):
        train_reward(cfg, np.zeros((32, 32, 3), np.uint8), progress=False)


def test_goal_reward_averages_over_goal_images():
    from worldgrad.envs.pusht import render_goal_images
    from worldgrad.models.reward import GoalReward

    torch.manual_seed(0)
    model = RankingReward(MODEL).eval()
    goals = render_goal_images(PushTConfig(image_size=SIZE), n=3)
    assert goals.shape == (3, SIZE, SIZE, 3) and not np.array_equal(goals[0], goals[1])
    frames = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    starts = frames[::-1].copy()
    with torch.no_grad():
        joint = GoalReward(model, goals, mean=1.0, std=2.0)(frames, starts)
        e_t, e_s = model.embed(to_model(frames)), model.embed(to_model(starts))
        e_goal = model.embed(to_model(goals)).mean(0, keepdim=True).expand_as(e_t)
        expected = (model.energy_from_embeddings(e_t, e_s, e_goal) - 1.0) / 2.0
    assert torch.allclose(joint, expected, atol=1e-5)
    # a goal set of K identical images is the single goal image
    with torch.no_grad():
        same = GoalReward(model, np.repeat(goals[:1], 4, 0))(frames, starts)
        one = GoalReward(model, goals[0])(frames, starts)
    assert torch.allclose(same, one, atol=1e-5)


def test_goal_sets_end_each_window(tmp_path):
    from helpers import make_store

    store = make_store(tmp_path / "s", [30, 40])
    b = RankingSampler(store, "all", 6, 12, goal_frames=3, goal_stride=2).sample(64, np.random.default_rng(0))
    assert b.goal.shape == (64, 3, 8, 8, 3)
    t = lambda x: x[..., 0, 0, 1].astype(int)  # noqa: E731  (frame index encoded in the pixels)
    t_goal, t_start = t(b.goal), t(b.start)
    assert (t_goal[:, 0] - t_goal[:, 1] <= 2).all() and (t_goal[:, 1] >= t_goal[:, 2]).all()
    assert (t_goal[:, 2] >= t_start).all() and (t_goal[:, 0] - t_start <= 11).all()
    assert (b.goal[:, :, 0, 0, 0] == b.start[:, None, 0, 0, 0]).all()  # one episode per window
    assert ((t(b.frame_i) > t(b.frame_j)) == b.i_later).all()


def test_change_weighting_favours_windows_where_the_scene_changed(tmp_path):
    from helpers import META

    store = EpisodeStore.create(tmp_path / "s", META)
    still = np.zeros((50, 8, 8, 3), np.uint8)
    moving = np.zeros((50, 8, 8, 3), np.uint8)
    moving[:, :, :, 0] = (np.arange(50) * 5)[:, None, None]  # the whole image changes over time
    for key, frames in (("still", still), ("moving", moving)):
        store.append(key, frames, np.zeros((50, 2), np.float32))

    def share_moving(k: int) -> float:
        b = RankingSampler(store, "all", 4, 12, change_candidates=k).sample(400, np.random.default_rng(0))
        return float((b.goal[:, 0, 0, 0, 0] != b.start[:, 0, 0, 0]).mean())

    assert 0.35 < share_moving(1) < 0.65 and share_moving(8) > 0.9


class _PixelReward:
    """A stand-in reward computed from the pixels by a given function (GoalReward's call signature)."""

    goal_images = np.zeros((1, 64, 64, 3), np.uint8)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, frames, starts):
        return torch.as_tensor([self.fn(f) for f in np.asarray(frames)], dtype=torch.float32)


def test_agent_position_check_tells_a_parking_reward_from_a_task_reward():
    from worldgrad.envs.pusht import render_goal_image
    from worldgrad.eval.reward import agent_position_effect

    def agent_in_centre(f):  # pays for the blue agent in the middle of the board, whatever the T does
        c = f[24:40, 24:40].astype(int)
        return float((c[..., 2] - c[..., 0] > 60).mean())

    def grey(f):
        return np.abs(f.astype(int) - (143, 163, 184)).sum(-1) < 30

    goal = grey(render_goal_image())

    def t_on_goal(f):  # pays for the grey T covering the goal's T, whatever the agent does (but hide it)
        return 10.0 * float((grey(f) & goal).sum() / goal.sum())

    maps, parking = agent_position_effect(_PixelReward(agent_in_centre), poses=1)
    assert maps.shape == (1, 9, 9)
    assert parking["agent_on_goal_gain"] > 0.02 and parking["t_to_goal_gain"] == 0
    _, task = agent_position_effect(_PixelReward(t_on_goal), poses=1)
    assert task["t_to_goal_gain"] > 5 and task["agent_range_vs_t_gain"] < 0.5 and abs(task["agent_on_goal_gain"]) < 1


def test_agent_position_check_measures_what_approaching_the_t_is_worth():
    from worldgrad.eval.reward import agent_position_effect

    def centroid(mask):
        ys, xs = np.nonzero(mask)
        return np.array([xs.mean(), ys.mean()]) if len(xs) else np.zeros(2)

    def near_t(f):  # pays for the blue agent close to the grey T, wherever both are
        f = f.astype(int)
        agent = f[..., 2] - f[..., 0] > 60
        t = np.abs(f - (143, 163, 184)).sum(-1) < 30
        return -float(np.hypot(*(centroid(agent) - centroid(t))))

    _, e = agent_position_effect(_PixelReward(near_t), poses=2)
    assert e["agent_near_t_gain"] > 5  # image pixels closer, on average
    _, far = agent_position_effect(_PixelReward(lambda f: -near_t(f)), poses=2)
    assert far["agent_near_t_gain"] < -5
