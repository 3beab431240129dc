"""Scripted Push-T teleoperators: ``explorer`` (play), ``pusher`` (play mixed with task attempts) and
``expert`` (task attempts only, careful: a scripted demonstrator and evaluation reference).

Both move a virtual hand toward waypoints with a low-pass-filtered velocity plus a little
Ornstein-Uhlenbeck noise, so the motion is smooth like a person dragging a mouse, and both read only
the :class:`PushTView` (positions on the screen). Contact between the round end-effector and the T is
frictionless in gym-pusht, so a push acts along the edge's inward normal: the operators push edges
head-on, from a stand-off point reached by going around the T rather than through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldgrad.operators.base import Operator, PushTView

AGENT_R = 15.0
BOARD = (40.0, 472.0)  # waypoints stay inside the walls
# T in body coordinates: a 120x30 bar (y in [0, 30]) and a 30x90 stem below it (y in [30, 120]).
_BOXES = np.array([[-60.0, 0.0, 60.0, 30.0], [-15.0, 30.0, 15.0, 120.0]])
_COG = np.array([0.0, 45.0])  # gym-pusht's centre of gravity (mean of the two shape centroids)
_OUTLINE = np.array([[-60, 0], [60, 0], [60, 30], [15, 30], [15, 120], [-15, 120], [-15, 30], [-60, 30]], float)
_MOMENT = 3000.0  # the T's moment of inertia in gym-pusht (mass 1)
_ANGLE_PX = 60.0  # an angle error of 1 rad weighs like 60 px of position error
_CLEAR_R = 77.0 + AGENT_R + 10.0  # farthest T point from the CoG + agent radius + margin


def _rot(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _contacts() -> tuple[np.ndarray, np.ndarray]:
    """Points on the T outline (body frame) the round end-effector can touch, with outward normals."""
    pts, normals = [], []
    area2 = np.sum(_OUTLINE[:, 0] * np.roll(_OUTLINE[:, 1], -1) - np.roll(_OUTLINE[:, 0], -1) * _OUTLINE[:, 1])
    for a, b in zip(_OUTLINE, np.roll(_OUTLINE, -1, axis=0), strict=True):
        edge = b - a
        n = np.array([edge[1], -edge[0]]) / np.linalg.norm(edge) * np.sign(area2)
        length = np.linalg.norm(edge)
        for s in np.arange(8.0, length - 7.0, 10.0):
            p = a + edge * s / length
            # skip spots that a 15 px disc cannot reach because the other arm of a concave corner is in the way
            if min(np.linalg.norm(p - c) for c in ([15, 30], [-15, 30])) < AGENT_R + 2 and abs(p[1] - 30) < 1:
                continue
            pts.append(p)
            normals.append(n)
    return np.array(pts), np.array(normals)


_CONTACT_PTS, _CONTACT_NORMALS = _contacts()


def t_distance(point: np.ndarray, pose: np.ndarray) -> float:
    """Distance from a board point to the T at ``pose`` (negative inside)."""
    local = _rot(-pose[2]) @ (point - pose[:2])
    d = np.inf
    for x0, y0, x1, y1 in _BOXES:
        q = np.abs(local - [(x0 + x1) / 2, (y0 + y1) / 2]) - [(x1 - x0) / 2, (y1 - y0) / 2]
        d = min(d, float(np.linalg.norm(np.maximum(q, 0.0)) + min(max(q[0], q[1]), 0.0)))
    return d


CONTACT_PX = 5.0
"""an agent-to-T gap below this counts as contact in the evaluation-only reach metrics"""


def agent_t_gaps(agent_pos: np.ndarray, block_poses: np.ndarray) -> np.ndarray:
    """Edge-to-edge gaps (T,) between the agent's disc and the T along a recorded trajectory (negative: overlap);
    for evaluation-only reach metrics and diagnostics read from the simulator record."""
    return np.array([t_distance(a, p) - AGENT_R for a, p in zip(agent_pos, block_poses, strict=True)])


def cog_world(pose: np.ndarray) -> np.ndarray:
    return pose[:2] + _rot(pose[2]) @ _COG


def wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


@dataclass
class Hand:
    """A smooth virtual hand: velocity chases the waypoint direction through a low-pass filter."""

    max_step_px: float
    speed: float = 30.0
    smoothing: float = 0.5
    noise: float = 0.08
    velocity: np.ndarray | None = None
    ou: np.ndarray | None = None

    def reset(self) -> None:
        self.velocity, self.ou = np.zeros(2), np.zeros(2)

    def action(self, agent: np.ndarray, waypoint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert self.velocity is not None and self.ou is not None
        delta = waypoint - agent
        dist = float(np.linalg.norm(delta))
        # slow down near the waypoint: the filtered velocity would otherwise overshoot into the T
        desired = delta / dist * min(self.speed, 0.6 * dist) if dist > 1e-6 else np.zeros(2)
        self.velocity += self.smoothing * (desired - self.velocity)
        self.ou += -0.3 * self.ou + self.noise * rng.normal(size=2)
        return np.clip(self.velocity / self.max_step_px + self.ou, -1.0, 1.0).astype(np.float32)


class _Base:
    """Shared plan-following: a queue of (waypoint, steps, speed) legs, re-planned when empty."""

    name = "base"

    def __init__(self, max_step_px: float) -> None:
        self.hand = Hand(max_step_px)
        self.rng = np.random.default_rng(0)
        self.legs: list[tuple[np.ndarray, int, float]] = []
        self.intent = False

    def reset(self, rng: np.random.Generator) -> None:
        self.rng, self.legs, self.intent = rng, [], False
        self.hand.reset()

    def act(self, view: PushTView) -> tuple[np.ndarray, bool]:
        if not self.legs:
            self.plan(view)
        waypoint, steps, speed = self.legs[0]
        self.hand.speed = speed
        action = self.hand.action(view.agent_pos, waypoint, self.rng)
        steps -= 1
        if steps <= 0 or (np.linalg.norm(waypoint - view.agent_pos) < 4.0 and speed > 0):
            self.legs.pop(0)
        else:
            self.legs[0] = (waypoint, steps, speed)
        return action, self.intent

    def plan(self, view: PushTView) -> None:
        raise NotImplementedError

    # -- building blocks -----------------------------------------------------------------------------

    def wander(self, view: PushTView) -> None:
        target = self.rng.uniform(*BOARD, size=2)
        self.legs.append((target, int(self.rng.integers(8, 25)), float(self.rng.uniform(20, 50))))
        if self.rng.random() < 0.25:  # a person pauses now and then
            self.legs.append((target, int(self.rng.integers(2, 8)), 0.0))

    def approach(self, view: PushTView, standoff: np.ndarray) -> None:
        """Legs that reach ``standoff`` going around the T (on a circle about its CoG), not through it."""
        centre, pos = cog_world(view.block_pose), view.agent_pos.copy()
        for _ in range(6):
            if self._path_clear(pos, standoff, view.block_pose):
                break
            a_from = np.arctan2(*(pos - centre)[::-1])
            a_to = np.arctan2(*(standoff - centre)[::-1])
            turn = np.clip(wrap(a_to - a_from), -np.pi / 3, np.pi / 3)
            radius = max(_CLEAR_R, float(np.linalg.norm(pos - centre)))
            pos = np.clip(centre + radius * np.array([np.cos(a_from + turn), np.sin(a_from + turn)]), *BOARD)
            self.legs.append((pos, 15, 50.0))
        self.legs.append((standoff, 20, 45.0))

    @staticmethod
    def _path_clear(a: np.ndarray, b: np.ndarray, pose: np.ndarray) -> bool:
        return all(t_distance(a + (b - a) * s, pose) > AGENT_R + 4 for s in np.linspace(0.0, 1.0, 12))

    def push(self, view: PushTView, index: int, depth: float, speed: float) -> None:
        """Approach contact ``index`` and push the T along that edge's inward normal by ``depth`` px."""
        R = _rot(view.block_pose[2])
        point = view.block_pose[:2] + R @ _CONTACT_PTS[index]
        normal = R @ _CONTACT_NORMALS[index]
        self.approach(view, point + normal * (AGENT_R + 10.0))
        end = point + normal * AGENT_R - normal * depth
        self.legs.append((np.clip(end, *BOARD), int(depth / 8) + 4, speed))
        # back off along the normal (the way in is clear) before the next move
        self.legs.append((np.clip(end + normal * (depth + 12.0), *BOARD), 6, 25.0))


