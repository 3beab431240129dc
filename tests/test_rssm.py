import dataclasses
import math

import numpy as np
import pytest
import torch

from worldgrad.algos.refit_head import RefitHeadConfig, refit_head
from worldgrad.algos.reward_labels import LabelRewardConfig, label_store
from worldgrad.algos.train_local import (
    LocalFinetuner,
    TrainLocalConfig,
    export_local_model,
    load_local_model,
    predict_open_loop,
    train_local,
)
from worldgrad.algos.train_reward import TrainRewardConfig, train_reward
from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.sampler import WindowSampler
from worldgrad.data.store import EpisodeStore, StoreError
from worldgrad.envs.pusht import PushTConfig, render_goal_image
from worldgrad.eval.local import EvalLocalConfig, evaluate_local, feature_probe
from worldgrad.models.encoders import ConvEncoderConfig
from worldgrad.models.reward import RewardModelConfig
from worldgrad.models.rssm import (
    RSSM,
    RSSMConfig,
    categorical_kl,
    kl_balance,
    motion_weights,
    straight_through_sample,
    symexp,
    symlog,
    two_hot,
    twohot_mean,
    unimix_logits,
)

SIZE = 16
CFG = RSSMConfig(image_size=SIZE, cnn_depth=8, deter=32, hidden=32, stoch=4, classes=4)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("rssm")
    out = root / "play"
    collect(CollectConfig(out=out, operator="explorer:0.5,expert:0.5", frames=400, episode_len=100,
                          pusht=PushTConfig(image_size=SIZE)), progress=False)  # fmt: skip
    rm = RewardModelConfig(image_size=SIZE, encoder=ConvEncoderConfig(depth=4, out_dim=8))
    rcfg = TrainRewardConfig(store=out, runs=root, name="r", steps=4, eval_every=4, batch_size=8, norm_frames=64,
                             max_window=20, device="cpu", model=rm)  # fmt: skip
    path = train_reward(rcfg, render_goal_image(PushTConfig(image_size=SIZE)), progress=False)["path"]
    label_store(LabelRewardConfig(reward=path, store=out))
    return out


