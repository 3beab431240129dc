import math
from dataclasses import replace
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

import helpers
from worldgrad.algos.ppo import AgentConfig, MLPAgent, PPOConfig, PPORunner, gae, make_agent, ppo_loss


class TargetEnv(VectorEnv):
    """Observation: a target in [-0.8, 0.8] and the episode clock; reward -(action - target)^2; truncated after
    ``horizon`` steps (never terminated), so every episode end goes through the bootstrap path."""

    metadata: ClassVar[dict] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 8, horizon: int = 4) -> None:
        self.num_envs, self.horizon = num_envs, horizon
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.rng = np.random.default_rng(0)
        self.t = np.zeros(num_envs, np.int64)

    def _obs(self) -> np.ndarray:
        self.target = self.rng.uniform(-0.8, 0.8, self.num_envs)
        return np.stack([self.target, self.t / self.horizon], 1).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t[:] = 0
        return self._obs(), {}

    def step(self, actions):
        reward = -((np.asarray(actions)[:, 0] - self.target) ** 2)
        self.t += 1
        trunc = self.t >= self.horizon
        final = np.stack([self.target, self.t / self.horizon], 1).astype(np.float32)
        self.t[trunc] = 0
        obs = self._obs()
        infos = {"final_obs": final, "_final_obs": trunc.copy()} if trunc.any() else {}
        return obs, reward, np.zeros(self.num_envs, bool), trunc, infos


