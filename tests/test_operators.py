import numpy as np
import pytest

from worldgrad.envs.pusht import GOAL_POSE, PushTConfig, PushTEnv
from worldgrad.operators.pusht import AGENT_R, OPERATOR_NAMES, Pusher, agent_t_gaps, make_operator, t_distance


def drive(name: str, seed: int, steps: int, env: PushTEnv | None = None, options=None, **kw):
    env = env or PushTEnv(PushTConfig(terminate_on_success=False, max_episode_steps=10_000))
    _, info = env.reset(seed=seed, options=options)
    op = Pusher(50.0, **kw) if kw else make_operator(name, 50.0)
    op.reset(np.random.default_rng(seed))
    actions, intents, poses, coverage = [], [], [env.block_pose], [info["coverage"]]
    for _ in range(steps):
        a, intent = op.act(env.operator_view())
        _, _, _, _, info = env.step(a)
        actions.append(a)
        intents.append(intent)
        poses.append(env.block_pose)
        coverage.append(info["coverage"])
    return np.array(actions), np.array(intents), np.array(poses), np.array(coverage)


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_actions_are_float32_in_box_and_deterministic(name):
    a, intent, _, _ = drive(name, 3, 200)
    assert a.dtype == np.float32 and a.shape == (200, 2) and np.abs(a).max() <= 1.0
    assert intent.dtype == bool
    b, _, _, _ = drive(name, 3, 200)
    c, _, _, _ = drive(name, 4, 200)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_motion_is_smooth(name):
    a, _, _, _ = drive(name, 0, 300)
    random_jerk = np.abs(np.diff(np.random.default_rng(0).uniform(-1, 1, (300, 2)), axis=0)).mean()
    assert np.abs(np.diff(a, axis=0)).mean() < 0.3 * random_jerk


def test_explorer_moves_the_t_and_never_claims_intent():
    moved = 0
    for seed in range(3):
        _, intent, poses, _ = drive("explorer", seed, 300)
        assert not intent.any()
        moved += int((np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1) > 1.0).sum())
    assert moved > 30


def test_roamer_rests_at_the_walls_where_the_explorer_never_stays():
    def longest_wall_stay(name: str, seed: int) -> int:
        env = PushTEnv(PushTConfig(terminate_on_success=False, max_episode_steps=10_000))
        env.reset(seed=seed)
        op = make_operator(name, 50.0)
        op.reset(np.random.default_rng(seed))
        longest = run = 0
        for _ in range(1000):
            env.step(op.act(env.operator_view())[0])
            pos = env.operator_view().agent_pos
            run = run + 1 if min(pos.min(), (512 - pos).min()) < 30 else 0
            longest = max(longest, run)
        return longest

    assert max(longest_wall_stay("explorer", s) for s in (0, 1)) < 30
    assert max(longest_wall_stay("roamer", s) for s in (0, 1)) >= 30


def test_pusher_mixes_intent_and_improves_coverage_near_goal():
    _, intent, _, _ = drive("pusher", 1, 600)
    assert 0.1 < intent.mean() < 0.95
    start = (GOAL_POSE[0] + 30.0, GOAL_POSE[1] - 20.0, GOAL_POSE[2] + 0.3)
    gains = []
    for seed in range(3):
        _, _, _, cov = drive("pusher", seed, 150, options={"block_pose": start, "agent_pos": (80.0, 80.0)},
                             task_fraction=1.0)  # fmt: skip
        gains.append(cov[-30:].max() - cov[0])
    assert np.mean(gains) > 0.2, gains


def test_t_distance_is_signed():
    pose = np.array([256.0, 256.0, 0.0])
    assert t_distance(np.array([256.0, 271.0]), pose) < 0  # inside the bar
    assert t_distance(np.array([256.0, 236.0]), pose) == pytest.approx(20.0)


def test_agent_t_gaps_subtract_the_agent_radius():
    poses = np.array([[256.0, 256.0, 0.0]] * 2)
    gaps = agent_t_gaps(np.array([[256.0, 236.0], [256.0, 271.0]]), poses)
    assert gaps[0] == pytest.approx(20.0 - AGENT_R)
    assert gaps[1] < -AGENT_R  # the agent's centre inside the bar


def test_unknown_operator():
    with pytest.raises(ValueError, match=r"unknown operator .robot.*explorer, roamer, pusher, expert"):
        make_operator("robot", 50.0)