class Explorer(_Base):
    """Play: wanders over the board and pokes the T from random sides in random amounts.

    With ``wall_rest_prob`` > 0 (the ``roamer`` operator) some wanders end leaning on one of the board's walls for
    a while, pushing the T along if it is in the way. The plain explorer's waypoints stay inside the board, so its
    play data never shows the agent resting at a wall: a world model trained on it moves the T there that the real
    system leaves still, and a policy rewarded for moving the T learns to park at the walls
    (``bench/motion_exploit_check.py``).
    """

    name = "explorer"

    def __init__(self, max_step_px: float, poke_prob: float = 0.7, wall_rest_prob: float = 0.0) -> None:
        super().__init__(max_step_px)
        self.poke_prob, self.wall_rest_prob = poke_prob, wall_rest_prob

    def plan(self, view: PushTView) -> None:
        if self.rng.random() < self.poke_prob:
            index = int(self.rng.integers(len(_CONTACT_PTS)))
            self.push(view, index, depth=float(self.rng.uniform(15, 90)), speed=float(self.rng.uniform(15, 35)))
        elif self.wall_rest_prob > 0 and self.rng.random() < self.wall_rest_prob:  # no draw: the explorer's data
            self.rest_at_wall()  # stays what it was before the roamer existed
        else:
            self.wander(view)

    def rest_at_wall(self) -> None:
        """Drive to a random place on a random wall and keep pressing against it for 15-60 steps."""
        target = self.rng.uniform(*BOARD, size=2)
        axis, side = int(self.rng.integers(2)), int(self.rng.integers(2))
        target[axis] = (-60.0, 572.0)[side]  # beyond the wall: the agent stops at it and leans on it
        self.legs.append((target, int(self.rng.integers(15, 61)), float(self.rng.uniform(20, 40))))


