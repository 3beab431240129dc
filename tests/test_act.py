"""ACT behaviour cloning: model shapes, losses, temporal ensembling, the intent-only loader, training and loading."""

import json
import math

import numpy as np
import pytest
import torch

from worldgrad.algos import train_bc as train_bc_module
from worldgrad.algos.train_bc import TrainBCConfig, train_bc
from worldgrad.data.chunks import ChunkDataset, intent_segments
from worldgrad.data.store import EpisodeStore, StoreError, StoreMeta
from worldgrad.eval.policies import make_policy
from worldgrad.models.act import (
    ACT,
    ACTConfig,
    ACTPolicy,
    act_loss,
    ensemble_action,
    ensemble_weights,
    kl_to_standard_normal,
    masked_l1,
)
from worldgrad.runtime.checkpoint import load_checkpoint

META = StoreMeta(env="pushcube", image_shape=(16, 16, 3), action_dim=3, fps=5.0)
SMALL = ACTConfig(image_size=16, chunk=4, cnn_depth=8, cnn_mults=(1, 2), d_model=32, heads=2, enc_layers=1,
                  dec_layers=1, cvae_layers=1, ff_dim=64, dropout=0.0, latent_dim=4)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def demo_episode(ep: int, length: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Frames show a white-ish block whose place encodes t and whose colour encodes the episode;
    actions are a smooth function of (episode, t), so the frame alone tells the action chunk."""
    t = np.arange(length)
    frames = np.zeros((length, 16, 16, 3), np.uint8)
    for i in t:
        r, c = (i // 4 % 4) * 4, (i % 4) * 4
        frames[i, r : r + 4, c : c + 4] = 255
        frames[i, r : r + 4, c : c + 4, ep % 3] = 120
    actions = 0.8 * np.stack([np.sin(0.4 * t + 1.5 * ep), np.cos(0.3 * t + ep), np.sin(0.2 * t - ep)], 1)
    return frames, actions.astype(np.float32)


def demo_store(path, episodes: int = 2, intent=None) -> EpisodeStore:
    store = EpisodeStore.create(path, META)
    for ep in range(episodes):
        frames, actions = demo_episode(ep)
        store.append(f"ep{ep:03d}", frames, actions, np.ones(len(frames), bool) if intent is None else intent(ep))
    return store


def small_run(tmp_path, name: str, **kw) -> TrainBCConfig:
    base = {"store": tmp_path / "store", "runs": tmp_path / "runs", "name": name, "model": SMALL, "steps": 30,
            "batch_size": 8, "lr": 1e-3, "val_fraction": 0.0, "eval_every": 10, "device": "cpu"}  # fmt: skip
    return TrainBCConfig(**{**base, **kw})


def weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# -- model and losses --------------------------------------------------------------------------------


def test_output_shapes_and_dtypes():
    torch.manual_seed(0)
    model = ACT(SMALL)
    frames = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    actions = torch.rand(5, 4, 3) * 2 - 1
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    pred, mu, logvar = model(frames, actions, mask)
    assert pred.shape == (5, 4, 3) and pred.dtype == torch.float32
    assert mu.shape == logvar.shape == (5, 4)
    loss, logs = model.loss(frames, actions, mask)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(logs) == {"loss", "l1", "kl"}
    pred, mu, logvar = model(frames)  # inference: z = 0, no CVAE
    assert mu is None and logvar is None and pred.shape == (5, 4, 3)
    chunk = model.predict(frames)
    assert chunk.abs().max() <= 1.0
    with pytest.raises(ValueError, match="uint8 frames"):
        model(torch.zeros(1, 8, 8, 3, dtype=torch.uint8))
    # the previous frame rides along on the channels
    model2 = ACT(ACTConfig(**{**SMALL.__dict__, "prev_frame": True}))
    assert model2.predict(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8)).shape == (2, 4, 3)


def test_kl_and_l1_on_hand_computed_values():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # sample 0: 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 2 - 1 - ln 2); sample 1: 0; mean over the batch
    expected = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert float(kl_to_standard_normal(mu, logvar)) == pytest.approx(expected, rel=1e-6)
    assert float(kl_to_standard_normal(torch.zeros(3, 5), torch.zeros(3, 5))) == 0.0
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    assert float(masked_l1(pred, target, torch.tensor([[True, False]]))) == pytest.approx(1.5)  # padding ignored
    assert float(masked_l1(pred, target, torch.tensor([[True, True]]))) == pytest.approx(2.5)
    loss, parts = act_loss(pred, target, torch.tensor([[True, True]]), mu, logvar, beta=10.0)
    assert float(loss) == pytest.approx(2.5 + 10 * expected, rel=1e-6) and float(parts["kl"]) == pytest.approx(expected)


# -- temporal ensembling -----------------------------------------------------------------------------


class ScriptedChunks(torch.nn.Module):
    """Stands in for ACT: returns a fixed list of chunks, one per query."""

    def __init__(self, chunks: list[list[float]]) -> None:
        super().__init__()
        self.cfg = ACTConfig(image_size=8, action_dim=1, chunk=len(chunks[0]), cnn_mults=(1,), d_model=8, heads=1)
        self.chunks, self.calls = chunks, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def predict(self, frames: torch.Tensor) -> torch.Tensor:
        out = torch.tensor(self.chunks[self.calls], dtype=torch.float32).reshape(1, -1, 1)
        self.calls += 1
        return out


def test_temporal_ensembling_matches_hand_computed_average():
    m = 0.5
    w = np.exp(-m * np.arange(3))
    assert np.allclose(ensemble_weights(3, m), w / w.sum())
    assert ensemble_action(np.array([[4.0]]), m) == pytest.approx(4.0)
    chunks = [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [100.0, 200.0, 300.0], [1000.0, 2000.0, 3000.0]]
    policy = ACTPolicy(ScriptedChunks(chunks), ensemble_m=m)  # type: ignore[arg-type]
    policy.reset(0)
    obs = np.zeros((8, 8, 3), np.uint8)
    actions = [policy.act(obs) for _ in range(4)]
    assert all(a.dtype == np.float32 and a.shape == (1,) for a in actions)
    got = [float(a[0]) for a in actions]
    e0, e1, e2 = 1.0, math.exp(-m), math.exp(-2 * m)
    expected = [
        1.0,  # step 0: only chunk 0 predicts it
        (2.0 * e0 + 10.0 * e1) / (e0 + e1),  # step 1: chunk 0 (oldest, weight w_0) and chunk 1
        (3.0 * e0 + 20.0 * e1 + 100.0 * e2) / (e0 + e1 + e2),
        (30.0 * e0 + 200.0 * e1 + 1000.0 * e2) / (e0 + e1 + e2),  # chunk 0 has run out
    ]
    assert got == pytest.approx(expected, rel=1e-6)
    # without ensembling: each chunk runs open loop, a new query every `chunk` steps
    open_loop = ACTPolicy(ScriptedChunks(chunks), ensemble_m=None)  # type: ignore[arg-type]
    assert [float(open_loop.act(obs)[0]) for _ in range(4)] == [1.0, 2.0, 3.0, 10.0]


# -- the loader --------------------------------------------------------------------------------------


def test_loader_uses_only_intent_on_frames(tmp_path):
    assert intent_segments(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 3), (4, 5), (7, 8)]
    store = EpisodeStore.create(tmp_path / "s", META)
    rng = np.random.default_rng(0)
    on = {}
    for ep in range(3):
        intent = rng.random(40) < 0.5
        on[ep] = intent
        frames = np.full((40, 16, 16, 3), 10, np.uint8)
        frames[~intent, ..., 2] = 255  # intent-off frames are marked
        actions = rng.uniform(-0.5, 0.5, (40, 3)).astype(np.float32)
        actions[~intent, 0] = 0.9  # so are their actions
        store.append(f"e{ep}", frames, actions, intent)
    data = ChunkDataset(store, chunk=5, split="all", prev_frame=True)
    assert len(data) == sum(int(v.sum()) for v in on.values())
    b = data.gather(np.arange(len(data)))
    assert b.frames.shape == (len(data), 2, 16, 16, 3) and b.actions.shape == (len(data), 5, 3)
    assert (b.frames[..., 2] != 255).all() and (b.actions[..., 0] != np.float32(0.9)).all()
    for e, t, mask in zip(b.episode, b.t, b.mask, strict=True):
        intent = on[int(e)]
        assert intent[t]
        end = t + np.argmin(np.append(intent[t:], False))  # first intent-off frame after t
        assert mask.sum() == min(5, end - t) and mask[: mask.sum()].all()
    stats = data.action_stats()
    assert stats[0][0] < 0.5 and stats[1].shape == (3,)


def test_history_ends_at_the_frame_and_pads_the_episode_start(tmp_path):
    from helpers import make_store

    store = make_store(tmp_path / "s", [30])  # frame t: green = t; action t: (0, t / 1000); intent every 3rd
    data = ChunkDataset(store, chunk=1, split="all")
    index = np.flatnonzero(np.isin(data.t, [0, 3, 27]))
    frames, actions = data.history(index, 5)
    assert frames.shape == (3, 5, 8, 8, 3) and actions.shape == (3, 4, 2) and actions.dtype == np.float32
    np.testing.assert_array_equal(frames[2, :, 0, 0, 1], [23, 24, 25, 26, 27])
    np.testing.assert_allclose(actions[2, :, 1], np.arange(23, 27) / 1000)
    np.testing.assert_array_equal(frames[1, :, 0, 0, 1], [0, 0, 1, 2, 3])  # frame 0 repeated
    np.testing.assert_allclose(actions[1, :, 1], [0.0, 0.0, 0.001, 0.002])  # nothing between the copies
    assert (frames[0, :, 0, 0, 1] == 0).all() and (actions[0] == 0).all()
    with pytest.raises(ValueError, match="history length"):
        data.history(index, 0)


def test_store_without_intent_is_a_one_line_error(tmp_path, capsys):
    from worldgrad import cli

    demo_store(tmp_path / "store", intent=lambda ep: np.zeros(16, bool))
    with pytest.raises(StoreError, match="no intent-on frames"):
        train_bc(small_run(tmp_path, "none"), progress=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["train-bc", "--store", str(tmp_path / "store"), "--runs", str(tmp_path / "runs"),
                  "--model.image-size", "16"])  # fmt: skip
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "no intent-on frames" in err and len(err.splitlines()) == 1


# -- training ----------------------------------------------------------------------------------------


def test_tiny_act_overfits_demonstrations_and_reproduces_them(tmp_path):
    demo_store(tmp_path / "store")
    cfg = small_run(tmp_path, "overfit", steps=400, batch_size=16, eval_every=400)
    result = train_bc(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "runs" / "overfit" / "metrics.jsonl").read_text().splitlines()]
    l1 = [x["bc/train/l1"] for x in lines if "bc/train/l1" in x]
    assert l1[-1] < l1[0] / 5, l1
    policy = ACTPolicy.from_checkpoint(result["path"])
    for ep in range(2):
        frames, actions = demo_episode(ep)
        policy.reset(ep)
        got = np.stack([policy.act(f) for f in frames])
        assert got.dtype == np.float32 and got.shape == actions.shape
        assert np.abs(got - actions).mean() < 0.1, np.abs(got - actions).mean()


def test_training_is_deterministic_under_a_seed(tmp_path):
    demo_store(tmp_path / "store")
    a = train_bc(small_run(tmp_path, "a"), progress=False)
    b = train_bc(small_run(tmp_path, "b"), progress=False)
    c = train_bc(small_run(tmp_path, "c", seed=1), progress=False)
    wa, wb, wc = weights(a["path"]), weights(b["path"]), weights(c["path"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_after_a_kill_continues_from_the_checkpoint(tmp_path, monkeypatch):
    demo_store(tmp_path / "store", episodes=3)
    full = train_bc(small_run(tmp_path, "full", val_fraction=0.3), progress=False)

    real_save = train_bc_module.save_training_state
    saves = []

    def save_then_die(run, step, *args, **kw):
        out = real_save(run, step, *args, **kw)
        saves.append(step)
        if step == 20:
            raise KeyboardInterrupt  # killed right after the step-20 checkpoint
        return out

    monkeypatch.setattr(train_bc_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_bc(small_run(tmp_path, "killed", val_fraction=0.3), progress=False)
    assert not (tmp_path / "runs" / "killed" / "policy.safetensors").exists()
    resumed = train_bc(small_run(tmp_path, "killed", val_fraction=0.3), progress=False)
    assert saves == [10, 20, 30]  # the rerun started at step 20
    wf, wr = weights(full["path"]), weights(resumed["path"])
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed["val"] == pytest.approx(full["val"]) and resumed["steps"] == 30
    steps = [json.loads(x)["step"] for x in (tmp_path / "runs" / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 10, 20, 20, 30, 30]  # a train and a val line per step, none twice


def test_checkpoint_spec_loads_an_act_policy(tmp_path):
    demo_store(tmp_path / "store")
    path = train_bc(small_run(tmp_path, "load", steps=10), progress=False)["path"]
    assert load_checkpoint(path)["kind"] == "act_policy"
    policy = make_policy(f"checkpoint:{path}", env=None)  # type: ignore[arg-type]
    assert isinstance(policy, ACTPolicy)
    policy.reset(1000000)
    action = policy.act(demo_episode(0)[0][0])
    assert action.shape == (3,) and action.dtype == np.float32 and np.abs(action).max() <= 1.0
    with pytest.raises(ValueError, match="wants one uint8"):
        policy.act(np.zeros((8, 8, 3), np.uint8))
