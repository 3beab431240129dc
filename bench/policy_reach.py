"""Does a policy go to the T? Zero-shot Push-T figures of any ``worldgrad eval`` policies on the same held-out seeds,
plus how close the agent gets to the T (read from the simulator, for this evaluation only), and each policy's
per-seed difference in max coverage to the first policy listed (with its standard error).

Coverage alone cannot tell a policy that never reaches the T from one that reaches it and pushes it the wrong
way; ``reach_min_px`` (the smallest agent-to-T gap of an episode, edge to edge, averaged), ``reach_gain_px`` (how
much closer than at the start) and ``contact_frac`` (the share of steps within 5 px) can; ``wall_frac`` is the
share of steps with the agent within 30 px of a board edge. Writes every figure,
each episode's max coverage included, to ``OUT/results.json``.

    python bench/policy_reach.py --policies random checkpoint:runs/pusht-cpu/policy/policy.safetensors \\
        sampled:runs/pusht-cpu/policy/policy.safetensors --episodes 50

Policies can run in parallel processes (one core each) and still be paired: run the baseline alone, then give its
``results.json`` to the others with ``--against``; their differences are then to its first policy.

    python bench/policy_reach.py --policies random --episodes 1000 --out runs/reach-random &
    python bench/policy_reach.py --policies checkpoint:P --episodes 1000 --out runs/reach-p \\
        --against runs/reach-random/results.json   # read at the end: the baseline must have finished by then
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pusht_oracle_check import evaluate_with_reach
from worldgrad.envs.pusht import PushTConfig
from worldgrad.eval.harness import EvalConfig, paired_difference
from worldgrad.eval.policies import make_policy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=["random"], help="as `worldgrad eval --policies`")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("runs/policy-reach"))
    p.add_argument("--against", type=Path, help="results.json of an earlier run on as many seeds: pair with its first")
    args = p.parse_args()

    def against() -> tuple[str, np.ndarray]:
        spec, out = next(iter(json.loads(args.against.read_text()).items()))
        if len(out["max_coverages"]) != args.episodes:
            p.error(f"--against {args.against} has {len(out['max_coverages'])} episodes, not {args.episodes}")
        return spec, np.asarray(out["max_coverages"])

    if args.against is not None and args.against.exists():
        against()  # a mismatch is an error before the evaluation, not after it
    outs = []
    for i, spec in enumerate(args.policies):
        cfg = EvalConfig(episodes=args.episodes, videos=0, out=args.out / f"p{i}", pusht=PushTConfig())
        outs.append((spec, evaluate_with_reach(lambda env, spec=spec: make_policy(spec, env), cfg)))
    base, first = outs[0][0], np.asarray(outs[0][1]["max_coverages"])
    if args.against is not None:  # read (again) now, so the baseline may have run beside this one
        base, first = against()
    rows = []
    for spec, out in outs:
        rows.append((spec, out, *paired_difference(out["max_coverages"], first)))
    args.out.mkdir(parents=True, exist_ok=True)  # every figure, per-seed max coverages included
    (args.out / "results.json").write_text(json.dumps({spec: o for spec, o, _, _ in rows}, indent=1))
    print(f"{args.episodes} held-out seeds; differences are to {base} on the same seeds\n")
    print(
        "| policy | success | mean max coverage | vs first | mean final coverage | reach_min_px | reach_gain_px "
        "| contact | at a wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for spec, o, d, se in rows:
        print(
            f"| {spec} | {o['success_rate']:.0%} | {o['mean_max_coverage']:.4f} | {d:+.4f} +- {se:.4f} "
            f"| {o['mean_final_coverage']:.4f} | {o['reach_min_px']:.0f} | {o['reach_gain_px']:.0f} "
            f"| {o['contact_frac']:.1%} | {o['wall_frac']:.1%} |"
        )


if __name__ == "__main__":
    main()
