import os
import subprocess
import sys

import pytest

from worldgrad.cli import parse

ENV = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worldgrad.cli", *args], capture_output=True, text=True, env=ENV)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0 and "collect" in out.stdout and "pipeline" in out.stdout


def test_command_help_shows_field_docs():
    out = run_cli("collect", "--help")
    assert out.returncode == 0 and "--frames" in out.stdout and "total frames to record" in out.stdout


def test_overrides_and_presets_compose():
    name, cfg = parse(["collect", "--frames", "123", "--pusht.image-size", "48"])
    assert name == "collect" and cfg.frames == 123 and cfg.pusht.image_size == 48
    _, cfg = parse(["pipeline", "--preset", "cpu", "--eval-episodes", "7"])
    assert cfg.preset == "cpu" and cfg.play_frames == 72_000 and cfg.eval_episodes == 7
    _, cfg = parse(["pipeline"])
    assert cfg.preset == "tiny"


def test_bad_input_gives_one_line_error():
    out = run_cli("eval", "--policies", "greedy", "--episodes", "1")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown policy 'greedy'" in out.stderr
    out = run_cli("collect", "--seed", "1000000", "--frames", "10")
    assert out.returncode == 2 and "evaluation range" in out.stderr and "Traceback" not in out.stderr


def test_unknown_command_and_preset():
    assert run_cli("fly").returncode == 2
    with pytest.raises(SystemExit):
        parse(["pipeline", "--preset", "huge"])
