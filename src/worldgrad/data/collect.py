"""Recording play data on the real system with scripted operators, in parallel, resumable.

Episode ``i`` of a collection uses seed ``seed + i`` and is stored under key ``s{seed:09d}``, so a
killed collection re-run with the same arguments only records the episodes that are missing.
Collection seeds live in ``[0, EVAL_SEED_START)``; evaluation seeds never overlap them.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldgrad.data.store import EpisodeStore, StoreError, StoreMeta
from worldgrad.envs.pushcube import PushCubeConfig
from worldgrad.envs.pusht import PushTConfig, PushTEnv

EVAL_SEED_START = 1_000_000
"""Seeds at or above this are reserved for evaluation; collection refuses them."""
PLAY_RESPAWN_AFTER = 10
"""Push Cube play: steps a cube may rest in the goal (or at a wall) before the operator puts it back"""
PUSHT_SIM_KEYS = ("coverage", "agent_pos", "block_pose")
"""simulator ground truth stored with each frame, for evaluation only (training never reads it)"""
PUSHCUBE_SIM_KEYS = ("base_pose", "cube_pose", "distance_to_goal", "is_success", "cube_in_view", "cube_respawned")


@dataclass(frozen=True)
class CollectConfig:
    """Record play data with a scripted operator."""

    out: Path = Path("data/pusht_play")
    """episode store to write (created if missing, appended to if it exists)"""
    env: str = "pusht"
    """real system to record on: pusht or pushcube"""
    operator: str = "pusher"
    """operator name, or a mix such as 'explorer:0.3,pusher:0.7' (chosen per episode)"""
    frames: int = 20_000
    """total frames to record"""
    episode_len: int = 1000
    """frames per episode (long play episodes, rare resets)"""
    workers: int = 1
    """parallel collector processes"""
    seed: int = 0
    """seed of the first episode; episode i uses seed + i"""
    pusht: PushTConfig = field(default_factory=PushTConfig)
    """Push-T settings (terminate_on_success and max_episode_steps are set by the collector)"""
    pushcube: PushCubeConfig = field(default_factory=PushCubeConfig)
    """Push Cube settings (as for Push-T; respawn_cube_after 0 becomes 10 in play)"""

    def __post_init__(self) -> None:
        if self.env not in ("pusht", "pushcube"):
            raise ValueError(f"unknown env {self.env!r}; choose one of: pusht, pushcube")
        if self.frames < 1 or self.episode_len < 1 or self.workers < 1:
            raise ValueError("collect: --frames, --episode-len and --workers must all be >= 1")
        last_seed = self.seed + math.ceil(self.frames / self.episode_len) - 1
        if self.seed < 0 or last_seed >= EVAL_SEED_START:
            raise ValueError(
                f"collect: seeds {self.seed}..{last_seed} reach the evaluation range "
                f"[{EVAL_SEED_START}, ...); use seeds in [0, {EVAL_SEED_START})"
            )


@dataclass(frozen=True)
class EpisodeSpec:
    key: str
    seed: int
    length: int
    operator: str


def parse_operator_mix(spec: str, env: str = "pusht") -> dict[str, float]:
    """'pusher' -> {pusher: 1}; 'explorer:0.3,pusher:0.7' -> normalized weights."""
    if env == "pushcube":
        from worldgrad.operators.pushcube import OPERATOR_NAMES
    else:
        from worldgrad.operators.pusht import OPERATOR_NAMES

    mix: dict[str, float] = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        if name not in OPERATOR_NAMES:
            raise ValueError(f"unknown operator {name!r}; choose from {', '.join(OPERATOR_NAMES)}")
        try:
            mix[name] = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"operator weight {w!r} in {spec!r} is not a number; write NAME:WEIGHT") from None
    total = sum(mix.values())
    if total <= 0 or any(v < 0 for v in mix.values()):
        raise ValueError(f"operator weights in {spec!r} must be >= 0 and not all 0")
    return {k: v / total for k, v in mix.items()}


def plan_episodes(cfg: CollectConfig) -> list[EpisodeSpec]:
    """The deterministic list of episodes a collection config asks for."""
    mix = parse_operator_mix(cfg.operator, cfg.env)
    names, weights = list(mix), np.array(list(mix.values()))
    n = math.ceil(cfg.frames / cfg.episode_len)
    specs = []
    for i in range(n):
        seed = cfg.seed + i
        length = min(cfg.episode_len, cfg.frames - i * cfg.episode_len)
        op = names[int(np.random.default_rng([seed, 7]).choice(len(names), p=weights))]
        specs.append(EpisodeSpec(key=f"s{seed:09d}", seed=seed, length=length, operator=op))
    return specs


def store_meta(cfg: CollectConfig) -> StoreMeta:
    if cfg.env == "pushcube":
        c = cfg.pushcube
        skip = ("max_episode_steps", "terminate_on_success", "respawn_cube_after", "topdown_size")
        return StoreMeta(
            env="pushcube",
            image_shape=(c.image_size, c.image_size, 3),
            action_dim=3,
            fps=float(c.control_hz),
            env_config={k: v for k, v in asdict(c).items() if k not in skip},
        )
    if cfg.env != "pusht":
        raise ValueError(f"unknown env {cfg.env!r}; choose one of: pusht, pushcube")
    p = cfg.pusht
    return StoreMeta(
        env="pusht",
        image_shape=(p.image_size, p.image_size, 3),
        action_dim=2,
        fps=float(p.control_hz),
        env_config={k: v for k, v in asdict(p).items() if k not in ("max_episode_steps", "terminate_on_success")},
    )


_progress: Any = None  # a shared counter, set in each worker process by _init_worker


def _init_worker(counter: Any) -> None:
    global _progress
    _progress = counter


def record_episode(spec: EpisodeSpec, env_cfg: PushTConfig | PushCubeConfig, store_path: str) -> dict[str, float]:
    """Records one episode with its operator and appends it to the store. Returns its statistics."""
    env_name = "pushcube" if isinstance(env_cfg, PushCubeConfig) else "pusht"
    if isinstance(env_cfg, PushCubeConfig):
        from worldgrad.envs.pushcube import PushCubeEnv
        from worldgrad.operators.pushcube import make_operator as make_cube_operator

        respawn = env_cfg.respawn_cube_after or PLAY_RESPAWN_AFTER
        env_cfg = replace(env_cfg, terminate_on_success=False, max_episode_steps=spec.length)
        env_cfg = replace(env_cfg, respawn_cube_after=respawn)
        env: Any = PushCubeEnv(env_cfg)
        operator: Any = make_cube_operator(spec.operator, env_cfg.velocity_limits)
        sim_keys: tuple[str, ...] = PUSHCUBE_SIM_KEYS
    else:
        from worldgrad.operators.pusht import make_operator

        env_cfg = replace(env_cfg, terminate_on_success=False, max_episode_steps=spec.length)
        env = PushTEnv(env_cfg)
        operator = make_operator(spec.operator, env_cfg.max_step_px)
        sim_keys = PUSHT_SIM_KEYS
    operator.reset(np.random.default_rng([spec.seed, 1]))
    size = env_cfg.image_size
    frames = np.empty((spec.length, size, size, 3), np.uint8)
    actions = np.empty((spec.length, env.action_space.shape[0]), np.float32)
    intent = np.empty(spec.length, bool)
    obs, info = env.reset(seed=spec.seed)
    # ground truth per frame: flags stay bool, numbers become float32
    sim = {
        k: np.empty((spec.length, *np.shape(info[k])), bool if isinstance(info[k], (bool, np.bool_)) else np.float32)
        for k in sim_keys
    }
    t0 = time.perf_counter()
    for t in range(spec.length):
        frames[t] = obs
        for name, values in sim.items():
            values[t] = info[name]
        action, intent[t] = operator.act(env.operator_view())
        actions[t] = action
        obs, _, _, _, info = env.step(action)
        if _progress is not None and (t + 1) % 50 == 0:
            with _progress.get_lock():
                _progress.value += 50
    env.close()
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += spec.length % 50
    info_json = {
        "seed": spec.seed,
        "operator": spec.operator,
        "env": env_name,
        "recorded_s": time.perf_counter() - t0,
    }
    EpisodeStore.open(store_path).append(spec.key, frames, actions, intent, info=info_json, sim=sim)
    return pushcube_episode_stats(sim, intent) if env_name == "pushcube" else episode_stats(sim, intent)


def episode_stats(sim: dict[str, np.ndarray], intent: np.ndarray) -> dict[str, float]:
    """Coverage statistics of one episode's states (from the simulator record; for reports only)."""
    cov = np.asarray(sim["coverage"])
    pose = np.asarray(sim["block_pose"], dtype=np.float64)
    moved = np.linalg.norm(np.diff(pose[:, :2], axis=0), axis=1) > 1.0
    moved |= np.abs(np.diff(pose[:, 2])) > np.deg2rad(1.0)
    return {
        "frames": float(len(cov)),
        "coverage_mean": float(cov.mean()),
        "near_goal": float((cov > 0.5).mean()),
        "success": float((cov > 0.95).mean()),
        "t_moved": float(moved.mean()) if len(moved) else 0.0,
        "intent": float(np.asarray(intent).mean()),
    }


