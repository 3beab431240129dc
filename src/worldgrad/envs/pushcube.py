"""Push Cube as the "real system": an ego-centric mobile base pushes a cube into a goal gate (MuJoCo).

A base on planar joints (x, y, yaw) receives a body-frame velocity command at 5 Hz; a swappable 50 Hz
low-level controller tracks it through velocity actuators. The only observation is the image of a
forward-looking onboard camera, so the cube leaves the view whenever the robot turns away. The scene
has a checker floor (optical flow), four walls of different colours and two pillars (heading cues) and
a white gate with a net. Like Push-T, the simulator only records play data and evaluates policies; no
training code may import this module, and everything in ``info`` is evaluation-only ground truth.

MuJoCo is imported lazily, after :func:`select_gl_backend` has chosen ``MUJOCO_GL`` (it is read once,
at import): importing this module for its config costs nothing and never touches OpenGL.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from worldgrad.operators.pushcube import PushCubeView

if TYPE_CHECKING:
    import mujoco

# -- the scene's fixed geometry (metres) -------------------------------------------------------------
ARENA_HALF = 3.0  # inner faces of the walls at x, y = +-3
PHYSICS_DT = 0.005
LOW_LEVEL_HZ = 50  # the low-level controller's rate (4 physics steps per tick)
GATE_X = 2.0  # goal line (between the posts); the gate opens toward -x
GATE_HALF_WIDTH = 0.5
GATE_DEPTH = 0.4  # goal line to net
GOAL_CENTRE = (GATE_X + GATE_DEPTH / 2, 0.0)
CUBE_HALF = 0.05
BASE_HEIGHT = 0.14  # torso centre; it floats 4 cm above the floor, so only the damping brakes it
BUMPER_REACH = 0.33  # base centre to the bumper's front face
PILLARS = ((-1.5, 1.6, (0.1, 0.75, 0.8)), (0.6, -1.9, (0.75, 0.2, 0.8)))  # x, y, rgb; radius 0.1
PILLAR_R = 0.1
RED_CUBE = (0.9, 0.1, 0.1)
_CUBE_POINTS = CUBE_HALF * np.array([[0, 0, 0]] + [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])

ControllerName = Literal["pd", "lagged", "gait"]


@dataclass(frozen=True)
class ControllerSpec:
    """A low-level velocity controller: command filter, dead time and gait ripple."""

    tau_s: float
    """time constant of the first-order filter on the command (s)"""
    delay_ticks: int
    """transport delay of the command, in 50 Hz ticks"""
    ripple: float = 0.0
    """gait: relative forward-speed ripple and sway/wobble amplitude (0 = none)"""
    gait_hz: float = 1.8
    """gait: step frequency of the ripple (sway and yaw wobble at half of it)"""


CONTROLLERS: dict[str, ControllerSpec] = {
    # A stiff wheeled-base loop: 63 % of a step in about 0.15 s, no delay.
    "pd": ControllerSpec(tau_s=0.1, delay_ticks=0),
    # A sluggish loop (heavier robot, softer gains, a busy bus): 0.4 s lag plus 0.1 s dead time.
    "lagged": ControllerSpec(tau_s=0.4, delay_ticks=5),
    # A trotting quadruped: medium lag, speed ripple at the step frequency, sway and yaw wobble.
    "gait": ControllerSpec(tau_s=0.2, delay_ticks=1, ripple=0.35),
}


@dataclass(frozen=True)
class PushCubeConfig:
    """Push Cube real system."""

    image_size: int = 64
    """side of the square RGB observation from the onboard camera, in pixels"""
    controller: ControllerName = "pd"
    """low-level controller tracking the velocity command: pd (stiff), lagged (slow, delayed), gait (ripple)"""
    control_hz: int = 5
    """rate of the velocity commands; the low-level controller runs at 50 Hz underneath"""
    max_forward: float = 1.0
    """forward speed (m/s) of an action of 1 on the first axis"""
    max_lateral: float = 0.5
    """lateral speed (m/s, positive = left) of an action of 1 on the second axis"""
    max_yaw_rate: float = 1.5
    """yaw rate (rad/s, positive = counter-clockwise) of an action of 1 on the third axis"""
    max_episode_steps: int = 300
    """episode length limit (300 steps = 60 s at 5 Hz)"""
    terminate_on_success: bool = True
    """end the episode when the cube is in the goal; play collection turns this off"""
    respawn_cube_after: int = 0
    """play only: a person puts the cube back at a random spot once it has rested in the goal (or stuck at
    a wall) this many steps; 0 = never"""
    camera_pitch_deg: float = 30.0
    """onboard camera tilt below the horizon (degrees)"""
    camera_fovy_deg: float = 80.0
    """onboard camera vertical field of view (degrees); the image is square"""
    topdown_size: int = 256
    """side of the top-down view used for videos (never an observation)"""

    def __post_init__(self) -> None:
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"pushcube.image_size={self.image_size} is out of range; use 8..1024")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"pushcube.controller={self.controller!r} is unknown; use one of {', '.join(CONTROLLERS)}")
        if self.control_hz < 1 or LOW_LEVEL_HZ % self.control_hz != 0:
            raise ValueError(f"pushcube.control_hz={self.control_hz} must divide the 50 Hz low-level rate")
        if min(self.max_forward, self.max_lateral, self.max_yaw_rate) <= 0:
            raise ValueError("pushcube: --max-forward, --max-lateral and --max-yaw-rate must be positive")
        if self.max_episode_steps < 1 or self.respawn_cube_after < 0:
            raise ValueError("pushcube: --max-episode-steps must be >= 1 and --respawn-cube-after >= 0")
        if not (0 <= self.camera_pitch_deg <= 80 and 20 <= self.camera_fovy_deg <= 150):
            raise ValueError("pushcube: camera pitch must be in 0..80 degrees and fovy in 20..150 degrees")
        if not 32 <= self.topdown_size <= 1024:
            raise ValueError(f"pushcube.topdown_size={self.topdown_size} is out of range; use 32..1024")

    @property
    def velocity_limits(self) -> np.ndarray:
        """(3,) physical command for an action of 1: forward m/s, lateral m/s, yaw rad/s."""
        return np.array([self.max_forward, self.max_lateral, self.max_yaw_rate])


# -- headless OpenGL -------------------------------------------------------------------------------

GL_PACKAGES = {
    "egl": "libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
    "glfw": "xvfb libgl1 libglx-mesa0 (and run under xvfb-run)",
}


class RenderingUnavailableError(ImportError):
    """No offscreen OpenGL context: a system package is missing (the message names it)."""


def _egl_has_device() -> bool:
    """True if libEGL loads and lists a device (Mesa's software one counts); needs no display."""
    try:
        egl = ctypes.CDLL("libEGL.so.1")
        ctypes.CDLL("libOpenGL.so.0")
    except OSError:
        return False
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    address = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    if not address:
        return False
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))(address)
    count = ctypes.c_int(0)
    return bool(query(0, None, ctypes.byref(count))) and count.value > 0


