import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from worldgrad.data.collect import CollectConfig, collect
from worldgrad.data.store import EpisodeStore
from worldgrad.envs.pushcube import GOAL_CENTRE, PushCubeConfig, PushCubeEnv
from worldgrad.envs.registry import make_env
from worldgrad.eval.harness import EvalConfig, evaluate
from worldgrad.operators.pushcube import OPERATOR_NAMES, make_operator


@pytest.fixture(scope="module")
def env():
    e = PushCubeEnv()
    yield e
    e.close()


def red_pixels(obs: np.ndarray) -> int:
    o = obs.astype(int)
    return int(((o[..., 0] > 120) & (o[..., 1] < 60) & (o[..., 2] < 60)).sum())


def drive(env: PushCubeEnv, action, steps: int) -> list[dict]:
    return [env.step(np.asarray(action, float))[4] for _ in range(steps)]


def test_passes_gymnasium_env_checker():
    e = PushCubeEnv(PushCubeConfig(image_size=32))
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()


def test_observation_is_onboard_rgb_uint8_of_configured_size():
    e = make_env("pushcube", PushCubeConfig(image_size=48))
    try:
        obs, info = e.reset(seed=0)
        assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8 and e.observation_space.contains(obs)
        assert e.action_space.shape == (3,)
        assert set(info) >= {"base_pose", "cube_pose", "is_success", "distance_to_goal", "cube_in_view"}
        assert info["base_pose"].shape == (3,) and info["cube_pose"].shape == (3,)
        assert obs.std() > 10  # a real picture, not a blank frame
        top = e.render_topdown()
        assert top.shape == (256, 256, 3) and top.dtype == np.uint8
    finally:
        e.close()


def test_physics_state_and_frames_are_deterministic_under_a_seed(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (15, 3))

    def run(e: PushCubeEnv, seed: int) -> tuple[np.ndarray, np.ndarray]:
        obs, _ = e.reset(seed=seed)
        frames = [obs]
        for a in actions:
            frames.append(e.step(a)[0])
        return np.concatenate([e.data.qpos, e.data.qvel]), np.stack(frames)

    state_a, frames_a = run(env, 7)
    other = PushCubeEnv()
    try:
        state_b, frames_b = run(other, 7)  # a second env, same seed: bitwise the same
    finally:
        other.close()
    state_c, _ = run(env, 8)
    assert np.array_equal(state_a, state_b) and np.array_equal(frames_a, frames_b)
    assert not np.allclose(state_a, state_c)


def test_random_starts_put_the_cube_ahead_beside_and_behind(env):
    bearings = []
    for seed in range(40):
        _, info = env.reset(seed=seed)
        base, cube = info["base_pose"], info["cube_pose"]
        assert np.all(np.abs(base[:2]) < 3.0) and np.all(np.abs(cube[:2]) < 3.0)
        assert 0.55 < np.hypot(*(cube[:2] - base[:2])) < 2.25 and not info["is_success"]
        bearings.append(np.arctan2(cube[1] - base[1], cube[0] - base[0]) - base[2])
    rel = np.abs((np.array(bearings) + np.pi) % (2 * np.pi) - np.pi)
    assert (rel < 0.5).any() and ((rel > 1.2) & (rel < 1.9)).any() and (rel > 2.6).any()


def test_a_scripted_push_moves_the_cube_into_the_goal_and_success_fires(env):
    _, info = env.reset(seed=0, options={"base_pose": (0.0, 0.0, 0.0), "cube_pos": (0.9, 0.0)})
    start_distance = info["distance_to_goal"]
    steps = 0
    for steps in range(1, 40):  # noqa: B007 (the step count is checked below)
        _, _, terminated, truncated, info = env.step(np.array([0.5, 0.0, 0.0]))
        if terminated:
            break
    assert info["is_success"] and terminated and not truncated and steps < 25
    x, y, _ = info["cube_pose"]
    assert 2.05 < x < 2.4 and abs(y) < 0.1 and info["distance_to_goal"] < start_distance - 0.9


def test_the_cube_leaves_the_view_when_the_robot_turns_away(env):
    obs, info = env.reset(seed=0, options={"base_pose": (0.0, 0.0, 0.0), "cube_pos": (1.0, 0.0)})
    assert info["cube_in_view"] and red_pixels(obs) >= 5
    for _ in range(6):  # yaw rate 1 rad/s for 1.2 s
        obs, _, _, _, info = env.step(np.array([0.0, 0.0, 1.0 / 1.5]))
    assert info["base_pose"][2] > 0.9
    assert not info["cube_in_view"] and red_pixels(obs) == 0
    assert np.allclose(info["cube_pose"][:2], [1.0, 0.0], atol=1e-3)  # it left the view, it did not move


