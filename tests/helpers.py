"""Small synthetic stores for tests: frame pixels and actions encode (episode, t) so windows can be checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldgrad.data.store import EpisodeStore, StoreMeta

META = StoreMeta(env="pusht", image_shape=(8, 8, 3), action_dim=2, fps=5.0)


def synthetic_episode(ep: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(length)
    frames = np.zeros((length, 8, 8, 3), np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = (t % 256)[:, None, None]
    frames[..., 2] = (t // 256)[:, None, None]
    actions = np.stack([np.full(length, ep / 100.0), t / 1000.0], axis=1).astype(np.float32)
    intent = t % 3 == 0
    return frames, actions, intent


def make_store(path: Path, lengths: list[int]) -> EpisodeStore:
    store = EpisodeStore.create(path, META)
    for ep, n in enumerate(lengths):
        frames, actions, intent = synthetic_episode(ep, n)
        store.append(f"ep{ep:04d}", frames, actions, intent, info={"ep": ep})
    return store


def tiny_world(root: Path, size: int = 16) -> dict[str, object]:
    """Pipeline artifacts in seconds: a 200-frame Push-T store (labelled), 2-step world, reward and local models."""
    from worldgrad.algos.reward_labels import LabelRewardConfig, label_store
    from worldgrad.algos.train_local import TrainLocalConfig, train_local
    from worldgrad.algos.train_reward import TrainRewardConfig, train_reward
    from worldgrad.algos.train_wm import TrainWMConfig, train_wm
    from worldgrad.data.collect import CollectConfig, collect
    from worldgrad.envs.pusht import PushTConfig, render_goal_image
    from worldgrad.models.diffusion import DenoiserConfig
    from worldgrad.models.encoders import ConvEncoderConfig
    from worldgrad.models.reward import RewardModelConfig
    from worldgrad.models.rssm import RSSMConfig

    store = root / "play"
    pusht = PushTConfig(image_size=size, max_episode_steps=5)
    collect(CollectConfig(out=store, operator="pusher", frames=200, episode_len=100, pusht=pusht), progress=False)
    wm = DenoiserConfig(image_size=size, channels=(8, 8, 16), depths=(1, 1, 1), cond_dim=32)
    train_wm(TrainWMConfig(store=store, runs=root, name="wm", model=wm, steps=2, eval_every=2, batch_size=2,
                           strip_horizon=2, device="cpu"), progress=False)  # fmt: skip
    rm = RewardModelConfig(image_size=size, encoder=ConvEncoderConfig(depth=4, out_dim=8))
    rpath = train_reward(TrainRewardConfig(store=store, runs=root, name="r", steps=2, eval_every=2, batch_size=4,
                                           norm_frames=32, max_window=20, device="cpu", model=rm),
                         render_goal_image(pusht), progress=False)["path"]  # fmt: skip
    label_store(LabelRewardConfig(reward=rpath, store=store))
    lcfg = RSSMConfig(image_size=size, cnn_depth=4, deter=16, hidden=16, stoch=3, classes=4)
    lpath = train_local(TrainLocalConfig(store=store, runs=root, name="l", model=lcfg, steps=2, batch_size=2,
                                         seq_len=8, eval_every=2, device="cpu"), progress=False)["path"]  # fmt: skip
    return {"store": store, "wm": root / "wm" / "wm.safetensors", "reward": Path(rpath), "local": Path(lpath),
            "pusht": pusht}  # fmt: skip
