"""Does the learned reward tell a push toward the goal from a push away? Read on a labelled play store.

``train-policy --motion-reward W`` pays W for every frame in which the object moved; ``--motion-goal-reward W``
pays W where the global reward rose over such a frame and charges W where it fell. This checks, on the
recorded pushes, how often the sign of the reward's change agrees with the truth: the change of the T's distance
to the goal pose, read from the store's simulator record (kept for evaluation only; training never reads it).

    python bench/motion_direction.py --store runs/pusht-cpu/data/play --label reward
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldgrad.algos.reward_labels import motion_labels
from worldgrad.data.store import EpisodeStore
from worldgrad.envs.pusht import GOAL_POSE


def goal_distance(block_pose: np.ndarray, px_per_rad: float) -> np.ndarray:
    """(T,) the T's distance to the goal pose: position in pixels plus ``px_per_rad`` times the angle error."""
    pos = np.linalg.norm(block_pose[:, :2] - np.array(GOAL_POSE[:2]), axis=1)
    ang = np.abs((block_pose[:, 2] - GOAL_POSE[2] + np.pi) % (2 * np.pi) - np.pi)
    return pos + px_per_rad * ang


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("runs/pusht-cpu/data/play"))
    parser.add_argument("--label", default="reward", help="the store's per-frame reward label")
    parser.add_argument("--pixels", type=int, default=40, help="changed pixels that count as the object moving")
    parser.add_argument("--px-per-rad", type=float, default=100.0, help="weight of the angle in the goal distance")
    parser.add_argument("--lags", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    store = EpisodeStore.open(args.store)
    dr: dict[int, list[np.ndarray]] = {k: [] for k in args.lags}
    dd: dict[int, list[np.ndarray]] = {k: [] for k in args.lags}
    dc: dict[int, list[np.ndarray]] = {k: [] for k in args.lags}
    moved_share = []
    for ep in tqdm(list(store), desc="episodes"):
        r = ep.label(args.label).astype(np.float64)
        d = goal_distance(ep.sim("block_pose").astype(np.float64), args.px_per_rad)
        c = ep.sim("coverage").astype(np.float64)
        moved = motion_labels(ep.frames, args.pixels) > 0  # the object moved into frame t
        moved_share.append(moved.mean())
        for k in args.lags:
            t = np.flatnonzero(moved[k:]) + k
            dr[k].append(r[t] - r[t - k])
            dd[k].append(d[t] - d[t - k])
            dc[k].append(c[t] - c[t - k])
    print(f"frames in which the object moved: {np.mean(moved_share):.3f}")
    print("Against the change of the T's distance to the goal pose (dd) and, where it changed, of the coverage (dc):")
    print(
        "| lag | moved frames | corr(dr, -dd) | sign agrees | sign agrees, top half of abs(dr) | abs(dr) median "
        "| frames with dc != 0 | sign agrees with dc |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in args.lags:
        a, b = np.concatenate(dr[k]), -np.concatenate(dd[k])
        keep = np.abs(b) > 1e-6  # the T really moved relative to the goal
        a, b = a[keep], b[keep]
        big = np.abs(a) >= np.median(np.abs(a))
        agree = np.mean(np.sign(a) == np.sign(b))
        agree_big = np.mean(np.sign(a[big]) == np.sign(b[big]))
        corr = np.corrcoef(a, b)[0, 1]
        ra, cc = np.concatenate(dr[k]), np.concatenate(dc[k])
        on = np.abs(cc) > 1e-6
        agree_c = np.mean(np.sign(ra[on]) == np.sign(cc[on])) if on.any() else float("nan")
        print(
            f"| {k} | {len(a)} | {corr:.3f} | {agree:.3f} | {agree_big:.3f} | {np.median(np.abs(a)):.4f} "
            f"| {on.sum()} | {agree_c:.3f} |"
        )


if __name__ == "__main__":
    main()