class BanditEnv(VectorEnv):
    """One-step contextual bandit: the observation is a one-hot state, reward 1 for the action equal to it."""

    metadata: ClassVar[dict] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 8) -> None:
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.rng = np.random.default_rng(0)

    def _obs(self) -> np.ndarray:
        self.state = self.rng.integers(0, 2, self.num_envs)
        return np.eye(2, dtype=np.float32)[self.state]

    def reset(self, *, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        return self._obs(), {}

    def step(self, actions):
        reward = (np.asarray(actions) == self.state).astype(np.float32)
        done = np.ones(self.num_envs, bool)
        final = np.eye(2, dtype=np.float32)[self.state]
        return self._obs(), reward, done, np.zeros_like(done), {"final_obs": final, "_final_obs": done}


def test_gae_on_hand_computed_values_with_truncation_and_termination():
    # env 0: one episode; env 1: truncated at t=1 (bootstrapped from V(final_obs) = 100), terminated at t=2
    r = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    v = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    nv = torch.tensor([[20.0, 20.0], [30.0, 100.0], [40.0, 40.0]])
    term = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    dones = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    adv, ret = gae(r, v, nv, term, dones, gamma=0.5, lam=0.8)
    # env 0: deltas 1, -3, -7 -> A2 = -7, A1 = -3 + 0.4 * -7, A0 = 1 + 0.4 * A1
    # env 1: A2 = 3 - 30 (terminal), A1 = 2 + 0.5 * 100 - 20 (the episode ends there), A0 = 1 + 0.4 * 32
    expected = torch.tensor([[-1.32, 13.8], [-5.8, 32.0], [-7.0, -27.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + v)


def test_clipped_loss_on_hand_computed_values():
    ratio = torch.tensor([1.5, 0.5, 1.1])
    cfg = PPOConfig(clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, norm_adv=False, clip_vloss=True)
    loss, stats = ppo_loss(ratio.log(), torch.zeros(3), torch.tensor([1.0, 1.0, -1.0]),
                           torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.0, 1.0, 2.0]),
                           torch.tensor([1.0, 2.0, 3.0]), cfg)  # fmt: skip
    # surrogate: max(-1.5, -1.2), max(-0.5, -0.8), max(1.1, 1.1) -> mean -0.2
    assert math.isclose(float(stats["pg_loss"]), -0.2, abs_tol=1e-6)
    # value: max((new - ret)^2, (old + clip(new - old) - ret)^2) = max(1, 0.49), max(1, 0.49), max(0, 1.69)
    assert math.isclose(float(stats["v_loss"]), 0.5 * 3.69 / 3, abs_tol=1e-6)
    assert math.isclose(float(loss), -0.2 - 0.01 * 2 + 0.5 * 0.615, abs_tol=1e-6)
    assert math.isclose(float(stats["clipfrac"]), 2 / 3, abs_tol=1e-6)
    kl = float(((ratio - 1) - ratio.log()).mean())
    assert math.isclose(float(stats["approx_kl"]), kl, abs_tol=1e-6)
    # without value clipping the value loss is the plain squared error
    _, plain = ppo_loss(ratio.log(), torch.zeros(3), torch.ones(3), torch.tensor([1.0, 0.0, 2.0]), torch.zeros(3),
                        torch.tensor([0.0, 1.0, 2.0]), torch.ones(3), PPOConfig(clip_vloss=False))  # fmt: skip
    assert math.isclose(float(plain["v_loss"]), 0.5 * 2 / 3, abs_tol=1e-6)


def test_rollout_bootstraps_truncated_episodes_from_the_final_observation():
    env = TargetEnv(num_envs=2, horizon=2)
    agent = MLPAgent(env.single_observation_space, env.single_action_space, AgentConfig(mlp_hidden=()))
    with torch.no_grad():  # V(obs) = the episode clock, so the final observation's value (1.0) is recognizable
        agent.critic_head.weight.copy_(torch.tensor([[0.0, 1.0]]))
        agent.critic_head.bias.zero_()
    runner = PPORunner(env, agent, PPOConfig(num_steps=4), seed=0)
    rollout, episodes = runner.collect()
    torch.testing.assert_close(rollout.values[:, 0], torch.tensor([0.0, 0.5, 0.0, 0.5]))
    torch.testing.assert_close(rollout.next_values[:, 0], torch.tensor([0.5, 1.0, 0.5, 1.0]))
    torch.testing.assert_close(rollout.dones[:, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert rollout.terminated.sum() == 0 and len(episodes["returns"]) == 4


def _train(env, iterations: int, seed: int, cfg: PPOConfig) -> tuple[torch.nn.Module, list[dict]]:
    torch.manual_seed(seed)
    agent = make_agent(env.single_observation_space, env.single_action_space, AgentConfig(mlp_hidden=(32,)))
    runner = PPORunner(env, agent, cfg, seed=seed)
    return agent, [runner.iteration(i, iterations) for i in range(iterations)]


def test_ppo_improves_return_on_a_continuous_task_and_solves_a_bandit():
    cfg = PPOConfig(num_steps=32, update_epochs=4, num_minibatches=4, lr=3e-3, anneal_lr=False)
    _, stats = _train(TargetEnv(), 15, 0, cfg)
    first, last = stats[0]["episode_return"], np.mean([s["episode_return"] for s in stats[-3:]])
    assert last > first + 1.5 and last > -1.5, (first, last)  # random start: about -4 * (1 + 0.21) per episode
    agent, stats = _train(BanditEnv(), 10, 0, PPOConfig(num_steps=16, update_epochs=4, num_minibatches=2, lr=1e-2))
    assert stats[-1]["episode_return"] > 0.95
    assert agent.act(torch.eye(2)).tolist() == [0, 1]


def test_ppo_is_deterministic_under_a_seed():
    cfg = PPOConfig(num_steps=16, update_epochs=2, num_minibatches=2)
    a, sa = _train(TargetEnv(), 2, 3, cfg)
    b, sb = _train(TargetEnv(), 2, 3, cfg)
    assert sa == sb
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_cnn_agent_reads_uint8_images_and_clips_box_actions():
    obs_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    agent = make_agent(obs_space, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), AgentConfig(channels=(4, 8),
                       kernels=(4, 3), strides=(2, 1), cnn_hidden=16, init_log_std=2.0))  # fmt: skip
    obs = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    action, logp, ent, value = agent.get_action_and_value(obs)
    assert action.shape == (5, 2) and logp.shape == ent.shape == value.shape == (5,)
    assert agent.act(obs, deterministic=False).abs().max() <= 1.0


def test_runner_refuses_next_step_autoreset():
    env = gym.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync")
    agent = make_agent(env.single_observation_space, env.single_action_space)
    with pytest.raises(ValueError, match="SAME_STEP"):
        PPORunner(env, agent, PPOConfig())


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A 16x16 Push-T store, a 2-step world model and a 2-step reward model (no real data needed)."""
    root = tmp_path_factory.mktemp("world")
    return {"root": root, **helpers.tiny_world(root)}


def _ppo_cfg(world, **kw):
    from worldgrad.algos.train_ppo import TrainPPOConfig

    agent = AgentConfig(channels=(4, 8), kernels=(4, 3), strides=(2, 1), cnn_hidden=16)
    ppo = PPOConfig(num_steps=4, update_epochs=1, num_minibatches=2, norm_reward=True)
    base = TrainPPOConfig(wm=world["wm"], reward=world["reward"], store=world["store"], runs=world["root"],
                          agent=agent, ppo=ppo, num_envs=2, max_episode_len=3, iterations=2, eval_every=2,
                          eval_episodes=1, device="cpu")  # fmt: skip
    return replace(base, **kw)


def test_train_ppo_resumes_after_a_kill(tiny_world):
    from worldgrad.algos.train_ppo import train_ppo
    from worldgrad.runtime.metrics import read_metrics

    cfg = _ppo_cfg(tiny_world, name="killed")

    def killed(policy):  # the process dies at iteration 2, after iteration 1's checkpoint
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ppo(cfg, killed, progress=False)
    out = train_ppo(cfg, None, progress=False)
    assert out["resumed_from"] == 1 and out["samples"] == 2 * 4 * 2
    lines = [x for x in read_metrics(tiny_world["root"] / "killed" / "metrics.jsonl") if "ppo/pg_loss" in x]
    assert [x["step"] for x in lines] == [1, 2] and [x["samples"] for x in lines] == [8, 16]
    assert all("ppo/imagined_return" in x and "time_s" in x for x in lines)  # episodes of 3 steps end in each rollout


def test_train_ppo_exports_a_policy_that_eval_loads_by_checkpoint_path(tiny_world):
    from worldgrad.algos.ppo import PPOPolicy
    from worldgrad.algos.train_ppo import train_ppo_from_files
    from worldgrad.envs.pusht import PushTEnv
    from worldgrad.eval.policies import make_policy
    from worldgrad.runtime.metrics import read_metrics

    out = train_ppo_from_files(_ppo_cfg(tiny_world, name="p", iterations=1, eval_every=1), tiny_world["pusht"],
                               progress=False)  # fmt: skip
    assert out["samples"] == 8 and "success_rate" in out["real"]
    lines = read_metrics(tiny_world["root"] / "p" / "metrics.jsonl")
    assert any("ppo/real/success_rate" in x and x["samples"] == 8 for x in lines)
    env = PushTEnv(tiny_world["pusht"])
    policy = make_policy(f"checkpoint:{out['policy']}", env)
    assert isinstance(policy, PPOPolicy)
    obs, _ = env.reset(seed=0)
    policy.reset(0)
    action = policy.act(obs)
    assert action.shape == (2,) and action.dtype == np.float32 and np.abs(action).max() <= 1
    assert np.array_equal(action, policy.act(obs))  # the mean action: deterministic
    with pytest.raises(ValueError, match="one uint8"):
        policy.act(obs.astype(np.float32))
    env.close()