def test_shapes_of_the_api():
    torch.manual_seed(0)
    m = RSSM(CFG)
    frames = torch.randint(0, 256, (3, 5, SIZE, SIZE, 3), dtype=torch.uint8)
    actions = torch.rand(3, 5, 2) * 2 - 1
    embed = m.encode(frames)
    assert embed.shape == (3, 5, m.embed_dim)
    posts, priors = m.observe(embed, actions)
    assert posts.deter.shape == (3, 5, 32) and posts.stoch.shape == (3, 5, 16) and priors.logits.shape == (3, 5, 4, 4)
    s = m.step_prior(m.initial_state(3), actions[:, 0])
    f = m.features(s)
    assert f.shape == (3, m.feature_dim) and m.reward(f).shape == (3,) and m.decode(f).shape == (3, SIZE, SIZE, 3)
    # sampled posteriors are one-hot per latent; prior probabilities sum to one per latent
    post = m.observe_step(s, actions[:, 1], embed[:, 1])
    torch.testing.assert_close(post.stoch.view(3, 4, 4).sum(-1), torch.ones(3, 4))
    assert set(post.stoch.detach().round(decimals=5).unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(s.stoch.view(3, 4, 4).sum(-1), torch.ones(3, 4))


def test_spatial_softmax_keypoints_locate_a_bright_pixel_and_join_the_embedding():
    from worldgrad.models.rssm import SpatialSoftmax

    kp = SpatialSoftmax(2, 2)
    with torch.no_grad():  # keypoint k follows input channel k, sharply
        kp.proj.weight.copy_(torch.eye(2)[:, :, None, None])
        kp.proj.bias.zero_()
        kp.log_temperature.fill_(-3.0)
    x = torch.zeros(1, 2, 9, 9)
    x[0, 0, 2, 6] = x[0, 1, 8, 0] = 1.0  # (row, col): y = -0.5, x = 0.5; y = 1, x = -1
    torch.testing.assert_close(kp(x), torch.tensor([[0.5, -1.0, -0.5, 1.0]]), atol=1e-3, rtol=0)
    m = RSSM(dataclasses.replace(CFG, keypoints=3))
    assert m.embed_dim == RSSM(CFG).embed_dim + 6
    frames = torch.randint(0, 256, (2, 4, SIZE, SIZE, 3), dtype=torch.uint8)
    embed = m.encode(frames)
    assert embed.shape == (2, 4, m.embed_dim) and embed[..., -6:].abs().max() <= 1
    with pytest.raises(ValueError, match="keypoints must be >= 0"):
        dataclasses.replace(CFG, keypoints=-1)
    with pytest.raises(ValueError, match=r"keypoint_weight 1\.0 needs keypoints > 0"):
        dataclasses.replace(CFG, keypoint_weight=1.0)
    with pytest.raises(ValueError, match="keypoint_temperature must be > 0"):
        dataclasses.replace(CFG, keypoints=2, keypoint_temperature=0.0)
    sharp = RSSM(dataclasses.replace(CFG, keypoints=2, keypoint_temperature=0.1)).keypoint_net
    assert sharp is not None and abs(sharp.log_temperature.exp().item() - 0.1) < 1e-6


def test_motion_weights_single_out_what_moved():
    frames = torch.zeros(1, 3, 4, 4, 3)
    frames[0, 1, 0, 0] = 1.0  # a pixel lights up at t = 1, and goes dark again at t = 2
    frames[0, :, 3, 3, 2] = 0.7  # a static coloured pixel
    w = motion_weights(frames, 10.0)
    assert w.shape == (1, 3, 4, 4, 1)
    assert (w[0, 0] == 1).all()  # nothing to compare the first frame with
    assert w[0, 1, 0, 0, 0] == 11.0 and w[0, 2, 0, 0, 0] == 11.0 and w[0, 1:, 3, 3, 0].eq(1).all()
    assert w.sum() == 48 + 20
    # the weighted loss counts a missed moving pixel ten times more; the logged reconstruction stays unweighted
    torch.manual_seed(0)
    seq = torch.zeros(2, 4, SIZE, SIZE, 3, dtype=torch.uint8)
    for t in range(4):
        seq[:, t, 2 + 3 * t, 5] = 255  # a dot that moves: all the decoder's error on it is motion-weighted
    acts, rew = torch.zeros(2, 4, 2), torch.zeros(2, 4)
    plain, moving = RSSM(CFG), RSSM(dataclasses.replace(CFG, motion_weight=10.0))
    moving.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    loss_p, logs_p, _ = plain.loss(seq, acts, rew)
    torch.manual_seed(1)
    loss_m, logs_m, _ = moving.loss(seq, acts, rew)
    torch.testing.assert_close(logs_m["recon"], logs_p["recon"])
    assert loss_m > loss_p


def test_unknown_conv_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="conv_norm must be channel, group or none"):
        RSSMConfig(conv_norm="batch")


def test_kl_balance_and_free_bits_on_hand_computed_values():
    post = torch.log(torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]]))  # (B=2, stoch=1, classes=2)
    prior = torch.log(torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]]))
    kl = categorical_kl(post, prior)
    expected = torch.tensor([0.0, 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)])
    torch.testing.assert_close(kl, expected)
    loss, dyn, rep = kl_balance(post, prior, 0.5, 0.1, free_nats=1.0)
    torch.testing.assert_close(dyn, expected) and torch.testing.assert_close(rep, expected)
    torch.testing.assert_close(loss, torch.full((2,), 0.5 + 0.1))  # both below 1 nat: clipped to the free bits
    loss, _, _ = kl_balance(post, prior, 0.5, 0.1, free_nats=0.1)
    torch.testing.assert_close(loss, torch.tensor([0.6 * 0.1, 0.6 * float(expected[1])]))
    # the two terms send gradients to different sides
    p = post.clone().requires_grad_(True)
    q = prior.clone().requires_grad_(True)
    _, dyn, rep = kl_balance(p, q, 0.5, 0.1, 0.0)
    (g_post,) = torch.autograd.grad(dyn.sum(), p, allow_unused=True)
    assert g_post is None or torch.all(g_post == 0)  # dyn trains the prior only
    (g_prior,) = torch.autograd.grad(rep.sum(), q, allow_unused=True)
    assert g_prior is None or torch.all(g_prior == 0)  # rep trains the posterior only


