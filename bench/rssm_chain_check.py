"""How much of an action's effect on the agent's place survives DMO's backward chain through the RSSM?

DMO's actor gets the gradient of a window's end (the critic's bootstrap) with respect to an early action through
H steps of the local model's prior. On Push-T a delta action moves the agent by about 31 px per unit (0.62 of
``max_step_px`` 50 at 5 Hz) wherever it acts in the window, so d agent_H / d a_h should be ~31 on the diagonal
for every h (away from walls and the T). A ridge probe (``feature_probe``) maps the RSSM's features to the agent's
position (fit on held-out windows against the simulator record, evaluation only); along recorded windows (forward
latents filtered on the real frames, as DMO does on the world model's), the script prints d probe(l_H) / d a_h
for several h and the one-step d probe(l_{h+1}) / d a_h (medians over windows; diagonal x/x and y/y, off-diagonal
x/y and y/x). Last, the reward head's pull: the gradient of its discounted sum over the window with respect to
the first 4 actions, against the direction from the agent to the T (where the agent is 100-300 px away): whether
the head gives the actor a reason to approach the T (``label-reward --contact``).

    OMP_NUM_THREADS=1 python bench/rssm_chain_check.py --local runs/pusht-cpu/local/local.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from worldgrad.algos.dmo_sapo import decouple_state
from worldgrad.algos.train_local import load_local_model
from worldgrad.data.store import EpisodeStore
from worldgrad.eval.local import feature_probe, filtered_features, ridge_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", type=Path, required=True)
    parser.add_argument("--store", type=Path, default=Path("runs/pusht-cpu/data/heldout"))
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--context", type=int, default=8, help="recorded frames filtered before the window")
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--probe-windows", type=int, default=300)
    parser.add_argument("--gamma", type=float, default=0.9, help="discount of the reward head's window sum")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_local_model(args.local).requires_grad_(False)
    episodes = list(EpisodeStore.open(args.store))
    rng = np.random.default_rng(0)
    c, h_len = args.context, args.horizon

    def draw(n: int) -> list:
        eps = [episodes[i] for i in rng.integers(len(episodes), size=n)]
        return [(e, int(rng.integers(0, len(e) - c - h_len - 1))) for e in eps]

    feats, pos = [], []
    for e, t in draw(args.probe_windows):
        frames = np.asarray(e.frames[t : t + c + h_len])[None]
        acts = np.asarray(e.actions[t : t + c + h_len], dtype=np.float32)[None]
        feats.append(filtered_features(model, frames, acts)[0, c:])
        pos.append(np.asarray(e.sim("agent_pos"))[t + c : t + c + h_len])
    x, y = np.concatenate(feats).astype(np.float64), np.concatenate(pos).astype(np.float64)
    groups = np.repeat(np.arange(len(feats)), h_len)  # a window's frames never straddle the probe's split
    probe = feature_probe(x, y, groups)
    print(f"agent probe: held-out R^2 {probe['r2']:.2f}, median error {probe['median_err']:.1f} px "
          f"(ridge {probe['ridge']:g})")  # fmt: skip
    mu, sd, w, y_mu = ridge_fit(x, y, np.ones(len(x), dtype=bool), probe["ridge"])
    w, m, ym = (torch.as_tensor(v, dtype=torch.float32) for v in (w / sd[:, None], mu, y_mu))

    chain, one = np.zeros((args.windows, h_len, 2, 2)), np.zeros((args.windows, h_len, 2, 2))
    reach, dist = np.zeros(args.windows), np.zeros(args.windows)
    for i, (e, t) in enumerate(draw(args.windows)):
        frames = torch.as_tensor(np.asarray(e.frames[t : t + c + h_len + 1]))
        acts = torch.as_tensor(np.asarray(e.actions[t : t + c + h_len], dtype=np.float32))
        with torch.no_grad():
            posts, _ = model.observe(model.encode(frames[None, :c]), acts[None, :c])
        fwd = latent = type(posts)(*(s[:, -1] for s in posts))
        leaves = [acts[c + h][None].clone().requires_grad_(True) for h in range(h_len)]
        probes, head = [], torch.zeros(())
        for h in range(h_len):
            with torch.no_grad():
                fwd = model.observe_step(fwd, leaves[h].detach(), model.encode(frames[c + h + 1][None]))
            latent = decouple_state(model.step_prior(latent, leaves[h]), fwd)
            probes.append(((model.features(latent) - m) @ w + ym)[0])
            head = head + args.gamma**h * model.reward(model.features(latent))[0]
        # the reward head's pull on the first actions against the direction from the agent to the T
        pull = torch.stack(torch.autograd.grad(head, leaves[:4], retain_graph=True)).sum(0)[0].numpy()
        to_t = np.asarray(e.sim("block_pose"))[t + c, :2] - np.asarray(e.sim("agent_pos"))[t + c]
        dist[i] = np.hypot(*to_t)
        reach[i] = pull @ to_t / (np.linalg.norm(pull) * dist[i] + 1e-9)
        for k in range(2):
            grads = torch.autograd.grad(probes[-1][k], leaves, retain_graph=True)
            for h in range(h_len):
                chain[i, h, k] = grads[h][0].numpy()
                one[i, h, k] = torch.autograd.grad(probes[h][k], leaves[h], retain_graph=True)[0][0].numpy()
    print("| h | d agent_H / d a_h: x/x, y/y | off-diagonal x/y, y/x | one-step d agent_{h+1} / d a_h: x/x, y/y |")
    print("|---|---|---|---|")
    for h in sorted({0, h_len // 4, h_len // 2, 3 * h_len // 4, h_len - 1}):
        a, b = np.median(chain[:, h], 0), np.median(one[:, h], 0)
        print(f"| {h} | {a[0, 0]:.1f}, {a[1, 1]:.1f} | {a[0, 1]:.1f}, {a[1, 0]:.1f} | {b[0, 0]:.1f}, {b[1, 1]:.1f} |")
    print("share of positive diagonal entries per h:", np.round((chain[:, :, [0, 1], [0, 1]] > 0).mean((0, 2)), 2))
    far = (dist > 100) & (dist < 300)
    print(f"reward head's pull on the first 4 actions toward the T (agent 100-300 px from it, {far.sum()} windows): "
          f"cosine median {np.median(reach[far]):.2f}, positive in {np.mean(reach[far] > 0):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
