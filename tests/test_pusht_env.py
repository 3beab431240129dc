import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from worldgrad.envs.pusht import GOAL_POSE, PushTConfig, PushTEnv, render_canvas, render_goal_image
from worldgrad.envs.registry import make_env


def rollout(env: PushTEnv, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    frames, poses = [obs], []
    for _ in range(n):
        obs, _, term, trunc, info = env.step(rng.uniform(-1, 1, 2))
        frames.append(obs)
        poses.append(np.concatenate([info["agent_pos"], info["block_pose"]]))
        if term or trunc:
            break
    return np.stack(frames), np.stack(poses)


def test_passes_gymnasium_env_checker():
    check_env(PushTEnv(), skip_render_check=True)


def test_observation_is_rgb_uint8_of_configured_size():
    env = PushTEnv(PushTConfig(image_size=48))
    obs, info = env.reset(seed=0)
    assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8
    assert set(info) >= {"coverage", "is_success", "agent_pos", "block_pose"}
    assert env.observation_space.contains(obs)


def test_deterministic_under_seed():
    a_frames, a_poses = rollout(PushTEnv(), seed=5, n=40)
    b_frames, b_poses = rollout(PushTEnv(), seed=5, n=40)
    c_frames, _ = rollout(PushTEnv(), seed=6, n=40)
    assert np.array_equal(a_frames, b_frames) and np.array_equal(a_poses, b_poses)
    assert not np.array_equal(a_frames, c_frames)


def test_action_scaling_sets_target_relative_to_agent():
    env = PushTEnv(PushTConfig(max_step_px=40.0))
    env.reset(seed=0, options={"agent_pos": (200.0, 200.0), "block_pose": (400.0, 400.0, 0.0)})
    assert np.allclose(env.target_for(np.array([1.0, -0.5])), [240.0, 180.0])
    assert np.allclose(env.target_for(np.array([3.0, 0.0])), [240.0, 200.0])  # clipped to [-1, 1]
    # The simulator receives exactly that target; the agent moves toward it.
    env.step(np.array([1.0, -0.5]))
    assert np.allclose(env._sim._last_action, [240.0, 180.0])
    assert env.agent_pos[0] > 215.0 and env.agent_pos[1] < 190.0


def test_targets_stay_on_the_board():
    env = PushTEnv(PushTConfig(target_margin_px=20.0))
    env.reset(seed=0, options={"agent_pos": (30.0, 30.0)})
    assert np.allclose(env.target_for(np.array([-1.0, -1.0])), [20.0, 20.0])


def test_one_step_is_one_fifth_of_a_second():
    env = PushTEnv()
    env.reset(seed=0)
    sim = env._sim
    counter = {"n": 0}
    original = sim.space.step

    def counting_step(dt: float) -> None:
        counter["n"] += 1
        counter.setdefault("dt", dt)
        original(dt)

    sim.space.step = counting_step
    env.step(np.zeros(2))
    assert counter["n"] * counter["dt"] == pytest.approx(0.2)
    assert env.sim_time == pytest.approx(0.2)


def test_episode_truncates_at_limit_and_terminates_on_success():
    env = PushTEnv(PushTConfig(max_episode_steps=3))
    env.reset(seed=0)
    flags = [env.step(np.zeros(2))[3] for _ in range(3)]
    assert flags == [False, False, True]
    env = PushTEnv()
    env.reset(seed=0, options={"block_pose": GOAL_POSE, "agent_pos": (256.0, 440.0)})
    _, _, terminated, _, info = env.step(np.zeros(2))
    assert info["is_success"] and terminated
    env = PushTEnv(PushTConfig(terminate_on_success=False))
    env.reset(seed=0, options={"block_pose": GOAL_POSE, "agent_pos": (256.0, 440.0)})
    assert not env.step(np.zeros(2))[2]


def test_fast_render_equals_gym_pusht_canvas():
    env = PushTEnv()
    env.reset(seed=3)
    env.step(np.array([0.5, 0.5]))
    sim = env._sim
    theirs = sim._get_img(sim._draw(), 512, 512)  # gym-pusht's own surfarray path, full size
    assert np.array_equal(render_canvas(sim, 512), theirs)


def test_goal_image_shows_the_t_on_the_goal():
    goal = render_goal_image(PushTConfig(image_size=64)).astype(int)
    light_green = np.array([144, 238, 144])
    # The T covers the green goal outline entirely: (almost) no goal colour is visible.
    green = (np.abs(goal - light_green).sum(-1) < 30).sum()
    assert goal.shape == (64, 64, 3) and green <= 2


def test_rejects_bad_actions_and_configs():
    env = PushTEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="image_size"):
        PushTConfig(image_size=4)
    with pytest.raises(ValueError, match="control_hz"):
        PushTConfig(control_hz=7)
    with pytest.raises(ValueError, match="unknown env"):
        make_env("pushq")