def pushcube_episode_stats(sim: dict[str, np.ndarray], intent: np.ndarray) -> dict[str, float]:
    """Push Cube coverage statistics of one episode (from the simulator record; for reports only)."""
    cube = np.asarray(sim["cube_pose"], dtype=np.float64)
    moved = np.linalg.norm(np.diff(cube[:, :2], axis=0), axis=1) > 0.01
    return {
        "frames": float(len(cube)),
        "cube_in_view": float(np.mean(sim["cube_in_view"])),
        "cube_moved": float(moved.mean()) if len(moved) else 0.0,
        "near_goal": float((np.asarray(sim["distance_to_goal"]) < 1.0).mean()),
        "success": float(np.mean(sim["is_success"])),
        "respawns_per_1k": float(np.mean(sim["cube_respawned"]) * 1000),
        "intent": float(np.asarray(intent).mean()),
    }


def summarize(stats: Sequence[dict[str, float]]) -> dict[str, float]:
    """Frame-weighted mean of per-episode statistics."""
    w = np.array([s["frames"] for s in stats])
    out = {"episodes": float(len(stats)), "frames": float(w.sum())}
    for k in stats[0]:
        if k != "frames":
            out[k] = float(np.average([s[k] for s in stats], weights=w))
    return out


def collect(cfg: CollectConfig, progress: bool = True) -> dict[str, float]:
    """Runs a collection (resuming a previous one) and returns its summary statistics."""
    store = EpisodeStore.create(cfg.out, store_meta(cfg))
    store.clean_tmp()
    specs = plan_episodes(cfg)
    todo = []
    for spec in specs:
        if spec.key in store:
            have = store.episode(spec.key).info
            if have.get("operator") != spec.operator or have.get("length") != spec.length:
                raise StoreError(
                    f"episode {spec.key} in {cfg.out} was recorded with operator={have.get('operator')} "
                    f"length={have.get('length')}, not {spec.operator}/{spec.length}; use another --seed or --out"
                )
        else:
            todo.append(spec)
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    total = sum(s.length for s in todo)
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc=f"collect {cfg.operator}", disable=not progress or total == 0)
    env_cfg = cfg.pushcube if cfg.env == "pushcube" else cfg.pusht
    if cfg.workers == 1 or len(todo) <= 1:
        for spec in todo:
            record_episode(spec, env_cfg, str(cfg.out))
            bar.update(spec.length)
    else:
        ctx = mp.get_context("spawn")  # fork + pygame/pymunk state is fragile; spawn is portable
        counter = ctx.Value("q", 0)
        with ctx.Pool(min(cfg.workers, len(todo)), initializer=_init_worker, initargs=(counter,)) as pool:
            pending = [pool.apply_async(record_episode, (s, env_cfg, str(cfg.out))) for s in todo]
            while not all(p.ready() for p in pending):
                time.sleep(0.2)
                bar.update(counter.value - bar.n)
            for p in pending:
                p.get()  # re-raises a worker's exception here
            bar.update(counter.value - bar.n)
    bar.close()
    elapsed = time.perf_counter() - t0
    stats = []
    for spec in specs:
        ep = store.episode(spec.key)
        if cfg.env == "pushcube":
            stats.append(pushcube_episode_stats({k: ep.sim(k) for k in PUSHCUBE_SIM_KEYS}, ep.intent))
        else:
            stats.append(episode_stats({k: ep.sim(k) for k in ("coverage", "block_pose")}, ep.intent))
    summary = summarize(stats)
    summary.update(new_frames=float(total), seconds=elapsed, frames_per_s=total / elapsed if elapsed > 0 else 0.0)
    return summary