def _osmesa_loads() -> bool:
    for name in ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def select_gl_backend() -> str:
    """Chooses ``MUJOCO_GL`` before MuJoCo is imported: the user's choice if set, else EGL, else OSMesa.

    Both use Mesa's llvmpipe on a CPU-only machine. An unset ``MUJOCO_GL`` would make MuJoCo try GLFW,
    which needs a display. The choice goes into the environment so spawned collector workers inherit it.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen or "mujoco" in sys.modules:  # the user's choice, or too late to choose
        return chosen
    chosen = "egl" if _egl_has_device() else "osmesa" if _osmesa_loads() else "egl"
    os.environ["MUJOCO_GL"] = chosen
    return chosen


def import_mujoco() -> Any:
    """``import mujoco`` after choosing the GL backend."""
    select_gl_backend()
    import mujoco

    return mujoco


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A ``mujoco.Renderer``, or one line naming the Debian packages of the chosen backend."""
    mujoco = import_mujoco()
    backend = os.environ.get("MUJOCO_GL", "")
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as e:  # GL failures surface as ImportError, AttributeError or mujoco.FatalError
        reason = (str(e).splitlines() or [""])[0].split(". ")[0][:160]  # the first sentence is the reason
        packages = GL_PACKAGES.get(backend, GL_PACKAGES["egl"])
        raise RenderingUnavailableError(
            f"MuJoCo cannot render offscreen with MUJOCO_GL={backend or '(unset)'} ({type(e).__name__}: {reason}); "
            f"install the Debian packages with `apt-get install -y {packages}`, "
            f"or `apt-get install -y libosmesa6` and set MUJOCO_GL=osmesa"
        ) from e