def test_controllers_track_a_step_command_with_different_responses():
    speeds = {}
    for name in ("pd", "lagged", "gait"):
        e = PushCubeEnv(PushCubeConfig(controller=name, image_size=16))
        try:
            e.reset(seed=0, options={"base_pose": (-2.3, 0.0, 0.0), "cube_pos": (2.5, 2.5)})
            v = []
            for _ in range(12):  # 0.5 m/s forward for 2.4 s
                e.step(np.array([0.5, 0.0, 0.0]))
                v.append(e.base_velocity)
            speeds[name] = np.array(v)
        finally:
            e.close()
    pd, lagged, gait = speeds["pd"], speeds["lagged"], speeds["gait"]
    assert pd[0, 0] > 0.3 and lagged[0, 0] < 0.15  # after 0.2 s: the stiff loop is there, the lagged one is not
    assert abs(pd[-1, 0] - 0.5) < 0.02 and abs(lagged[-1, 0] - 0.5) < 0.03  # both reach the command
    assert np.abs(pd[:, 1:]).max() < 1e-3  # a stiff loop goes straight
    assert abs(gait[4:, 0].mean() - 0.5) < 0.08 and gait[4:, 0].std() > 0.05  # a trot: right speed, with ripple
    assert np.abs(gait[:, 1]).max() > 0.03 and np.abs(gait[:, 2]).max() > 0.05  # sway and yaw wobble


def test_cube_at_rest_in_the_goal_is_put_back_only_in_play():
    e = PushCubeEnv(PushCubeConfig(image_size=16, terminate_on_success=False, respawn_cube_after=3))
    try:
        e.reset(seed=0, options={"base_pose": (0.0, 0.0, 0.0), "cube_pos": GOAL_CENTRE})
        infos = drive(e, [0.0, 0.0, 0.0], 4)
        assert [i["cube_respawned"] for i in infos] == [False, False, True, False]
        assert infos[1]["is_success"] and not infos[3]["is_success"]
    finally:
        e.close()