def test_straight_through_sampling_passes_gradients():
    torch.manual_seed(0)
    raw = torch.randn(5, 3, 4, requires_grad=True)
    logits = unimix_logits(raw, 0.01)
    assert logits.exp().min() >= 0.01 / 4 - 1e-7
    z = straight_through_sample(logits)
    torch.testing.assert_close(z.detach().sum(-1), torch.ones(5, 3))
    assert set(z.detach().round(decimals=5).unique().tolist()) <= {0.0, 1.0}
    (g,) = torch.autograd.grad((z * torch.arange(4.0)).sum(), raw)
    assert g.abs().sum() > 0


def test_two_hot_and_symlog_reward_head():
    bins = torch.linspace(-2, 2, 5)
    code = two_hot(torch.tensor([0.25, -2.0, 5.0]), bins)
    torch.testing.assert_close(code[0], torch.tensor([0, 0, 0.75, 0.25, 0]))
    torch.testing.assert_close(code[1], torch.tensor([1.0, 0, 0, 0, 0]))
    torch.testing.assert_close(code[2], torch.tensor([0, 0, 0, 0, 1.0]))  # clipped to the last bin
    x = torch.tensor([-30.0, -1.0, 0.0, 2.5])
    torch.testing.assert_close(symexp(symlog(x)), x)
    big = torch.full((1, 255), -50.0)
    bins = torch.linspace(-20, 20, 255)
    big[0, 127 + 10] = 50.0
    assert float(twohot_mean(big, bins)) == pytest.approx(float(symexp(bins[137])), rel=1e-4)


def test_observe_equals_repeated_single_steps():
    torch.manual_seed(0)
    m = RSSM(CFG)
    frames = torch.randint(0, 256, (2, 6, SIZE, SIZE, 3), dtype=torch.uint8)
    actions = torch.rand(2, 6, 2)
    embed = m.encode(frames)
    posts, priors = m.observe(embed, actions, sample=False)
    state, prev = m.initial_state(2), torch.zeros(2, 2)
    for t in range(6):
        prior = m.step_prior(state, prev)
        state = m.observe_step(state, prev, embed[:, t], sample=False)
        torch.testing.assert_close(state.stoch, posts.stoch[:, t])
        torch.testing.assert_close(prior.logits, priors.logits[:, t])
        prev = actions[:, t]
    # the config picks the filter's default: one-hot samples, or the class probabilities (train-policy
    # --mean-posteriors)
    sampled = m.observe_step(m.initial_state(2), prev, embed[:, 0]).stoch
    assert set(sampled.unique().tolist()) <= {0.0, 1.0}
    m.cfg = dataclasses.replace(CFG, filter_sample=False)
    torch.testing.assert_close(m.observe_step(m.initial_state(2), prev, embed[:, 0]).stoch,
                               m.observe_step(m.initial_state(2), prev, embed[:, 0], sample=False).stoch)  # fmt: skip


