"""Diagnostic store labels read from the simulator record: what a reward head could learn if its label were right.

The learned labels (the ranking reward, ``label-reward --contact``) are noisy and confounded with where the agent
is on the board. This writes labels computed from the store's simulator record (kept for evaluation only) so that
``bench/refit_reward_head.py --label oracle_reach`` and ``bench/pusht_oracle_check.py --reward head`` can tell
"the RSSM's features cannot express the agent-to-T relation / DMO-SAPO cannot follow it" apart from "the learned
label does not say it". Never used by training: a bench, like the oracle check itself.

- ``oracle_reach``: exp(-d / scale), d the agent's edge-to-T distance in pixels (1 at contact).
- ``oracle_reach_cov``: ``--reach-weight`` times that plus the coverage (standardized as the oracle check's
  ``--reward coverage``).

    python bench/oracle_labels.py --store runs/pusht-cpu/data/play
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pusht_oracle_check import standardized_coverage  # the script's folder is on sys.path
from worldgrad.data.store import EpisodeStore
from worldgrad.operators.pusht import agent_t_gaps


def reach(agent_pos: np.ndarray, block_pose: np.ndarray, scale: float) -> np.ndarray:
    return np.exp(-np.maximum(agent_t_gaps(agent_pos, block_pose), 0.0) / scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("runs/pusht-cpu/data/play"))
    parser.add_argument("--scale", type=float, default=60.0, help="pixels over which the reach label falls by e")
    parser.add_argument("--reach-weight", type=float, default=1.0, help="of the reach in oracle_reach_cov")
    parser.add_argument("--suffix", default="", help="appended to the label names (e.g. _w3)")
    args = parser.parse_args()
    store = EpisodeStore.open(args.store)
    near = []
    for ep in tqdm(list(store), desc="oracle labels"):
        r = reach(ep.sim("agent_pos"), ep.sim("block_pose"), args.scale).astype(np.float32)
        cov = standardized_coverage(ep.sim("coverage")).astype(np.float32)
        store.write_label(ep.key, f"oracle_reach{args.suffix}", r)
        store.write_label(ep.key, f"oracle_reach_cov{args.suffix}", args.reach_weight * r + cov)
        near.append(r)
    r = np.concatenate(near)
    print(f"oracle_reach over {len(r)} frames: mean {r.mean():.3f}, share > 0.5 {np.mean(r > 0.5):.3f}")


if __name__ == "__main__":
    main()
