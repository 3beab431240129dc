"""Push-T as the "real system": gym-pusht 0.1.8 at 5 Hz, RGB images only, delta actions.

The wrapped simulator stands in for a real robot. It is used to record play data and to evaluate
policies; no training code may import this module. Everything in ``info`` (coverage, poses) is for
evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import gymnasium as gym
import numpy as np
import pygame
from gym_pusht.envs import PushTEnv as _SimPushT

from worldgrad.operators.base import PushTView

BOARD_PX = 512
GOAL_POSE = (256.0, 256.0, np.pi / 4)  # fixed by gym-pusht: body origin x, y and angle
AGENT_RADIUS_PX = 15.0
SUCCESS_COVERAGE = 0.95  # the simulator's own criterion (strictly greater than)


@dataclass(frozen=True)
class PushTConfig:
    """Push-T real system."""

    image_size: int = 64
    """side of the square RGB observation, in pixels"""
    control_hz: int = 5
    """control rate; physics runs at 100 Hz underneath"""
    max_step_px: float = 50.0
    """an action of 1 moves the end-effector target this many board pixels (board is 512 px)"""
    max_episode_steps: int = 150
    """episode length limit (150 steps = 30 s at 5 Hz)"""
    terminate_on_success: bool = True
    """end the episode when coverage > 0.95; play collection turns this off"""
    target_margin_px: float = 20.0
    """end-effector targets are clipped to [margin, 512 - margin] so the agent stays on the board"""

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size > BOARD_PX:
            raise ValueError(f"pusht.image_size={self.image_size} is out of range; use 8..{BOARD_PX}")
        if 100 % self.control_hz != 0:
            raise ValueError(f"pusht.control_hz={self.control_hz} must divide the 100 Hz physics rate")
        if self.max_step_px <= 0:
            raise ValueError(f"pusht.max_step_px={self.max_step_px} must be positive")
        if self.max_episode_steps < 1:
            raise ValueError(f"pusht.max_episode_steps={self.max_episode_steps} must be >= 1")


def render_canvas(sim: _SimPushT, size: int) -> np.ndarray:
    """Draws the scene as gym-pusht would and resizes it, fast.

    gym-pusht copies its 512x512 canvas through ``surfarray`` plus a transpose (about 2 ms); reading the
    surface bytes directly gives the bitwise-same canvas about 4x faster. INTER_AREA downsampling
    anti-aliases the thin walls and the small agent instead of dropping pixels as INTER_LINEAR does.
    """
    surface = sim._draw()
    canvas = np.frombuffer(pygame.image.tobytes(surface, "RGB"), dtype=np.uint8).reshape(BOARD_PX, BOARD_PX, 3)
    if size == BOARD_PX:
        return canvas.copy()
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def place_block(sim: _SimPushT, x: float, y: float, angle: float) -> None:
    """Places the T exactly at (x, y, angle).

    gym-pusht's ``reset_to_state`` sets the position before the angle, which rotates the block about its
    centre of gravity and moves it; setting the angle first lands it where asked.
    """
    sim.block.angle = angle
    sim.block.position = (x, y)
    sim.space.step(sim.dt)


class PushTEnv(gym.Env[np.ndarray, np.ndarray]):
    """Push-T with RGB observations and delta end-effector actions at ``control_hz``.

    Observation: ``uint8`` array (H, W, 3). Action: ``float32`` (2,) in [-1, 1]; the end-effector target
    becomes ``agent_position + action * max_step_px`` (the robot's own controller knows where the
    end-effector is; the policy does not). Reward is 0: worldgrad never trains on simulator rewards.
    ``info`` carries ``coverage``, ``is_success``, ``agent_pos`` and ``block_pose`` for evaluation only.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, config: PushTConfig | None = None, render_mode: str | None = "rgb_array") -> None:
        self.config = config or PushTConfig()
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}
        size = self.config.image_size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        # obs_type="state" keeps gym-pusht from rendering its own (slower) image on every step.
        self._sim = _SimPushT(obs_type="state", render_mode="rgb_array")
        self._sim.control_hz = self.config.control_hz
        self._steps = 0
        self._coverage = 0.0

    # -- gymnasium API -------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # The simulator keeps its own np_random; seeding it from ours keeps one reproducible stream.
        sim_seed = int(self.np_random.integers(2**31 - 1))
        self._sim.reset(seed=sim_seed)
        options = options or {}
        if options.get("agent_pos") is not None:
            self._sim.agent.position = tuple(map(float, options["agent_pos"]))
            self._sim.agent.velocity = (0.0, 0.0)
        if options.get("block_pose") is not None:
            place_block(self._sim, *map(float, options["block_pose"]))
        elif options.get("agent_pos") is not None:
            self._sim.space.step(self._sim.dt)  # let pymunk refresh the moved agent's shape
        self._steps = 0
        self._coverage = float(self._sim._get_coverage())
        return self._observe(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (2,):
            raise ValueError(f"Push-T takes actions of shape (2,), got {action.shape}; pass [dx, dy] in [-1, 1]")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"Push-T got a non-finite action {action}; check the policy's output")
        target = self.target_for(action)
        _, _, _, _, info = self._sim.step(target)
        self._steps += 1
        self._coverage = float(info["coverage"])
        success = self._coverage > SUCCESS_COVERAGE
        terminated = bool(success and self.config.terminate_on_success)
        truncated = self._steps >= self.config.max_episode_steps and not terminated
        return self._observe(), 0.0, terminated, truncated, self._info()

    def render(self) -> np.ndarray:
        return render_canvas(self._sim, self.config.image_size)

    def close(self) -> None:
        self._sim.close()

    # -- helpers -------------------------------------------------------------------------------------

    def target_for(self, action: np.ndarray) -> np.ndarray:
        """End-effector target in board pixels for a delta action in [-1, 1]^2."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        lo, hi = self.config.target_margin_px, BOARD_PX - self.config.target_margin_px
        return np.clip(self.agent_pos + a * self.config.max_step_px, lo, hi)

    @property
    def agent_pos(self) -> np.ndarray:
        return np.array(self._sim.agent.position, dtype=np.float64)

    @property
    def block_pose(self) -> np.ndarray:
        b = self._sim.block
        return np.array([b.position.x, b.position.y, b.angle], dtype=np.float64)

    def operator_view(self) -> PushTView:
        """What a teleoperator looking at the screen sees (for scripted play operators)."""
        return PushTView(self.agent_pos, self.block_pose, np.array(GOAL_POSE))

    @property
    def sim_time(self) -> float:
        """Simulated seconds since reset (one step = 1 / control_hz)."""
        return self._steps / self.config.control_hz

    def _observe(self) -> np.ndarray:
        return render_canvas(self._sim, self.config.image_size)

    def _info(self) -> dict[str, Any]:
        return {
            "coverage": self._coverage,
            "is_success": self._coverage > SUCCESS_COVERAGE,
            "agent_pos": self.agent_pos,
            "block_pose": self.block_pose,
        }


def render_goal_image(config: PushTConfig | None = None, agent_pos: tuple[float, float] = (256.0, 440.0)) -> np.ndarray:
    """The image a user would show as the goal: the T on its target pose, the agent out of the way.

    The agent is in every recorded frame, so the goal image keeps it (at a fixed, documented spot
    below the goal) rather than presenting an image unlike anything in the data.
    """
    env = PushTEnv(config or PushTConfig())
    try:
        image, _ = env.reset(seed=0, options={"block_pose": GOAL_POSE, "agent_pos": agent_pos})
    finally:
        env.close()
    return image


def render_goal_images(config: PushTConfig | None = None, n: int = 8, radius: float = 170.0) -> np.ndarray:
    """``n`` goal images (n, H, W, 3): the T on its goal pose, the agent on a ring around it.

    A reward conditioned on one goal image also rewards matching that image's agent position; a set of
    agent positions lets the reward average it out.
    """
    angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False) + np.pi / 2
    spots = [(256.0 + radius * np.cos(a), 256.0 + radius * np.sin(a)) for a in angles]
    return np.stack([render_goal_image(config, agent_pos=spot) for spot in spots])