# -- the scene ---------------------------------------------------------------------------------------


def scene_xml(cfg: PushCubeConfig) -> str:
    """The MJCF of the scene. The robot body comes first so its joints are qpos[0:3] (still indexed by name)."""
    pitch = np.deg2rad(cfg.camera_pitch_deg)
    s, c = np.sin(pitch), np.cos(pitch)
    off = max(cfg.image_size, cfg.topdown_size)
    a = ARENA_HALF
    walls = [  # name, pos, half sizes, rgb: each wall its own colour so heading can be read from the view
        ("wall_n", (0, a + 0.05, 0.5), (a + 0.1, 0.05, 0.5), (0.2, 0.35, 0.85)),
        ("wall_s", (0, -a - 0.05, 0.5), (a + 0.1, 0.05, 0.5), (0.95, 0.8, 0.2)),
        ("wall_e", (a + 0.05, 0, 0.5), (0.05, a + 0.1, 0.5), (0.55, 0.35, 0.2)),
        ("wall_w", (-a - 0.05, 0, 0.5), (0.05, a + 0.1, 0.5), (0.6, 0.6, 0.65)),
    ]

    def vec(v: tuple[float, ...]) -> str:
        return " ".join(str(x) for x in v)

    wall_xml = "\n".join(
        f'<geom name="{n}" type="box" pos="{vec(p)}" size="{vec(h)}" rgba="{vec(r)} 1"/>' for n, p, h, r in walls
    )
    pillar_xml = "\n".join(
        f'<geom name="pillar{i}" type="cylinder" pos="{x} {y} 0.5" size="{PILLAR_R} 0.5" rgba="{vec(r)} 1"/>'
        for i, (x, y, r) in enumerate(PILLARS)
    )
    w, d = GATE_HALF_WIDTH, GATE_DEPTH
    return f"""
<mujoco model="pushcube">
  <option timestep="{PHYSICS_DT}" integrator="implicitfast" cone="elliptic"/>
  <visual>
    <global offwidth="{off}" offheight="{off}"/>
    <quality shadowsize="0"/>
    <headlight ambient=".4 .4 .4" diffuse=".6 .6 .6" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".6 .75 .9" rgb2=".95 .95 1" width="64" height="64"/>
    <texture name="chk" type="2d" builtin="checker" rgb1=".35 .45 .35" rgb2=".55 .65 .55" width="128" height="128"/>
    <material name="floor" texture="chk" texrepeat="12 12"/>
    <texture name="netx" type="2d" builtin="checker" mark="edge" markrgb="1 1 1" rgb1=".2 .2 .2" rgb2=".2 .2 .2"
             width="64" height="64"/>
    <material name="net" texture="netx" texrepeat="4 2"/>
  </asset>
  <default><geom friction="0.6 0.005 0.0001" solref="0.01 1"/></default>
  <worldbody>
    <light directional="true" pos="0 0 4" dir="0.3 0.2 -1" diffuse=".5 .5 .5" castshadow="false"/>
    <camera name="top" pos="0 0 7.2" xyaxes="1 0 0 0 1 0" fovy="48"/>
    <body name="robot" pos="0 0 {BASE_HEIGHT}">
      <joint name="rx" type="slide" axis="1 0 0" damping="1"/>
      <joint name="ry" type="slide" axis="0 1 0" damping="1"/>
      <joint name="rz" type="hinge" axis="0 0 1" damping="1"/>
      <geom name="torso" type="box" size=".3 .15 .1" mass="12" rgba=".2 .2 .22 1"/>
      <geom name="bumper" type="box" size=".02 .16 .05" pos=".31 0 -.04" mass=".1" rgba=".1 .1 .1 1"/>
      <geom name="head" type="box" size=".05 .06 .08" pos=".22 0 .16" mass=".1" rgba=".95 .95 .95 1"
            contype="0" conaffinity="0"/>
      <geom name="stripe" type="box" size=".2 .03 .005" pos="0 0 .1" rgba="1 .55 0 1" mass="0.01"
            contype="0" conaffinity="0"/>
      <camera name="ego" pos=".28 0 .2" xyaxes="0 -1 0 {s:.6f} 0 {c:.6f}" fovy="{cfg.camera_fovy_deg}"/>
    </body>
    <body name="cube" pos="1 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass=".2"
            rgba="{RED_CUBE[0]} {RED_CUBE[1]} {RED_CUBE[2]} 1" friction=".5 .005 .0001"/>
    </body>
    <geom name="floor" type="plane" size="{a} {a} .1" material="floor"/>
    {wall_xml}
    {pillar_xml}
    <body name="gate" pos="{GATE_X} 0 0">
      <geom type="cylinder" size=".04 .3" pos="0 {w} .3" rgba="1 1 1 1"/>
      <geom type="cylinder" size=".04 .3" pos="0 {-w} .3" rgba="1 1 1 1"/>
      <geom type="capsule" fromto="0 {-w} .6 0 {w} .6" size=".03" rgba="1 1 1 1"/>
      <geom name="net_back" type="box" size=".01 {w} .3" pos="{d} 0 .3" material="net"/>
      <geom type="box" size="{d / 2} .01 .3" pos="{d / 2} {w} .3" material="net"/>
      <geom type="box" size="{d / 2} .01 .3" pos="{d / 2} {-w} .3" material="net"/>
      <geom type="box" size="{d / 2} {w} .002" pos="{d / 2} 0 .002" rgba="1 .85 .1 1" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="rx" kv="300" forcerange="-80 80"/>
    <velocity name="vy" joint="ry" kv="300" forcerange="-80 80"/>
    <velocity name="wz" joint="rz" kv="30" forcerange="-15 15"/>
  </actuator>
</mujoco>"""


