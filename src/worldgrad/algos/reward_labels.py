"""Per-frame rewards of stored episodes from a trained reward model, and their label files.

Frame t is scored with s_start = frame max(0, t - start_offset) and s_goal = the goal image: the same
conditioning an imagined rollout of ``start_offset`` steps gives at RL time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldgrad.data.store import Episode, EpisodeStore
from worldgrad.models.image import changed_pixels
from worldgrad.models.reward import GoalReward


@torch.no_grad()
def episode_rewards(reward: GoalReward, frames: np.ndarray, start_offset: int, chunk: int = 512) -> np.ndarray:
    """Rewards (T,) float32 of an episode's frames (T, H, W, 3) uint8."""
    out = []
    starts = np.maximum(np.arange(len(frames)) - start_offset, 0)
    for a in range(0, len(frames), chunk):
        idx = np.arange(a, min(a + chunk, len(frames)))
        out.append(reward(np.asarray(frames[idx]), np.asarray(frames[starts[idx]])).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def check_lookahead_weight(weight: float) -> None:
    if not 0.0 < weight <= 1.0:
        raise ValueError(
            f"lookahead weight {weight} must lie in (0, 1]: above 1 the label falls while the reward rises (it "
            "would teach the reward head that pushing toward the goal costs reward); pass --lookahead-weight 1"
        )


def lookahead_labels(rewards: np.ndarray, steps: int, weight: float) -> np.ndarray:
    """r_t + weight * max(0, max_{1 <= j <= steps} r_{t+j} - r_t) within one episode (T,).

    The recorded behaviour's best reward gain in the next ``steps`` frames: high where the operator was about to
    improve the scene, e.g. with the agent at the object on the side that pushes it toward the goal. A label for
    the local model's reward head only (not in the paper): DMO takes its gradients from that head and its values
    from the global reward, so this shapes the direction of the policy's gradient without changing the return
    it is judged by. A reward that ignores the agent's place is otherwise flat wherever the agent is not touching
    the object, and the policy has no gradient that brings it there.

    ``weight`` must lie in (0, 1]: the label is then (1 - weight) r_t + weight max(r_t, max_j r_{t+j}), which
    never falls while the reward rises. A weight above 1 makes it fall during every push (it equals
    weight * max - (weight - 1) r_t there): on the cpu play data a weight of 3 lowered the label on 99 % of the
    steps where the reward rose, teaching the head that pushing the object toward the goal costs reward.
    """
    check_lookahead_weight(weight)
    if steps <= 0:
        return rewards
    r = np.asarray(rewards, dtype=np.float32)
    ahead = np.full_like(r, -np.inf)
    for j in range(1, steps + 1):
        ahead[:-j] = np.maximum(ahead[:-j], r[j:])
    gain = np.where(np.isfinite(ahead), np.maximum(ahead - r, 0.0), 0.0)
    return (r + weight * gain).astype(np.float32)


def _moves(frames: np.ndarray, min_pixels: int) -> np.ndarray:
    """(T,) bool: the scene changed in at least ``min_pixels`` pixels from frame t to t + 1 (False at the last)."""
    frames = np.asarray(frames)
    event = np.zeros(len(frames), dtype=bool)
    for a in range(0, len(frames) - 1, 512):  # chunks keep the int16 difference small
        b = min(a + 512, len(frames) - 1)
        event[a:b] = changed_pixels(frames[a:b], frames[a + 1 : b + 1]) >= min_pixels
    return event


def motion_labels(frames: np.ndarray, min_pixels: int = 40) -> np.ndarray:
    """1 where the object moved into frame t (>= ``min_pixels`` changed pixels from frame t - 1), else 0 (T,).

    What ``train-policy --motion-reward`` pays on the world model's frames, as a label: a head fit to it reads
    the latent after the action, so its gradient points at pushing the object, not only at standing by it.
    """
    return np.concatenate([[0.0], _moves(frames, min_pixels)[:-1]]).astype(np.float32)


def signed_motion_labels(moved: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """``moved`` (:func:`motion_labels`) times the sign of the reward's change into each frame (T,).

    A push toward the goal raises the ranking reward, one away lowers it: on the ``cpu`` play store the sign agrees
    with the coverage's change in 78 % of the moved frames where the coverage changed
    (``bench/motion_direction.py``).
    """
    r = np.asarray(rewards, dtype=np.float32)
    if r.shape != moved.shape:
        raise ValueError(f"reward label of {r.shape} frames for {moved.shape} motion labels: relabel the store")
    return (moved * np.sign(np.diff(r, prepend=r[:1]))).astype(np.float32)


def contact_labels(
    frames: np.ndarray, horizon: int, gamma: float = 0.9, min_pixels: int = 40, past: bool = False
) -> np.ndarray:
    """gamma^k within one episode (T,): k the steps from frame t until the scene next changes between two
    consecutive frames in at least ``min_pixels`` pixels (:func:`~worldgrad.models.image.changed_pixels`), 0 when
    that does not happen within ``horizon`` steps (nor at the last frame).

    Read from the frames alone. The agent moving alone changes fewer pixels than the ranking reward's tie threshold
    (``train-reward --tie-pixels 40``), so a larger change means the agent is moving the object: the label says how
    soon the recorded behaviour was going to touch it. A shaping term for the local reward head (not in the
    paper), like :func:`lookahead_labels`: the ranking reward is flat wherever the agent is not touching the
    object, and from a reset the agent is far from it; this label rises as the agent closes in.

    ``past`` also counts the steps since the object last moved (frame t right after a move: k = 0), k the nearer
    of the two. Beside the object the recorded operator has usually just pushed it or is about to, so the two-sided
    label depends less on what the operator does next: on the ``cpu`` play store it correlates 0.62 with the true
    agent-to-object nearness (``bench/oracle_labels.py``) against 0.47 for the one-sided label.
    """
    if horizon <= 0:
        return np.zeros(len(frames), np.float32)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"contact gamma {gamma} must lie in (0, 1]; pass e.g. --contact-gamma 0.9")
    events, t = np.flatnonzero(_moves(frames, min_pixels)), np.arange(len(frames))
    if len(events) == 0:  # the object never moves in this episode
        return np.zeros(len(frames), np.float32)
    nxt = np.searchsorted(events, t)  # the first event at or after t (len(events): none)
    k = np.where(nxt < len(events), np.append(events, len(frames) + horizon)[nxt] - t, horizon)
    if past:  # event s changes frame s into s + 1: frame t is t - 1 - s steps after the last event s < t
        last = nxt - 1
        k = np.minimum(k, np.where(last >= 0, t - 1 - events[np.maximum(last, 0)], horizon))
    return np.where(k < horizon, float(gamma) ** np.minimum(k, horizon), 0.0).astype(np.float32)


@dataclass(frozen=True)
class LabelRewardConfig:
    """Write the reward of every stored frame into the store as a per-frame label."""

    reward: Path = Path("runs/reward-tiny/reward.safetensors")
    """reward model written by train-reward"""
    store: Path = Path("runs/pusht-tiny/data/play")
    """episode store to label"""
    name: str = "reward"
    """label name"""
    start_offset: int = 16
    """frame t is scored from s_start = frame t - start_offset"""
    lookahead: int = 0
    """> 0: add the episode's best reward gain over this many next frames (:func:`lookahead_labels`): a shaped
    label for the local model's reward head, e.g. ``--name reward_ahead --lookahead 8``; 0 labels the reward"""
    lookahead_weight: float = 1.0
    """in (0, 1]: the label mixes the reward and the best reward ahead (see :func:`lookahead_labels`)"""
    contact: int = 0
    """> 0: add contact_weight * gamma^k, k the steps until the recorded behaviour next moves the object, within
    this many steps (:func:`contact_labels`, read from the frames): a shaping label for the local reward head that
    rises as the agent approaches the object, e.g. ``--name reward_contact --contact 32``"""
    contact_weight: float = 1.0
    """scale of the contact term, in reward units (the reward is standardized on the play frames)"""
    contact_gamma: float = 0.9
    """per-step decay of the contact term"""
    contact_past: bool = False
    """two-sided contact term: k the steps to the object's next move or since its last one, whichever is nearer
    (:func:`contact_labels`'s ``past``; follows the agent-to-object nearness more closely)"""
    contact_pixels: int = 40
    """changed pixels between consecutive frames that count as the object moving (the reward's tie threshold, for
    64x64 frames; scale it with the image area)"""
    motion_weight: float = 0.0
    """> 0: add this times 1 where the object moved into the frame (:func:`motion_labels`, ``contact_pixels``
    changed pixels), e.g. ``--contact-only --contact 32 --contact-past --motion-weight 1``: a head that pays for
    the approach and for the push"""
    motion_toward_goal: bool = False
    """the motion term takes the sign of the reward's change over the frame (the store's ``motion_label``, e.g.
    written by ``label-reward``): +motion_weight for a push that raised the reward, -motion_weight for one that
    lowered it (:func:`signed_motion_labels`), instead of paying for any push"""
    motion_label: str = "reward"
    """the store's reward label ``motion_toward_goal`` reads"""
    contact_only: bool = False
    """the label is the contact term alone, without the reward (``--reward`` is then not read): a head that pays
    for the approach only, for ``train-policy --motion-reward``, whose values pay for moving the object"""
    device: str = "auto"

    def __post_init__(self) -> None:
        check_lookahead_weight(self.lookahead_weight)
        if self.contact < 0 or not 0.0 < self.contact_gamma <= 1.0:
            raise ValueError(
                f"contact {self.contact} / contact gamma {self.contact_gamma}: pass --contact >= 0 and "
                "--contact-gamma in (0, 1]"
            )
        if self.motion_weight < 0:
            raise ValueError(f"--motion-weight {self.motion_weight} must be >= 0")
        if self.motion_toward_goal and self.motion_weight <= 0:
            raise ValueError("--motion-toward-goal signs the motion term: pass --motion-weight W > 0 with it")
        if self.contact_only and (self.contact == 0 or self.lookahead > 0):
            raise ValueError("--contact-only labels the contact term alone: pass --contact N > 0 and no --lookahead")


def _file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


def _up_to_date(ep: Episode, name: str, stamp: dict[str, object]) -> bool:
    meta = ep.path / "labels" / f"{name}.json"
    return name in ep.label_names() and meta.exists() and json.loads(meta.read_text()) == stamp


def label_store(cfg: LabelRewardConfig, progress: bool = True) -> dict[str, int]:
    """Labels every episode whose label is missing or was made by another model; idempotent, crash-safe.

    The label array is replaced atomically, then a small stamp (model digest, offset) is written; a crash
    between the two only makes the next run recompute that episode.
    """
    from worldgrad.algos.train_reward import load_goal_reward
    from worldgrad.runtime.atomic import save_json_atomic
    from worldgrad.runtime.seeding import pick_device

    store = EpisodeStore.open(cfg.store)
    reward = None if cfg.contact_only else load_goal_reward(cfg.reward, pick_device(cfg.device))
    stamp: dict[str, object] = (
        {"contact_only": True}
        if cfg.contact_only
        else {"model": _file_digest(cfg.reward), "start_offset": cfg.start_offset}
    )
    if cfg.lookahead > 0:
        stamp |= {"lookahead": cfg.lookahead, "lookahead_weight": cfg.lookahead_weight}
    if cfg.contact > 0:
        stamp |= {"contact": cfg.contact, "contact_weight": cfg.contact_weight, "contact_gamma": cfg.contact_gamma,
                  "contact_pixels": cfg.contact_pixels}  # fmt: skip
        if cfg.contact_past:  # only when set: labels written before the option keep their stamps
            stamp["contact_past"] = True
    if cfg.motion_weight > 0:
        stamp |= {"motion_weight": cfg.motion_weight, "contact_pixels": cfg.contact_pixels}
        if cfg.motion_toward_goal:  # only when set: labels written before the option keep their stamps
            stamp |= {"motion_toward_goal": cfg.motion_label}
    written = skipped = 0
    for ep in tqdm(list(store), desc=f"label {cfg.name}", disable=not progress):
        ep_stamp = stamp
        if cfg.motion_toward_goal:  # the reward label's own stamp: a relabelled reward relabels this too
            source = ep.path / "labels" / f"{cfg.motion_label}.json"
            ep_stamp = stamp | {"motion_source": json.loads(source.read_text()) if source.exists() else None}
        if _up_to_date(ep, cfg.name, ep_stamp):
            skipped += 1
            continue
        if reward is None:
            label = np.zeros(len(ep), np.float32)
        else:
            label = lookahead_labels(episode_rewards(reward, ep.frames, cfg.start_offset), cfg.lookahead,
                                     cfg.lookahead_weight)  # fmt: skip
        if cfg.contact > 0:
            label = label + cfg.contact_weight * contact_labels(ep.frames, cfg.contact, cfg.contact_gamma,
                                                                cfg.contact_pixels, cfg.contact_past)  # fmt: skip
        if cfg.motion_weight > 0:
            moved = motion_labels(ep.frames, cfg.contact_pixels)
            if cfg.motion_toward_goal:
                moved = signed_motion_labels(moved, ep.label(cfg.motion_label))
            label = label + cfg.motion_weight * moved
        store.write_label(ep.key, cfg.name, label.astype(np.float32))
        save_json_atomic(ep.path / "labels" / f"{cfg.name}.json", ep_stamp)
        written += 1
    return {"written": written, "skipped": skipped}
