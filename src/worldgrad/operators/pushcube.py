"""Scripted Push Cube teleoperators: ``explorer`` (play), ``pusher`` (play mixed with task attempts, intent
button on during them) and ``expert`` (task attempts only, careful: a scripted demonstrator and reference).

A person with a joystick stands in the room and sees where the robot, the cube and the gate are
(:class:`PushCubeView`), not what the camera sees; the operators read nothing else. The stick is
smoothed by a low-pass filter plus a little Ornstein-Uhlenbeck noise. In play the robot wanders, turns
on the spot (losing the cube from view), turns back to look for it and pokes it about; in task segments
it walks around the cube to the side opposite the gate, then pushes it in, keeping it centred on the
bumper, and now and then stops short as a cautious person would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Robot geometry a person knows by looking: base centre to the cube's centre when the bumper touches it.
CONTACT = 0.38
STANDOFF = 0.7  # where a push starts: this far behind the cube, on the line through cube and target
CLEAR = 0.65  # walk around the cube at this radius to reach the far side without touching it
WALL_MARGIN = 0.5  # keep the base centre this far inside the walls


@dataclass(frozen=True)
class PushCubeView:
    """What a person standing in the room sees: where the robot, the cube and the goal are.

    No velocities, no contact forces, no success flag: a person judges the scene by eye.
    """

    base_pose: np.ndarray
    """(3,) robot x, y (m) and heading (rad, counter-clockwise from +x)"""
    cube_pos: np.ndarray
    """(2,) cube centre x, y (m)"""
    goal_pos: np.ndarray
    """(2,) centre of the goal behind the gate"""
    gate_x: float
    """the goal line (between the posts) is at this x; the gate opens toward -x"""
    gate_half_width: float
    """the posts stand at y = +-gate_half_width"""
    arena_half: float
    """the walls stand at x, y = +-arena_half"""
    pillars: np.ndarray
    """(k, 3) pillars a person walks the robot around: x, y, radius"""


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def in_goal(view: PushCubeView) -> bool:
    c, depth = view.cube_pos, 2 * (view.goal_pos[0] - view.gate_x)
    return bool(view.gate_x + 0.05 < c[0] < view.gate_x + depth and abs(c[1]) < view.gate_half_width - 0.05)


def push_direction(cube: np.ndarray, target: np.ndarray, view: PushCubeView) -> np.ndarray | None:
    """The direction closest to cube -> target whose push start spot has room for the robot.

    Next to a wall or a pillar the straight push would start inside it; a person pushes along the wall
    (or a bit away from it) first. None if no direction within 90 degrees of the wanted one works.
    """
    ideal = float(np.arctan2(target[1] - cube[1], target[0] - cube[0]))
    for delta in (0.0, 0.3, -0.3, 0.6, -0.6, 0.9, -0.9, 1.2, -1.2, 1.5, -1.5):
        d = np.array([np.cos(ideal + delta), np.sin(ideal + delta)])
        start = cube - d * STANDOFF
        extent = np.abs(d) * 0.36 + np.abs(d[::-1]) * 0.2  # the robot's half footprint, facing d
        clear = all(np.hypot(*(start - p[:2])) > p[2] + 0.45 for p in view.pillars)
        gate_depth = 2 * (view.goal_pos[0] - view.gate_x)
        in_gate = view.gate_x - 0.35 < start[0] < view.gate_x + gate_depth + 0.35
        clear = clear and not (in_gate and abs(start[1]) < view.gate_half_width + 0.3)
        if clear and np.all(np.abs(start) + extent < view.arena_half - 0.05):
            return d
    return None


def detour(pos: np.ndarray, waypoint: np.ndarray, pillars: np.ndarray, clearance: float = 0.45) -> np.ndarray:
    """``waypoint``, or a point beside the first pillar in the way (people walk around obstacles)."""
    seg = waypoint - pos
    length = float(np.linalg.norm(seg))
    for x, y, r in pillars:
        p = np.array([x, y])
        s = float(np.clip((p - pos) @ seg / max(length**2, 1e-9), 0.0, 1.0))
        closest = pos + s * seg
        if np.linalg.norm(p - closest) < r + clearance and np.linalg.norm(p - pos) < length + r + clearance:
            side = closest - p if np.linalg.norm(closest - p) > 1e-6 else np.array([-seg[1], seg[0]])
            return p + unit(side) * (r + clearance + 0.15)
    return waypoint


@dataclass
class Stick:
    """A joystick in a person's hand: the command chases the wanted one through a low-pass filter."""

    limits: np.ndarray
    smoothing: float = 0.45
    noise: float = 0.05
    command: np.ndarray | None = None
    ou: np.ndarray | None = None

    def reset(self) -> None:
        self.command, self.ou = np.zeros(3), np.zeros(3)

    def action(self, wanted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``wanted``: body-frame (forward m/s, lateral m/s, yaw rad/s) -> action in [-1, 1]^3."""
        assert self.command is not None and self.ou is not None
        self.command += self.smoothing * (np.clip(wanted / self.limits, -1.0, 1.0) - self.command)
        self.ou += -0.3 * self.ou + self.noise * rng.normal(size=3)
        return np.clip(self.command + self.ou, -1.0, 1.0).astype(np.float32)


def drive_to(pose: np.ndarray, point: np.ndarray, heading: float, speed: float) -> np.ndarray:
    """Body-frame velocity that walks the base to ``point`` while turning to ``heading`` (holonomic)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    err = point - pose[:2]
    local = np.array([c * err[0] + s * err[1], -s * err[0] + c * err[1]])
    dist = float(np.linalg.norm(local))
    v = local / dist * min(speed, 1.5 * dist) if dist > 1e-6 else np.zeros(2)
    # Walking sideways is slow: turn toward the heading first, walk mostly forward.
    yaw_err = wrap(heading - pose[2])
    v[1] = float(np.clip(v[1], -0.4, 0.4))
    return np.array([v[0], v[1], float(np.clip(2.0 * yaw_err, -1.5, 1.5))])


class _Base:
    """Shared machinery: a queue of play behaviours, a task controller and segments of intent."""

    name = "base"

    def __init__(
        self,
        limits: Sequence[float] = (1.0, 0.5, 1.5),
        task_fraction: float = 0.0,
        caution: float = 0.25,
        noise: float = 0.05,
    ) -> None:
        self.stick = Stick(np.asarray(limits, dtype=np.float64), noise=noise)
        self.task_fraction, self.caution = task_fraction, caution
        self.rng = np.random.default_rng(0)
        self.plan: list[tuple[str, np.ndarray, int]] = []  # (behaviour, parameter, steps left)
        self.intent = False
        self.segment_left = 0
        self.pushing = False
        self.stop_at = 0.0  # a cautious attempt ends once the cube is this close to the goal
        self.last_cube: np.ndarray | None = None
        self.last_base: np.ndarray | None = None
        self.stalled = self.wedged = 0

    def reset(self, rng: np.random.Generator) -> None:
        self.rng, self.plan, self.intent, self.segment_left, self.pushing = rng, [], False, 0, False
        self.last_cube = self.last_base = None
        self.stalled = self.wedged = 0
        self.stick.reset()

    def act(self, view: PushCubeView) -> tuple[np.ndarray, bool]:
        if self.segment_left <= 0:
            self._new_segment()
        self.segment_left -= 1
        wanted = self._task(view) if self.intent else None
        if wanted is None:  # play, or the attempt ended (scored, stopped short, impossible push)
            if self.intent:
                self.intent, self.plan = False, [("back", np.zeros(1), int(self.rng.integers(4, 10)))]
            wanted = self._play(view)
        return self.stick.action(wanted, self.rng), self.intent

    def _new_segment(self) -> None:
        self.intent = bool(self.rng.random() < self.task_fraction)
        self.segment_left = int(self.rng.integers(60, 200) if self.intent else self.rng.integers(30, 150))
        self.plan, self.pushing = [], False
        cautious = self.rng.random() < self.caution
        self.stop_at = float(self.rng.uniform(0.5, 1.2)) if cautious else 0.0

    # -- play ------------------------------------------------------------------------------------------

    def _play(self, view: PushCubeView) -> np.ndarray:
        if not self.plan:
            self._plan_play(view)
        kind, arg, left = self.plan[0]
        pose = view.base_pose
        if kind == "goto":
            point = detour(pose[:2], arg[:2], view.pillars)
            heading = arg[2] if np.isfinite(arg[2]) else float(np.arctan2(*(point - pose[:2])[::-1]))
            wanted = drive_to(pose, point, heading, speed=arg[3])
            done = np.linalg.norm(arg[:2] - pose[:2]) < 0.15
        elif kind == "turn":  # turn on the spot to a heading (the cube drops out of view)
            err = wrap(arg[0] - pose[2])
            wanted, done = np.array([0.0, 0.0, float(np.clip(2.0 * err, -arg[1], arg[1]))]), abs(err) < 0.1
        elif kind == "look":  # turn until facing the cube again
            err = wrap(float(np.arctan2(*(view.cube_pos - pose[:2])[::-1])) - pose[2])
            wanted, done = np.array([0.0, 0.0, float(np.clip(2.0 * err, -1.2, 1.2))]), abs(err) < 0.08
        elif kind == "poke":  # push the cube toward a random point (play, no intent)
            wanted = self._push(view, arg[:2], speed=0.45)
            done = wanted is None
            wanted = np.zeros(3) if wanted is None else wanted
        elif kind == "back":  # step back from the cube, as people do after a push
            wanted, done = np.array([-0.3, 0.0, 0.0]), False
        else:  # pause
            wanted, done = np.zeros(3), False
        left -= 1
        if done or left <= 0:
            self.plan.pop(0)
            self.pushing = False
        else:
            self.plan[0] = (kind, arg, left)
        return wanted

    def _plan_play(self, view: PushCubeView) -> None:
        r, pose = self.rng, view.base_pose
        lim = view.arena_half - WALL_MARGIN
        choice = r.choice(5, p=[0.3, 0.2, 0.15, 0.25, 0.1])
        if choice == 0:  # wander to a spot, mostly facing the way, sometimes sideways or backwards
            spot = self._free_spot(view)
            heading = float(r.uniform(-np.pi, np.pi)) if r.random() < 0.25 else np.nan
            self.plan.append(("goto", np.array([*spot, heading, r.uniform(0.3, 0.9)]), int(r.integers(15, 50))))
        elif choice == 1:  # look away
            target = pose[2] + r.choice([-1, 1]) * r.uniform(np.pi / 3, np.pi)
            self.plan.append(("turn", np.array([target, r.uniform(0.6, 1.5)]), int(r.integers(8, 25))))
        elif choice == 2:  # find the cube again, then look at it a moment
            self.plan.append(("look", np.zeros(1), int(r.integers(10, 25))))
            self.plan.append(("pause", np.zeros(1), int(r.integers(2, 8))))
        elif choice == 3:  # poke the cube somewhere
            target = view.cube_pos + unit(r.normal(size=2)) * r.uniform(0.4, 1.2)
            self.plan.append(("poke", np.clip(target, -lim, lim), int(r.integers(20, 60))))
            self.plan.append(("back", np.zeros(1), int(r.integers(3, 8))))
        else:
            self.plan.append(("pause", np.zeros(1), int(r.integers(3, 12))))

    def _free_spot(self, view: PushCubeView) -> np.ndarray:
        lim = view.arena_half - WALL_MARGIN
        for _ in range(50):
            spot = self.rng.uniform(-lim, lim, 2)
            if not (spot[0] > view.gate_x - 0.8 and abs(spot[1]) < view.gate_half_width + 0.6):
                return spot
        return np.zeros(2)

    # -- task ------------------------------------------------------------------------------------------

    def _task(self, view: PushCubeView) -> np.ndarray | None:
        """Pushes the cube toward the goal; None once the attempt is over."""
        # A robot that has not moved for 3 s is wedged somewhere: a person gives up this attempt.
        moved = float(np.linalg.norm(view.base_pose[:2] - self.last_base)) if self.last_base is not None else 1.0
        self.last_base = view.base_pose[:2].copy()
        self.wedged = self.wedged + 1 if moved < 0.005 else 0
        if self.wedged > 15:
            self.wedged = 0
            return None
        c, goal = view.cube_pos, view.goal_pos
        if in_goal(view) or (self.stop_at > 0 and np.linalg.norm(goal - c) < self.stop_at):
            return None
        mouth = np.array([view.gate_x - 0.6, 0.0])
        to_goal = goal - c
        in_lane = abs(c[1]) < view.gate_half_width - 0.12  # in line with the mouth, on either side of it
        if in_lane or (c[0] < view.gate_x - 0.1 and abs(np.arctan2(to_goal[1], to_goal[0])) < 0.6):
            target = goal + np.array([0.1, 0.0])  # straight in: aim past the centre so the push carries it home
        elif c[0] < view.gate_x - 0.1:
            target = mouth  # line it up in front of the mouth first
        else:
            target = np.array([view.gate_x - 0.9, c[1]])  # beside the gate: bring it back out
        return self._push(view, target, speed=0.6)

    def _push(self, view: PushCubeView, target: np.ndarray, speed: float) -> np.ndarray | None:
        """One step of pushing the cube toward ``target``: approach its far side, then push through it.

        Returns None when the cube is there or the push cannot be made (the start spot is in a wall).
        """
        pose, c = view.base_pose, view.cube_pos
        if np.linalg.norm(target - c) < 0.08:
            return None
        # A person notices a push that goes nowhere (cube against a pillar or a wall) and gives up.
        moved = float(np.linalg.norm(c - self.last_cube)) if self.last_cube is not None else 1.0
        self.last_cube = c.copy()
        self.stalled = self.stalled + 1 if self.pushing and moved < 0.01 else 0
        if self.stalled > 8:
            self.pushing, self.stalled = False, 0
            return None
        target = detour(c, target, view.pillars, clearance=0.35)  # steer the cube past pillars
        d = push_direction(c, target, view)
        if d is None:
            return None
        start = c - d * STANDOFF
        lim = view.arena_half - 0.35
        rel = c - pose[:2]
        along, across = float(rel @ d), float(rel[0] * d[1] - rel[1] * d[0])
        heading = float(np.arctan2(d[1], d[0]))
        yaw_err = wrap(heading - pose[2])
        # Hysteresis: start pushing only when squarely behind the cube, keep going while roughly so.
        if self.pushing:
            self.pushing = 0.2 < along < 1.0 and abs(across) < 0.14 and abs(yaw_err) < 0.6
        else:
            self.pushing = 0.3 < along < STANDOFF + 0.15 and abs(across) < 0.07 and abs(yaw_err) < 0.25
        if self.pushing:
            slow = min(1.0, 0.4 + float(np.linalg.norm(target - c)))  # ease off near the target
            cos, sin = np.cos(pose[2]), np.sin(pose[2])
            lateral = -sin * rel[0] + cos * rel[1]  # cube's offset from the bumper's centre
            return np.array([speed * slow, 1.5 * lateral, float(np.clip(2.0 * yaw_err, -1.0, 1.0))])
        # Approach: go around the cube (on a circle about it) until the straight way to ``start`` is clear.
        look = float(np.arctan2(rel[1], rel[0]))  # a person keeps the robot facing the cube
        away = pose[:2] - c
        side = wrap(float(np.arctan2(-d[1], -d[0])) - float(np.arctan2(away[1], away[0])))
        if abs(side) > 0.6 and np.linalg.norm(away) < CLEAR + 0.6:
            angle = float(np.arctan2(away[1], away[0])) + np.sign(side) * min(abs(side), 1.0)
            waypoint = c + CLEAR * np.array([np.cos(angle), np.sin(angle)])
            return drive_to(pose, detour(pose[:2], np.clip(waypoint, -lim, lim), view.pillars), look, speed=0.6)
        face = heading if np.linalg.norm(start - pose[:2]) < 0.4 else look
        return drive_to(pose, detour(pose[:2], start, view.pillars), face, speed=0.6)


class Explorer(_Base):
    """Play only: wanders, looks away and back, pokes the cube about. Never claims intent."""

    name = "explorer"

    def __init__(self, limits: Sequence[float] = (1.0, 0.5, 1.5)) -> None:
        super().__init__(limits, task_fraction=0.0)


class Pusher(_Base):
    """Play mixed with task attempts (intent on): about half the segments try to score, some stop short."""

    name = "pusher"

    def __init__(self, limits: Sequence[float] = (1.0, 0.5, 1.5), task_fraction: float = 0.5) -> None:
        super().__init__(limits, task_fraction=task_fraction, caution=0.25)


class Expert(_Base):
    """Always on task and never stopping short, with a steady hand: a scripted demonstrator / reference."""

    name = "expert"

    def __init__(self, limits: Sequence[float] = (1.0, 0.5, 1.5)) -> None:
        super().__init__(limits, task_fraction=1.0, caution=0.0, noise=0.02)


OPERATOR_NAMES = ("explorer", "pusher", "expert")


def make_operator(name: str, limits: Sequence[float] = (1.0, 0.5, 1.5)) -> _Base:
    """A fresh Push Cube operator by name; ``limits`` are the env's velocities for an action of 1."""
    if name == "explorer":
        return Explorer(limits)
    if name == "pusher":
        return Pusher(limits)
    if name == "expert":
        return Expert(limits)
    raise ValueError(f"unknown pushcube operator {name!r}; choose from {', '.join(OPERATOR_NAMES)}")