def test_deterministic_under_a_seed():
    frames = torch.randint(0, 256, (2, 4, SIZE, SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        m = RSSM(CFG)
        loss, _, posts = m.loss(frames, torch.zeros(2, 4, 2), torch.zeros(2, 4))
        outs.append((loss.detach(), posts.stoch))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize(("norm", "keypoints"), [("channel", 0), ("group", 0), ("none", 0), ("group", 4)])
def test_tiny_model_overfits_one_batch(store_path, norm, keypoints):
    torch.manual_seed(0)
    store = EpisodeStore.open(store_path)
    b = WindowSampler(store, 8, labels=("reward",)).sample(4, np.random.default_rng(0))
    frames, actions = torch.as_tensor(b.frames), torch.as_tensor(b.actions)
    rewards = torch.as_tensor(b.labels["reward"])
    m = RSSM(dataclasses.replace(CFG, conv_norm=norm, keypoints=keypoints, keypoint_weight=float(keypoints > 0)))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = last = None
    for _ in range(150):
        loss, logs, _ = m.loss(frames, actions, rewards)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else {k: float(v) for k, v in logs.items()}
        last = {k: float(v) for k, v in logs.items()}
    assert last["recon"] < first["recon"] / 5 and last["reward_loss"] < first["reward_loss"] / 2, (first, last)
    if keypoints:  # the features learn to carry the keypoints
        assert last["keypoint_loss"] < first["keypoint_loss"] / 2, (first, last)


def test_train_local_resume_eval_and_finetune(store_path, tmp_path):
    cfg = TrainLocalConfig(store=store_path, runs=tmp_path, name="l", model=CFG, steps=6, batch_size=4, seq_len=8,
                           eval_every=3, device="cpu")  # fmt: skip
    result = train_local(cfg, progress=False)
    assert {"psnr", "reward_corr", "kl_dyn"} <= set(result["val"]) and (tmp_path / "l" / "strips").exists()
    train_local(TrainLocalConfig(**{**cfg.__dict__, "steps": 9}), progress=False)  # extends the run
    assert (tmp_path / "l" / "checkpoints" / "step_000000009.safetensors").exists()
    model = load_local_model(tmp_path / "l" / "local.safetensors")
    out = evaluate_local(EvalLocalConfig(local=tmp_path / "l" / "local.safetensors", store=store_path,
                                         out=tmp_path / "ev", rollouts=3, horizon=6, horizons=(1, 6), device="cpu",
                                         agent_poses=1),
                         progress=False)  # fmt: skip
    assert set(out["model"]) == {1, 6} and (tmp_path / "ev" / "strip.png").exists()
    assert set(out["probe"]) == {"agent", "t"} and "R^2" in (tmp_path / "ev" / "fidelity.md").read_text()
    assert np.isfinite(out["head_agent_effect"]["agent_range"]) and out["head_agent_effect"]["agent_range"] >= 0
    frames = torch.randint(0, 256, (2, 5, SIZE, SIZE, 3), dtype=torch.uint8)
    pred = predict_open_loop(model, frames, torch.zeros(2, 5, 2), context=3)
    assert pred.shape == (2, 2, SIZE, SIZE, 3) and pred.dtype == np.uint8
    ft = LocalFinetuner(model, lr=1e-3, updates=2, batch_size=2)
    logs = ft(frames, torch.zeros(2, 4, 2), torch.ones(2, 4))
    assert {"one_step_kl", "loss"} <= set(logs) and len(ft.buffer) == 2
    shaped = LocalFinetuner(model, lookahead=2, lookahead_weight=0.5)  # the head's targets: lookahead labels
    shaped.add(frames, torch.zeros(2, 4, 2), torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 3.0]]))
    torch.testing.assert_close(shaped.buffer[0][2], torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(shaped.buffer[1][2], torch.tensor([0.0, 2.0, 1.5, 1.5, 3.0]))
    with pytest.raises(ValueError, match="must lie in"):
        LocalFinetuner(model, lookahead=2, lookahead_weight=3.0)
    head = [p.clone() for p in model.reward_head.parameters()]  # fit_reward False: the head keeps its label
    enc = [p.clone() for p in model.encoder.parameters()]
    LocalFinetuner(model, lr=1e-3, batch_size=2, fit_reward=False)(frames, torch.zeros(2, 4, 2), 5 * torch.ones(2, 4))
    assert all(torch.equal(a, b) for a, b in zip(head, model.reward_head.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(enc, model.encoder.parameters(), strict=True))
    with pytest.raises(ValueError, match="not a local model"):
        load_local_model(tmp_path / "l" / "checkpoints" / "step_000000009.safetensors")
    # --init starts from the trained weights (and their config): with lr 0 they come out unchanged
    init = dataclasses.replace(cfg, name="from-init", init=tmp_path / "l" / "local.safetensors", steps=1, lr=0.0,
                               model=dataclasses.replace(CFG, deter=CFG.deter + 8))  # fmt: skip
    train_local(init, progress=False)
    trained, again = (load_local_model(tmp_path / n / "local.safetensors") for n in ("l", "from-init"))
    assert again.cfg == trained.cfg
    for (k, v), w in zip(trained.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def test_refit_head_fits_the_head_alone_and_keeps_the_best(store_path, tmp_path):
    torch.manual_seed(0)
    export_local_model(tmp_path / "local.safetensors", RSSM(CFG))
    store = EpisodeStore.open(store_path)
    for ep in store:  # a second label to report against: the reward's negative
        store.write_label(ep.key, "neg_reward", -np.asarray(ep.label("reward")))
    cfg = RefitHeadConfig(local=tmp_path / "local.safetensors", store=store_path, label="reward",
                          out=tmp_path / "refit.safetensors", windows=40, val_windows=10, length=12, burn_in=4,
                          steps=300, batch_size=16, lr=3e-3, eval_every=50, against="neg_reward")  # fmt: skip
    result = refit_head(cfg, progress=False)
    history = result["history"]
    assert [r["step"] for r in history] == [0, 50, 100, 150, 200, 250, 300]
    assert np.isnan(history[0]["corr"])  # the fresh head (zero last layer) predicts a constant
    assert history[-1]["train_loss"] < history[1]["train_loss"] / 2, history  # a loss that goes down
    assert history[-1]["corr_neg_reward"] == pytest.approx(-history[-1]["corr"]) and history[-1]["corr"] > 0
    before, after = load_local_model(cfg.local), load_local_model(cfg.out)
    head = {f"reward_head.{k}" for k in after.reward_head.state_dict()}
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b) == (name not in head), name  # the head changed, everything else is copied
    # --keep-best writes the head of best validation correlation: the same fit, the same report
    best = refit_head(dataclasses.replace(cfg, keep_best=True, out=tmp_path / "best.safetensors"), progress=False)
    fitted = [r for r in history if r["step"] > 0]
    assert best["kept_step"] == max(fitted, key=lambda r: r["corr"])["step"]
    assert best["val"]["corr"] == max(r["corr"] for r in fitted)
    # --steps 0 reports a saved head as it is: the fitted head's last validation figures, its weights unchanged
    check = refit_head(dataclasses.replace(cfg, local=cfg.out, steps=0, out=tmp_path / "check.safetensors"),
                       progress=False)  # fmt: skip
    assert check["kept_step"] == 0 and check["val"]["corr"] == pytest.approx(history[-1]["corr"], abs=1e-6)
    for a, b in zip(after.state_dict().values(), load_local_model(check["path"]).state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(StoreError, match="nolabel"):
        refit_head(dataclasses.replace(cfg, label="nolabel"), progress=False)
    with pytest.raises(ValueError, match="--burn-in"):
        RefitHeadConfig(length=8, burn_in=8)


def test_missing_reward_label_is_a_clear_error(tmp_path):
    out = tmp_path / "raw"
    collect(CollectConfig(out=out, operator="explorer", frames=100, episode_len=50, pusht=PushTConfig(image_size=SIZE)),
            progress=False)  # fmt: skip
    with pytest.raises(StoreError, match="labelling command"):
        train_local(TrainLocalConfig(store=out, runs=tmp_path, model=CFG, steps=1, seq_len=8), progress=False)


def test_feature_probe_finds_linear_information_and_not_noise():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(600, 20))
    groups = np.repeat(np.arange(30), 20)
    target = feats[:, :2] @ np.array([[3.0, 0.5], [-1.0, 2.0]]) + 100.0
    target[5] = np.nan  # an object the segmentation missed: dropped, not fitted
    carried = feature_probe(feats, target, groups)
    assert carried["r2"] > 0.99 and carried["median_err"] < 0.5 and carried["n_train"] + carried["n_test"] == 599
    noise = feature_probe(rng.normal(size=(600, 20)), target, groups)
    assert noise["r2"] < 0.2
    with pytest.raises(ValueError, match="at least 3 groups"):
        feature_probe(feats, target, np.zeros(600))