class Pusher(_Base):
    """Play mixed with task attempts: in task segments (intent on) it pushes the T toward the goal.

    A push at contact point c (relative to the CoG) along direction d moves the T along d and turns it
    with the sign of cross(c, d); the operator scores every reachable contact by how well that motion
    reduces the position and angle errors, picks a good one with some randomness (people are not
    optimal), pushes a distance proportional to the error, and looks again.
    """

    name = "pusher"

    def __init__(self, max_step_px: float, task_fraction: float = 0.6, sloppiness: float = 0.15) -> None:
        super().__init__(max_step_px)
        self.task_fraction, self.sloppiness = task_fraction, sloppiness
        self.explorer = Explorer(max_step_px)
        self.segment_left = 0

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.explorer.reset(rng)
        self.explorer.hand = self.hand  # one physical hand, whichever mode drives it
        self.segment_left = 0

    def plan(self, view: PushTView) -> None:
        if self.segment_left <= 0:
            self.intent = bool(self.rng.random() < self.task_fraction)
            self.segment_left = int(self.rng.integers(40, 160))
        if self.intent:
            self.plan_task(view)
        else:
            self.explorer.plan(view)
            self.legs, self.explorer.legs = self.explorer.legs, []
        self.segment_left -= sum(steps for _, steps, _ in self.legs)

    def plan_task(self, view: PushTView) -> None:
        pose, goal = view.block_pose, view.goal_pose
        err_pos = cog_world(goal) - cog_world(pose)
        err_ang = wrap(goal[2] - pose[2])
        if np.linalg.norm(err_pos) < 3.0 and abs(err_ang) < np.deg2rad(2):  # done: step back, as people do
            self.legs.append((np.clip(view.agent_pos + self.rng.normal(0, 40, 2), *BOARD), 10, 20.0))
            return
        R = _rot(pose[2])
        lever_arm = (R @ (_CONTACT_PTS - _COG).T).T  # contact points relative to the CoG, world frame
        d = -(R @ _CONTACT_NORMALS.T).T  # push directions
        lever = lever_arm[:, 0] * d[:, 1] - lever_arm[:, 1] * d[:, 0]
        # Quasi-static frictionless push of depth delta: the contact impulse J = delta / (1/m + l^2/I)
        # moves the CoG by J along d and turns the T by l * J / I.
        per_px = 1.0 / (1.0 + lever**2 / _MOMENT)
        move = d * per_px[:, None]  # CoG displacement per px of push
        turn = lever * per_px / _MOMENT  # rotation per px of push
        # best depth per contact for the weighted squared error (one px of position ~ 1/_ANGLE_PX rad)
        num = move @ err_pos + _ANGLE_PX**2 * turn * err_ang
        den = np.sum(move**2, axis=1) + _ANGLE_PX**2 * turn**2
        depth = np.clip(num / den, 0.0, 60.0)
        remaining = np.sum((err_pos - move * depth[:, None]) ** 2, axis=1) + (_ANGLE_PX * (err_ang - turn * depth)) ** 2
        cost = remaining / (np.sum(err_pos**2) + (_ANGLE_PX * err_ang) ** 2)
        cost = cost + self.rng.normal(0, self.sloppiness, len(cost)) * 0.3
        index = int(np.argmin(cost))
        push_depth = float(depth[index])
        if self.rng.random() < self.sloppiness:  # gives up early or overdoes it
            push_depth *= float(self.rng.uniform(0.4, 1.4))
        # slower, more careful pushes for small corrections
        speed = float(np.clip(push_depth * 0.6, 5.0, 30.0))
        self.push(view, index, depth=max(push_depth, 2.0), speed=speed)


OPERATOR_NAMES = ("explorer", "roamer", "pusher", "expert")


def make_operator(name: str, max_step_px: float) -> Operator:
    """A fresh operator by name; call ``reset(rng)`` before use."""
    if name == "explorer":
        return Explorer(max_step_px)
    if name == "roamer":  # the explorer that also leans on the walls (covers the board's edges)
        return Explorer(max_step_px, wall_rest_prob=0.5)
    if name == "pusher":
        return Pusher(max_step_px)
    if name == "expert":  # the pusher always on task and careful: a scripted demonstrator / reference
        return Pusher(max_step_px, task_fraction=1.0, sloppiness=0.03)
    raise ValueError(f"unknown operator {name!r}; choose from {', '.join(OPERATOR_NAMES)}")