def test_episode_truncates_at_limit_and_rejects_bad_input():
    e = PushCubeEnv(PushCubeConfig(image_size=16, max_episode_steps=3))
    try:
        e.reset(seed=0)
        assert [e.step(np.zeros(3))[3] for _ in range(3)] == [False, False, True]
        with pytest.raises(ValueError, match="shape"):
            e.step(np.zeros(2))
        with pytest.raises(ValueError, match="non-finite"):
            e.step(np.array([np.nan, 0.0, 0.0]))
    finally:
        e.close()
    with pytest.raises(ValueError, match="controller"):
        PushCubeConfig(controller="pid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="control_hz"):
        PushCubeConfig(control_hz=7)
    with pytest.raises(ValueError, match="image_size"):
        PushCubeConfig(image_size=4)
    with pytest.raises(TypeError, match="PushCubeConfig"):
        make_env("pushcube", object())


def test_gl_backend_is_chosen_when_unset_and_renders():
    # MUJOCO_GL unset (as on a fresh CI machine): the env picks EGL (or OSMesa) itself; GLFW would need a display.
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    code = (
        "import os; from worldgrad.envs.pushcube import PushCubeEnv; e = PushCubeEnv(); o, _ = e.reset(seed=0); "
        "print(os.environ['MUJOCO_GL'], o.shape, int(o.std() > 10)); e.close()"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    backend, rest = proc.stdout.strip().split(" ", 1)
    assert backend in ("egl", "osmesa") and rest == "(64, 64, 3) 1"


def test_missing_gl_packages_give_one_line_naming_them(tmp_path):
    # No EGL vendor library visible: what a machine without libegl-mesa0 looks like to MuJoCo.
    env = {**os.environ, "MUJOCO_GL": "egl", "__EGL_VENDOR_LIBRARY_DIRS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "worldgrad.cli", "eval", "--env", "pushcube", "--policies", "random",
           "--episodes", "1", "--out", str(tmp_path / "eval")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MUJOCO_GL=egl" in lines[0]
    assert "apt-get install -y libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri" in lines[0]


# -- operators, collection and evaluation ---------------------------------------------------------------


def operate(env: PushCubeEnv, name: str, seed: int, steps: int):
    _, info = env.reset(seed=seed)
    op = make_operator(name, env.config.velocity_limits)
    op.reset(np.random.default_rng(seed))
    actions, intents, infos = [], [], [info]
    for _ in range(steps):
        a, intent = op.act(env.operator_view())
        actions.append(a)
        intents.append(intent)
        infos.append(env.step(a)[4])
    return np.array(actions), np.array(intents), infos


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_operators_are_deterministic_smooth_and_in_the_box(name):
    e = PushCubeEnv(PushCubeConfig(image_size=16, terminate_on_success=False, max_episode_steps=10_000))
    try:
        a, intent, _ = operate(e, name, 3, 150)
        b, _, _ = operate(e, name, 3, 150)
        c, _, _ = operate(e, name, 4, 150)
    finally:
        e.close()
    assert a.dtype == np.float32 and a.shape == (150, 3) and np.abs(a).max() <= 1.0 and intent.dtype == bool
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    random_jerk = np.abs(np.diff(np.random.default_rng(0).uniform(-1, 1, (150, 3)), axis=0)).mean()
    assert np.abs(np.diff(a, axis=0)).mean() < 0.25 * random_jerk


def test_play_operators_look_away_and_find_the_cube_again_and_the_pusher_scores():
    e = PushCubeEnv(PushCubeConfig(image_size=16, terminate_on_success=False, max_episode_steps=10_000))
    try:
        _, intent, infos = operate(e, "explorer", 1, 400)
        seen = np.array([i["cube_in_view"] for i in infos])
        assert not intent.any()
        assert np.sum(np.diff(seen.astype(int)) == 1) >= 2 and np.sum(np.diff(seen.astype(int)) == -1) >= 2
        _, intent, infos = operate(e, "pusher", 2, 300)
        success = np.array([i["is_success"] for i in infos[1:]])
        assert intent.any() and not intent.all() and success.any()
        first = int(np.argmax(success))
        assert intent[max(0, first - 10) : first].all()  # it scored while pressing the intent button
    finally:
        e.close()


def test_collect_pushcube_writes_the_shared_store_format_and_resumes(tmp_path):
    cfg = CollectConfig(out=tmp_path / "store", env="pushcube", operator="explorer:0.5,pusher:0.5", frames=60,
                        episode_len=30, pushcube=PushCubeConfig(image_size=24))  # fmt: skip
    summary = collect(cfg, progress=False)
    store = EpisodeStore.open(tmp_path / "store")
    assert store.meta.env == "pushcube" and store.meta.action_dim == 3 and store.meta.image_shape == (24, 24, 3)
    assert store.meta.env_config["controller"] == "pd" and len(store) == 2
    for ep in store:
        assert ep.frames.shape == (30, 24, 24, 3) and ep.actions.shape == (30, 3) and ep.intent.shape == (30,)
        assert ep.sim("base_pose").shape == (30, 3) and ep.sim("cube_in_view").dtype == bool
        assert ep.info["env"] == "pushcube" and ep.info["seed"] in (0, 1)
    assert summary["frames"] == 60 and 0.0 <= summary["cube_in_view"] <= 1.0 and "intent" in summary
    again = collect(cfg, progress=False)
    assert again["new_frames"] == 0


@pytest.mark.parametrize("controller", ["pd", "lagged"])
def test_eval_pushcube_reports_trajectory_metrics_and_videos(tmp_path, controller):
    small = PushCubeConfig(image_size=32, max_episode_steps=12, topdown_size=64, controller=controller)
    cfg = EvalConfig(policies=("random", "operator:expert"), env="pushcube", episodes=2, videos=1, out=tmp_path,
                     pushcube=small)  # fmt: skip
    summaries = evaluate(cfg, progress=False)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["protocol"]["controller"] == controller and len(record["episodes"]["random"]) == 2
    for s in summaries.values():
        assert {"success_rate", "mean_steps_to_success", "mean_straightness", "mean_curvature"} <= set(s)
        assert 0.0 <= s["mean_straightness"] <= 1.0 and s["mean_curvature"] >= 0.0
    assert "straightness" in (tmp_path / "results.md").read_text()
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == ["operator_expert_seed1000000.mp4", "random_seed1000000.mp4"]
