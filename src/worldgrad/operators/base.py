"""The interface of a scripted play operator: a stand-in for a human teleoperator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PushTView:
    """What a human operator sees on the Push-T screen, nothing more.

    No velocities, no coverage or reward, no contact forces: a person judges the scene by eye.
    """

    agent_pos: np.ndarray
    """(2,) end-effector position in board pixels (512 x 512, y down)"""
    block_pose: np.ndarray
    """(3,) T body origin x, y in board pixels and its angle in radians"""
    goal_pose: np.ndarray
    """(3,) where the T should go (the user knows the goal)"""


class Operator(Protocol):
    """A scripted operator. ``act`` returns a delta action in [-1, 1]^2 and the intent flag.

    The intent flag is on while the operator is trying to do the task (a human pressing a button).
    """

    name: str

    def reset(self, rng: np.random.Generator) -> None:
        """Starts a new episode; all randomness must come from ``rng`` (reproducible collection)."""
        ...

    def act(self, view: PushTView) -> tuple[np.ndarray, bool]:
        """Returns ``(action, intent)``: ``action`` float32 (2,) in [-1, 1]^2."""
        ...
