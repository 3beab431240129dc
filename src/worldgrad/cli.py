"""The ``worldgrad`` command line: ``worldgrad <command> [--preset NAME] [--field value ...]``.

Each command is a typed, frozen config dataclass plus a function. tyro turns the dataclass (and the
field docstrings) into flags; ``--preset`` picks the defaults those flags override.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    help: str
    load: Callable[[], tuple[type, dict[str, Any], Callable[[Any], Any]]]
    """returns (config class, presets by name, run function); imported lazily to keep --help fast"""


def _collect() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.commands import run_collect
    from worldgrad.data.collect import CollectConfig

    return CollectConfig, {}, run_collect


def _eval() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.commands import run_eval
    from worldgrad.eval.harness import EvalConfig

    return EvalConfig, {}, run_eval


def _import_lerobot() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.commands import run_import_lerobot
    from worldgrad.data.lerobot import ImportConfig

    return ImportConfig, {}, run_import_lerobot


def _train_reward() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.train_reward import PRESETS, TrainRewardConfig
    from worldgrad.commands import run_train_reward

    return TrainRewardConfig, PRESETS, run_train_reward


def _label_reward() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.reward_labels import LabelRewardConfig
    from worldgrad.commands import run_label_reward

    return LabelRewardConfig, {}, run_label_reward


def _refit_head() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.refit_head import RefitHeadConfig
    from worldgrad.commands import run_refit_head

    return RefitHeadConfig, {}, run_refit_head


def _eval_reward() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.commands import run_eval_reward
    from worldgrad.eval.reward import EvalRewardConfig

    return EvalRewardConfig, {}, run_eval_reward


def _train_wm() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.train_wm import PRESETS, TrainWMConfig
    from worldgrad.commands import run_train_wm

    return TrainWMConfig, PRESETS, run_train_wm


def _eval_wm() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.commands import run_eval_wm
    from worldgrad.eval.wm import EvalWMConfig

    return EvalWMConfig, {}, run_eval_wm


def _train_local() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.train_local import PRESETS, TrainLocalConfig
    from worldgrad.commands import run_train_local

    return TrainLocalConfig, PRESETS, run_train_local


def _eval_local() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.commands import run_eval_local
    from worldgrad.eval.local import EvalLocalConfig

    return EvalLocalConfig, {}, run_eval_local


def _train_bc() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.train_bc import PRESETS, TrainBCConfig
    from worldgrad.commands import run_train_bc

    return TrainBCConfig, PRESETS, run_train_bc


def _train_policy() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.train_policy import TrainPolicyConfig
    from worldgrad.commands import run_train_policy

    return TrainPolicyConfig, {}, run_train_policy


def _train_ppo() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.algos.train_ppo import PRESETS, TrainPPOConfig
    from worldgrad.commands import run_train_ppo

    return TrainPPOConfig, PRESETS, run_train_ppo


def _pipeline() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.pipeline import PRESETS, PipelineConfig, run_pipeline

    return PipelineConfig, PRESETS, run_pipeline


def _compare() -> tuple[type, dict[str, Any], Callable[[Any], Any]]:
    from worldgrad.eval.compare import PRESETS, CompareConfig, run_compare

    return CompareConfig, PRESETS, run_compare


COMMANDS: dict[str, Command] = {
    "collect": Command("record play data on the real system with a scripted operator", _collect),
    "import-lerobot": Command("import real-robot recordings in the LeRobot v2.x layout", _import_lerobot),
    "eval": Command("evaluate policies zero-shot on held-out seeds of the real system", _eval),
    "train-reward": Command("train the goal-conditioned ranking reward on passive video", _train_reward),
    "label-reward": Command("write the learned reward of every stored frame as a label", _label_reward),
    "eval-reward": Command("validate the reward against true coverage on held-out recordings", _eval_reward),
    "train-wm": Command("train the global diffusion world model on play data", _train_wm),
    "eval-wm": Command("open-loop fidelity of the world model on held-out recordings", _eval_wm),
    "train-local": Command("pretrain the local RSSM (the backward model) on play data", _train_local),
    "refit-head": Command("refit the local model's reward head alone on a store label (minutes)", _refit_head),
    "eval-local": Command("open-loop fidelity of the local RSSM on held-out recordings", _eval_local),
    "train-policy": Command("optimize an image policy with DMO-SAPO inside the world models", _train_policy),
    "train-ppo": Command("PPO baseline: an image policy trained with PPO inside the global world model", _train_ppo),
    "train-bc": Command("behaviour-cloning baseline: ACT on the intent-on segments of play data", _train_bc),
    "pipeline": Command("the main job: every stage end to end, reusing finished stages", _pipeline),
    "compare": Command("DMO-SAPO vs No Diffusion vs PPO: matched budgets and seeds, one report", _compare),
}


def _usage() -> str:
    lines = ["usage: worldgrad <command> [--preset NAME] [options]", "", "commands:"]
    lines += [f"  {name:<15} {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`worldgrad <command> --help` lists every option of a command."]
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> tuple[str, Any]:
    """Parses ``argv`` (without the program name) into (command name, resolved config)."""
    import tyro

    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())  # noqa: T201
        raise SystemExit(0)
    name, rest = argv[0], list(argv[1:])
    if name not in COMMANDS:
        print(f"worldgrad: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2)
    config_cls, presets, _ = COMMANDS[name].load()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(presets) if presets else None, default=None)
    known, rest = pre.parse_known_args(rest)
    if known.preset and not presets:
        raise SystemExit(f"worldgrad {name}: this command has no presets")
    default = presets[known.preset] if known.preset else (presets.get("tiny") if presets else None)
    description = COMMANDS[name].help
    if presets:
        description += f"\n\npresets (--preset NAME, default tiny): {', '.join(presets)}"
    config = tyro.cli(config_cls, args=rest, default=default, prog=f"worldgrad {name}", description=description)
    return name, config


def main(argv: Sequence[str] | None = None) -> None:
    # Set once here rather than at import time: pygame prints a banner on import otherwise.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        name, config = parse(sys.argv[1:] if argv is None else argv)
        COMMANDS[name].load()[2](config)
    except (ValueError, FileNotFoundError, ImportError) as e:
        # Bad input is reported in one line naming the problem and the fix, without a traceback.
        if os.environ.get("WORLDGRAD_DEBUG"):
            raise
        print(f"worldgrad: error: {e} (WORLDGRAD_DEBUG=1 shows the traceback)", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