def wrap_angle(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def cube_in_goal(x: float, y: float) -> bool:
    """The whole cube is past the goal line, between the posts (a goal, as in football)."""
    return GATE_X + CUBE_HALF < x < GATE_X + GATE_DEPTH and abs(y) < GATE_HALF_WIDTH - CUBE_HALF


class LowLevelController:
    """The 50 Hz loop between the 5 Hz command and the velocity actuators.

    Filter (and delay) the body-frame command, add the gait ripple, rotate into the world frame with the
    measured yaw. The actuators then track that world velocity with their own damping gains.
    """

    def __init__(self, spec: ControllerSpec) -> None:
        self.spec = spec
        self.alpha = 1.0 - float(np.exp(-1.0 / (LOW_LEVEL_HZ * spec.tau_s)))
        self.reset()

    def reset(self) -> None:
        self.filtered = np.zeros(3)
        self.queue = [np.zeros(3) for _ in range(self.spec.delay_ticks)]
        self.ticks = 0

    def tick(self, command: np.ndarray, yaw: float) -> np.ndarray:
        """World-frame actuator velocities (vx, vy, wz) for a body-frame ``command`` (m/s, m/s, rad/s)."""
        self.queue.append(np.asarray(command, dtype=np.float64))
        self.filtered += self.alpha * (self.queue.pop(0) - self.filtered)
        v = self.filtered.copy()
        if self.spec.ripple > 0:
            # A trot: speed surges at the step frequency, the body sways and wobbles at half of it,
            # in proportion to how fast the robot walks (a standing robot does not ripple).
            t = self.ticks / LOW_LEVEL_HZ
            phase = 2 * np.pi * self.spec.gait_hz * t
            walk = float(np.hypot(v[0], v[1]))
            v[0] *= 1.0 + self.spec.ripple * np.sin(phase)
            v[1] += self.spec.ripple * 0.5 * walk * np.sin(phase / 2)
            v[2] += self.spec.ripple * 0.8 * walk * np.cos(phase / 2)
        self.ticks += 1
        c, s = np.cos(yaw), np.sin(yaw)
        return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


class PushCubeEnv(gym.Env[np.ndarray, np.ndarray]):
    """Push Cube with onboard-camera RGB observations and body-frame velocity actions at ``control_hz``.

    Observation: ``uint8`` (H, W, 3) from the camera on the robot's head. Action: ``float32`` (3,) in
    [-1, 1]: forward, lateral (left) and yaw rate (counter-clockwise), scaled by the config's limits.
    Reward is 0. ``info`` (evaluation only): ``base_pose`` (x, y, yaw), ``cube_pose`` (x, y, yaw),
    ``is_success``, ``distance_to_goal`` (cube centre to goal centre, m), ``cube_in_view`` (cube centre
    inside the camera frustum; occlusion ignored) and ``cube_respawned``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, config: PushCubeConfig | None = None, render_mode: str | None = "rgb_array") -> None:
        self.config = config or PushCubeConfig()
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}
        size = self.config.image_size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        mujoco = import_mujoco()
        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_string(scene_xml(self.config))
        self.data = mujoco.MjData(self.model)
        self._base_q = np.array([self.model.jnt_qposadr[self.model.joint(n).id] for n in ("rx", "ry", "rz")])
        self._base_v = np.array([self.model.jnt_dofadr[self.model.joint(n).id] for n in ("rx", "ry", "rz")])
        self._cube_q = int(self.model.jnt_qposadr[self.model.joint("cube").id])
        self._cube_v = int(self.model.jnt_dofadr[self.model.joint("cube").id])
        self._ego = self.model.camera("ego").id
        self._cube_body = self.model.body("cube").id
        self._substeps = round(1.0 / (LOW_LEVEL_HZ * PHYSICS_DT))
        self._ticks = LOW_LEVEL_HZ // self.config.control_hz
        self.controller = LowLevelController(CONTROLLERS[self.config.controller])
        self._renderer = make_renderer(self.model, size, size)
        self._top_renderer: Any = None
        self._steps = 0
        self._resting = 0
        self._respawned = False

    # -- gymnasium API -------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Random start poses; ``options`` may fix ``base_pose`` (x, y, yaw) and/or ``cube_pos`` (x, y)."""
        super().reset(seed=seed)
        options = options or {}
        self._mj.mj_resetData(self.model, self.data)
        base = options.get("base_pose")
        cube = options.get("cube_pos")
        rng = self.np_random
        if base is None:
            xy = self._free_spot(rng, margin=0.45, avoid=() if cube is None else (tuple(map(float, cube)),))
            base = (xy[0], xy[1], float(rng.uniform(-np.pi, np.pi)))
        if cube is None:
            cube = self._cube_spot_near(rng, np.asarray(base, dtype=np.float64))
        self._set_base(np.asarray(base, dtype=np.float64))
        self._set_cube(np.asarray(cube, dtype=np.float64), yaw=float(rng.uniform(-np.pi, np.pi)))
        self._mj.mj_forward(self.model, self.data)
        self.controller.reset()
        self._steps, self._resting, self._respawned = 0, 0, False
        return self._observe(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (3,):
            raise ValueError(
                f"Push Cube takes actions of shape (3,), got {action.shape}; pass [forward, lateral, yaw] in [-1, 1]"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"Push Cube got a non-finite action {action}; check the policy's output")
        command = np.clip(action, -1.0, 1.0) * self.config.velocity_limits
        for _ in range(self._ticks):
            self.data.ctrl[:] = self.controller.tick(command, float(self.data.qpos[self._base_q[2]]))
            self._mj.mj_step(self.model, self.data, nstep=self._substeps)
        self._steps += 1
        self._respawned = False
        self._maybe_respawn_cube()
        success = self.is_success
        terminated = bool(success and self.config.terminate_on_success)
        truncated = self._steps >= self.config.max_episode_steps and not terminated
        return self._observe(), 0.0, terminated, truncated, self._info()

    def render(self) -> np.ndarray:
        return self._observe()

    def render_topdown(self) -> np.ndarray:
        """(S, S, 3) uint8 bird's-eye view of the arena for videos (``topdown_size``); never an observation."""
        if self._top_renderer is None:
            size = self.config.topdown_size
            self._top_renderer = make_renderer(self.model, size, size)
        self._top_renderer.update_scene(self.data, "top")
        return self._top_renderer.render()

    def close(self) -> None:
        # Explicit close: OSMesa contexts left to the garbage collector at exit print ctypes errors.
        for r in (self._renderer, self._top_renderer):
            if r is not None:
                r.close()
        self._renderer = self._top_renderer = None

    # -- state (ground truth, evaluation only) --------------------------------------------------------

    @property
    def base_pose(self) -> np.ndarray:
        """(3,) base x, y (m) and yaw (rad, wrapped to [-pi, pi))."""
        q = self.data.qpos[self._base_q].astype(np.float64)
        q[2] = wrap_angle(q[2])
        return q

    @property
    def base_velocity(self) -> np.ndarray:
        """(3,) measured body-frame velocity: forward, lateral (m/s) and yaw rate (rad/s)."""
        v = self.data.qvel[self._base_v]
        yaw = float(self.data.qpos[self._base_q[2]])
        c, s = np.cos(yaw), np.sin(yaw)
        return np.array([c * v[0] + s * v[1], -s * v[0] + c * v[1], v[2]])

    @property
    def cube_pose(self) -> np.ndarray:
        """(3,) cube x, y (m) and yaw about the vertical (rad)."""
        q = self.data.qpos[self._cube_q : self._cube_q + 7]
        w, x, y, z = q[3:7]
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        return np.array([q[0], q[1], yaw], dtype=np.float64)

    @property
    def is_success(self) -> bool:
        x, y, _ = self.cube_pose
        return cube_in_goal(x, y)

    @property
    def cube_in_view(self) -> bool:
        """Whether the cube's centre or a corner projects inside the onboard image (occlusion ignored).

        While pushing, the cube's centre is below the image but its top face is in view.
        """
        pos = self.data.cam_xpos[self._ego]
        rot = self.data.cam_xmat[self._ego].reshape(3, 3)
        cube_rot = self.data.xmat[self._cube_body].reshape(3, 3)
        points = self.data.xpos[self._cube_body] + _CUBE_POINTS @ cube_rot.T  # centre and 8 corners, world
        local = (points - pos) @ rot  # camera frame; cameras look along their -z axis
        depth = -local[:, 2]
        half = np.tan(np.deg2rad(self.config.camera_fovy_deg) / 2) * depth
        inside = (depth > 0.01) & (np.abs(local[:, 0]) < half) & (np.abs(local[:, 1]) < half)
        return bool(inside.any())

    def operator_view(self) -> PushCubeView:
        """What a teleoperator standing in the room sees (for scripted play operators)."""
        x, y, _ = self.cube_pose
        pillars = np.array([(px, py, PILLAR_R) for px, py, _ in PILLARS])
        return PushCubeView(
            self.base_pose, np.array([x, y]), np.array(GOAL_CENTRE), GATE_X, GATE_HALF_WIDTH, ARENA_HALF, pillars
        )

    @property
    def sim_time(self) -> float:
        """Simulated seconds since reset."""
        return float(self.data.time)

    # -- helpers -------------------------------------------------------------------------------------

    def _observe(self) -> np.ndarray:
        self._renderer.update_scene(self.data, "ego")
        return self._renderer.render()

    def _info(self) -> dict[str, Any]:
        x, y, _ = self.cube_pose
        return {
            "base_pose": self.base_pose,
            "cube_pose": self.cube_pose,
            "is_success": self.is_success,
            "distance_to_goal": float(np.hypot(x - GOAL_CENTRE[0], y - GOAL_CENTRE[1])),
            "cube_in_view": self.cube_in_view,
            "cube_respawned": self._respawned,
        }

    def _set_base(self, pose: np.ndarray) -> None:
        self.data.qpos[self._base_q] = pose
        self.data.qvel[self._base_v] = 0.0

    def _set_cube(self, xy: np.ndarray, yaw: float) -> None:
        q = self._cube_q
        self.data.qpos[q : q + 3] = (xy[0], xy[1], CUBE_HALF)
        self.data.qpos[q + 3 : q + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.data.qvel[self._cube_v : self._cube_v + 6] = 0.0

    @staticmethod
    def _spot_ok(xy: np.ndarray, margin: float, avoid: tuple[tuple[float, float], ...] = ()) -> bool:
        """Inside the walls by ``margin``, clear of the pillars, the gate and the points in ``avoid``."""
        if np.any(np.abs(xy) > ARENA_HALF - margin):
            return False
        if any(np.hypot(xy[0] - px, xy[1] - py) < PILLAR_R + margin for px, py, _ in PILLARS):
            return False
        near_gate = GATE_X - 0.3 - margin < xy[0] and abs(xy[1]) < GATE_HALF_WIDTH + 0.3 + margin
        return not near_gate and all(np.hypot(xy[0] - a, xy[1] - b) > 0.5 + margin for a, b in avoid)

    def _free_spot(
        self, rng: np.random.Generator, margin: float, avoid: tuple[tuple[float, float], ...] = ()
    ) -> np.ndarray:
        for _ in range(1000):
            xy = rng.uniform(-ARENA_HALF, ARENA_HALF, 2)
            if self._spot_ok(xy, margin, avoid):
                return xy
        raise RuntimeError("no free start spot found; the arena config leaves no room")

    def _cube_spot_near(self, rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
        """The cube 0.6-2.2 m from the robot at any bearing: ahead, beside or behind it."""
        for _ in range(1000):
            r, bearing = rng.uniform(0.6, 2.2), base[2] + rng.uniform(-np.pi, np.pi)
            xy = base[:2] + r * np.array([np.cos(bearing), np.sin(bearing)])
            if self._spot_ok(xy, margin=0.25):
                return xy
        return self._free_spot(rng, margin=0.25, avoid=((float(base[0]), float(base[1])),))

    def _maybe_respawn_cube(self) -> None:
        """Play collection: a person puts a cube that rests in the goal or against a wall back in play."""
        if self.config.respawn_cube_after <= 0:
            return
        x, y, _ = self.cube_pose
        stuck = cube_in_goal(x, y) or max(abs(x), abs(y)) > ARENA_HALF - 0.12
        self._resting = self._resting + 1 if stuck else 0
        if self._resting >= self.config.respawn_cube_after:
            base = self.base_pose
            spot = self._free_spot(self.np_random, margin=0.3, avoid=((float(base[0]), float(base[1])),))
            self._set_cube(spot, yaw=float(self.np_random.uniform(-np.pi, np.pi)))
            self._mj.mj_forward(self.model, self.data)
            self._resting, self._respawned = 0, True
