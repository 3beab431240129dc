import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from helpers import tiny_world
from worldgrad.algos.dmo import decoupled, grads_finite
from worldgrad.algos.sapo import (
    Actor,
    Critic,
    SquashedNormal,
    alpha_loss,
    scaled_entropy,
    soft_return,
    target_entropy,
    td_lambda_targets,
)
from worldgrad.runtime.checkpoint import CheckpointWarning


class ToyLocalModel(nn.Module):
    """A differentiable latent transition l' = GRU(l, a) and a reward head: stands in for the local model."""

    def __init__(self, latent: int = 6, action: int = 2) -> None:
        super().__init__()
        self.cell = nn.GRUCell(action, latent)
        self.head = nn.Linear(latent, 1)

    def step(self, latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.cell(action, latent)

    def reward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.head(latent).squeeze(-1)


def rollout_objective(actor, model, critic, l0, noise, forward=None):
    """Eq. 4 over a short window; ``forward`` (a function) supplies the forward latents for DMO, None = BPTT."""
    latent, rewards, bonus, values = l0, [], [], []
    for eps in noise:
        dist = actor(latent)
        action = torch.tanh(dist.mean + dist.log_std.exp() * eps)  # reparameterized with fixed noise
        nxt = model.step(latent, action)
        if forward is not None:
            with torch.no_grad():
                fwd = forward(latent, action)
            nxt = decoupled(nxt, fwd)
        latent = nxt
        rewards.append(model.reward(latent))
        bonus.append(0.1 * dist.log_std.sum(-1))
        values.append(latent)
    ret = soft_return(torch.stack(rewards), torch.stack(bonus), critic(latent).mean(0), gamma=0.99)
    return ret.mean(), torch.stack(values)


def test_dmo_equals_bptt():
    torch.manual_seed(0)
    actor, model, critic = Actor(6, 2, (16,)), ToyLocalModel(), Critic(6, 2, (8,))
    l0 = torch.randn(5, 6)
    noise = torch.randn(8, 5, 2)
    j_bptt, lat_bptt = rollout_objective(actor, model, critic, l0, noise)
    g_bptt = torch.autograd.grad(j_bptt, list(actor.parameters()))
    # forward model = the local model itself (its values, without a graph)
    j_dmo, lat_dmo = rollout_objective(actor, model, critic, l0, noise, forward=model.step)
    g_dmo = torch.autograd.grad(j_dmo, list(actor.parameters()))
    torch.testing.assert_close(j_dmo, j_bptt, rtol=0, atol=0)
    torch.testing.assert_close(lat_dmo, lat_bptt, rtol=0, atol=0)  # forward values are the forward model's
    for a, b in zip(g_dmo, g_bptt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_dmo_takes_values_from_the_forward_model_and_gradients_from_the_backward_model():
    torch.manual_seed(1)
    actor, model, critic = Actor(6, 2, (16,)), ToyLocalModel(), Critic(6, 2, (8,))
    other = ToyLocalModel()  # a different "global" model
    l0, noise = torch.randn(4, 6), torch.randn(3, 4, 2)
    _, lat = rollout_objective(actor, model, critic, l0, noise, forward=other.step)
    # values: step 1 equals the other model's prediction from l0
    with torch.no_grad():
        dist = actor(l0)
        a0 = torch.tanh(dist.mean + dist.log_std.exp() * noise[0])
        torch.testing.assert_close(lat[0], other.step(l0, a0))
    x = torch.randn(3, requires_grad=True)
    y = decoupled(x * 2, torch.full((3,), 7.0))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(y.detach(), torch.full((3,), 7.0)) and torch.equal(g, torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="equal shapes"):
        decoupled(torch.zeros(2, 3), torch.zeros(2, 4))


def test_squashed_normal_entropy_matches_numerical_integration():
    torch.manual_seed(0)
    mean, log_std = torch.tensor([[0.4]]), torch.tensor([[-0.3]])
    one = SquashedNormal(mean, log_std)
    a = torch.linspace(-0.99999, 0.99999, 200_001)[:, None]
    density = one.log_prob_pre_tanh(torch.atanh(a)).exp()
    assert abs(float(torch.trapezoid(density, a.squeeze(-1))) - 1) < 1e-3  # a density over (-1, 1)
    exact = -float(torch.trapezoid(density * density.clamp_min(1e-30).log(), a.squeeze(-1)))
    mc = SquashedNormal(mean.expand(200_000, 1), log_std.expand(200_000, 1)).entropy_mc()
    assert abs(float(mc.mean()) - exact) < 0.01, (float(mc.mean()), exact)


def test_actor_samples_in_range_and_are_reparameterized():
    torch.manual_seed(0)
    actor = Actor(4, 2)
    feats = torch.randn(7, 4, requires_grad=True)
    s = actor(feats).rsample()
    assert s.action.shape == (7, 2) and s.action.abs().max() < 1 and s.log_prob.shape == (7,)
    s.action.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_td_lambda_targets_on_hand_computed_values():
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[10.0], [20.0], [30.0]])  # V(s_1), V(s_2), V(s_3)
    g, lam = 0.5, 0.8
    out = td_lambda_targets(r, v, g, lam)
    g2 = 3 + 0.5 * 30  # 18
    g1 = 2 + 0.5 * (0.2 * 20 + 0.8 * g2)  # 2 + 0.5 * 18.4 = 11.2
    g0 = 1 + 0.5 * (0.2 * 10 + 0.8 * g1)  # 1 + 0.5 * 10.96 = 6.48
    torch.testing.assert_close(out.squeeze(-1), torch.tensor([g0, g1, g2]))
    # eq. 6 for t = 0: (1 - lam) (lam^0 V_1 + lam^1 V_2) + lam^2 V_3, V_n the n-step returns
    v1, v2, v3 = 1 + g * 10, 1 + g * 2 + g**2 * 20, 1 + g * 2 + g**2 * 3 + g**3 * 30
    assert float(out[0, 0]) == pytest.approx((1 - lam) * (v1 + lam * v2) + lam**2 * v3)
    # a reset after step 0 cuts the recursion there
    cut = td_lambda_targets(r, v, g, lam, resets=torch.tensor([[True], [False], [False]]))
    assert float(cut[0, 0]) == pytest.approx(1 + 0.5 * 10) and float(cut[1, 0]) == pytest.approx(g1)


def test_temperature_moves_toward_the_target_entropy():
    target = target_entropy(2)
    assert target == -1.0 and float(scaled_entropy(torch.tensor(0.0), target)) == 0.5
    for entropy, direction in ((torch.tensor([3.0]), -1), (torch.tensor([-4.0]), 1)):
        log_alpha = torch.zeros((), requires_grad=True)
        opt = torch.optim.SGD([log_alpha], lr=0.1)
        alpha_loss(log_alpha, entropy, target).backward()
        opt.step()
        assert math.copysign(1, log_alpha.item()) == direction  # too random: alpha falls; too certain: alpha rises
    from worldgrad.algos.dmo_sapo import SAPOConfig

    with pytest.raises(ValueError, match="nonzero scale"):  # a zero target would make every update NaN
        SAPOConfig(target_entropy_scale=0.0)


def test_non_finite_or_exploding_gradients_are_detected():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    assert grads_finite([p])
    p.grad = torch.tensor([1.0, float("nan"), 3.0])
    assert not grads_finite([p])
    p.grad = torch.tensor([1e7, 0.0, 0.0])
    assert not grads_finite([p])


class ToyState(tuple):
    """(deter, stoch) as a tuple subclass: what decouple_state maps over."""

    def __new__(cls, deter, stoch):
        return super().__new__(cls, (deter, stoch))


class ToyRSSM(nn.Module):
    """A minimal filter: conv encoder, GRU deterministic state, a stochastic part from prior/posterior heads."""

    def __init__(self, size=8, deter=12, stoch=4, action=2):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(size * size * 3, 16))
        self.cell = nn.GRUCell(stoch + action, deter)
        self.prior = nn.Linear(deter, stoch)
        self.post = nn.Linear(deter + 16, stoch)
        self.head = nn.Linear(deter + stoch, 1)
        self.deter, self.stoch = deter, stoch
        self.cfg = SimpleNamespace(image_size=size, action_dim=action)

    def initial_state(self, batch):
        return ToyState(torch.zeros(batch, self.deter), torch.zeros(batch, self.stoch))

    def encode(self, images):
        return self.enc(images.float() / 255.0)

    def _deter(self, state, action):
        return self.cell(torch.cat([state[1], action], -1), state[0])

    def observe_step(self, state, action, embed):
        d = self._deter(state, action)
        return ToyState(d, torch.tanh(self.post(torch.cat([d, embed], -1))))

    def step_prior(self, state, action, sample=False):
        d = self._deter(state, action)
        return ToyState(d, torch.tanh(self.prior(d)))

    def features(self, state):
        return torch.cat(list(state), -1)

    def reward(self, features):
        return self.head(features).squeeze(-1)


def test_imagine_window_trains_the_actor_only_and_records_forward_values():
    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, critic_update, imagine_window, temperature_update

    torch.manual_seed(0)
    local = ToyRSSM().requires_grad_(False)
    agent = Agent(16, 2, SAPOConfig(horizon=4, critic_iterations=2, critic_minibatches=2, actor_hidden=(16,)))
    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    world_calls = []

    def step_world(action):
        world_calls.append(action)
        assert not action.requires_grad  # the global model never sees the graph
        return torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)

    state = local.observe_step(local.initial_state(3), torch.zeros(3, 2), local.encode(frames))
    loss, window, end_state, last = imagine_window(agent, local, step_world, lambda f: f.float().mean((1, 2, 3)) / 255,
                                                   state, frames, horizon=4)  # fmt: skip
    assert torch.isfinite(loss) and len(world_calls) == 4
    assert window.features.shape == (5, 3, 16) and window.rewards.shape == (4, 3) and window.frames.shape[0] == 5
    torch.testing.assert_close(window.frames[-1], last)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    assert all(p.grad is None for p in local.parameters())
    # forward values: the recorded features are the filter's, step by step from the same actions
    s = state
    for h in range(4):
        s = local.observe_step(s, window.actions[h], local.encode(window.frames[h + 1]))
        torch.testing.assert_close(window.features[h + 1], local.features(s))
    torch.testing.assert_close(local.features(end_state), local.features(s))
    opts = agent.optimizers()
    before = [p.clone() for p in agent.critic.parameters()]
    assert np.isfinite(critic_update(agent, window, opts["critic"], np.random.default_rng(0)))
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters(), strict=True))
    temperature_update(agent, window, opts["alpha"])


@pytest.mark.parametrize("value_gradient", [True, False])
def test_value_gradient_switch_keeps_the_return_and_drops_the_critics_gradient(value_gradient):
    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, imagine_window

    torch.manual_seed(0)
    local = ToyRSSM().requires_grad_(False)
    cfg = SAPOConfig(horizon=2, actor_hidden=(16,), value_gradient=value_gradient)
    agent = Agent(16, 2, cfg)
    agent.log_alpha.data.fill_(-math.inf)  # alpha 0: no entropy bonus, the rewards and the bootstrap remain
    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    state = local.observe_step(local.initial_state(3), torch.zeros(3, 2), local.encode(frames))

    def step_world(action):
        return torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    local.head.weight.data.zero_()  # a flat reward head: any actor gradient comes through the critic
    loss, *_ = imagine_window(agent, local, step_world, lambda f: torch.zeros(len(f)), state, frames, 2)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in agent.actor.parameters() if p.grad is not None])
    assert torch.isfinite(loss) and loss != 0  # the bootstrap's value is in the return either way
    assert (grad.abs().sum() > 0) == value_gradient


def test_progress_reward_gives_the_critic_reward_changes_and_telescopes_the_return():
    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, imagine_window

    torch.manual_seed(0)
    local = ToyRSSM().requires_grad_(False)
    cfg = SAPOConfig(horizon=3, actor_hidden=(16,), gamma=1.0, progress_reward=True)
    agent = Agent(16, 2, cfg)
    agent.log_alpha.data.fill_(-math.inf)  # alpha 0: the return is the rewards and the bootstrap alone
    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    state = local.observe_step(local.initial_state(3), torch.zeros(3, 2), local.encode(frames))
    gen = torch.Generator().manual_seed(1)

    def score(f):
        return f.float().mean((1, 2, 3)) / 255

    def step_world(action):
        return torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8, generator=gen)

    loss, window, _, _ = imagine_window(agent, local, step_world, score, state, frames, 3)
    g = window.global_rewards  # the raw rewards stay the record (the local model's fine-tuning labels)
    torch.testing.assert_close(g, torch.stack([score(f) for f in window.frames[1:]]))
    first = score(window.frames[0])
    torch.testing.assert_close(window.rewards, torch.diff(torch.cat([first[None], g]), dim=0))
    # gamma 1: the return telescopes to r_H - r_0 plus the bootstrap
    boot = agent.critic(window.features[-1]).mean(0)
    torch.testing.assert_close(loss, -((g[-1] - first + boot) / 3).mean())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


class PointMass:
    """A differentiable 2-D reach task as a LocalModel: x' = x + 0.2 a (times ``gain``), reward -|x'|^2."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def initial_state(self, batch):
        return (torch.zeros(batch, 2),)

    def encode(self, images):
        return images

    def observe_step(self, state, action, embed):
        return (embed,)

    def step_prior(self, state, action, sample=False):
        return (state[0] + 0.2 * self.gain * action,)

    def features(self, state):
        return state[0]

    def reward(self, feats):
        return -(feats**2).sum(-1)


@pytest.mark.parametrize("backward_gain", [1.0, 0.3])
def test_dmo_sapo_learns_a_differentiable_reach_task(backward_gain):
    """End to end through imagine_window and the three updates: with exact gradients (gain 1) and with DMO's
    rough backward model (gain 0.3, the forward values still from the true dynamics), the actor learns to
    move to the origin; the return of its mode from fixed starts beats standing still."""
    from worldgrad.algos.dmo_sapo import (
        Agent,
        SAPOConfig,
        actor_step,
        critic_update,
        imagine_window,
        temperature_update,
    )

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    true, backward = PointMass(), PointMass(backward_gain)
    agent = Agent(2, 2, SAPOConfig(horizon=8, critic_iterations=4, critic_minibatches=2, actor_hidden=(32, 32)))
    opts = agent.optimizers()

    def mode_return(starts):
        x, total = starts, 0.0
        with torch.no_grad():
            for _ in range(8):
                x = true.step_prior((x,), agent.actor(x).mode())[0]
                total += true.reward(x).mean().item()
        return total

    starts = torch.as_tensor(rng.uniform(-1, 1, (64, 2)), dtype=torch.float32)
    still = 8 * true.reward(starts).mean().item()
    x = torch.as_tensor(rng.uniform(-1, 1, (32, 2)), dtype=torch.float32)
    for it in range(60):
        box = [x]

        def step_world(action, box=box):
            box[0] = true.step_prior((box[0],), action)[0]
            return box[0]

        loss, window, state, _ = imagine_window(agent, backward, step_world, true.reward, (x,), x, 8)
        assert actor_step(agent, opts["actor"], loss, loss) is not None
        critic_update(agent, window, opts["critic"], rng)
        temperature_update(agent, window, opts["alpha"])
        torch.testing.assert_close(state[0], box[0])  # the forward values are the true dynamics'
        x = torch.as_tensor(rng.uniform(-1, 1, (32, 2)), dtype=torch.float32) if it % 2 else state[0]
    learned = mode_return(starts)
    assert learned > 0.5 * still, (learned, still)  # at least halves the accumulated distance cost


def test_action_scale_bounds_what_the_world_and_the_deployed_policy_see():
    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, imagine_window
    from worldgrad.policy import ImagePolicy

    torch.manual_seed(0)
    local = ToyRSSM().requires_grad_(False)
    agent = Agent(16, 2, SAPOConfig(horizon=3, actor_hidden=(16,), action_scale=0.25))
    with torch.no_grad():
        agent.actor.net[-1].bias.fill_(5.0)  # push the squashed mean to ~1: saturated without the scale
    seen = []

    def step_world(action):
        seen.append(action)
        return torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)

    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    state = local.observe_step(local.initial_state(3), torch.zeros(3, 2), local.encode(frames))
    _, window, _, _ = imagine_window(agent, local, step_world, lambda f: f.float().mean((1, 2, 3)), state, frames, 3)
    acts = torch.stack(seen)
    assert acts.abs().max() <= 0.25 and acts.abs().max() > 0.2 and torch.equal(window.actions, acts)
    for policy in (ImagePolicy(local, agent.actor, action_scale=0.25), ImagePolicy.from_agent(local, agent)):
        policy.reset(0)  # from_agent is what train-policy evaluates: it must act with the trained scale
        out = policy.act(np.zeros((8, 8, 3), np.uint8))
        assert np.abs(out).max() <= 0.25 and np.abs(out).max() > 0.2


def test_no_diffusion_window_imagines_with_the_local_model_alone():
    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, imagine_window

    torch.manual_seed(0)
    local = ToyRSSM().requires_grad_(False)
    agent = Agent(16, 2, SAPOConfig(horizon=4, actor_hidden=(16,)))
    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    state = local.observe_step(local.initial_state(3), torch.zeros(3, 2), local.encode(frames))
    loss, window, end_state, last = imagine_window(agent, local, None, lambda f: pytest.fail("no frames to score"),
                                                   state, frames, horizon=4)  # fmt: skip
    assert torch.isfinite(loss) and window.frames.shape[0] == 1 and torch.equal(last, frames)
    # the trajectory is the local prior's, and the rewards are its reward head's
    s = state
    for h in range(4):
        s = local.step_prior(s, window.actions[h])
        torch.testing.assert_close(window.features[h + 1], local.features(s))
        torch.testing.assert_close(window.global_rewards[h], local.reward(local.features(s)))
    torch.testing.assert_close(local.features(end_state), local.features(s))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


def test_train_policy_runs_logs_against_samples_and_resumes(tmp_path):
    from worldgrad.algos.dmo_sapo import SAPOConfig
    from worldgrad.algos.train_policy import TrainPolicyConfig, train_policy
    from worldgrad.runtime.metrics import read_metrics

    world = tiny_world(tmp_path)
    store, rpath, size = world["store"], world["reward"], world["pusht"].image_size
    torch.manual_seed(0)
    local = ToyRSSM(size=size)
    calls = []

    def finetune(frames, actions, rewards):
        calls.append((frames.shape, actions.shape, rewards.shape))
        return {"one_step_error": 0.5}

    def evaluate_real(policy):
        policy.reset(0)
        action = policy.act(np.zeros((size, size, 3), np.uint8))
        assert action.shape == (2,) and np.abs(action).max() < 1
        return {"success_rate": 0.0}

    sapo = SAPOConfig(horizon=3, critic_iterations=1, critic_minibatches=1, actor_hidden=(16,), critic_hidden=(8,))
    cfg = TrainPolicyConfig(wm=tmp_path / "wm", reward=rpath, store=store, runs=tmp_path, name="p", sapo=sapo,
                            num_envs=2, max_episode_len=6, iterations=4, eval_every=2, device="cpu")  # fmt: skip
    out = train_policy(cfg, local, 16, finetune, evaluate_real, progress=False)
    assert out["samples"] == 4 * 3 * 2 and calls[0] == ((2, 4, size, size, 3), (2, 3, 2), (2, 3))
    lines = read_metrics(tmp_path / "p" / "metrics.jsonl")
    assert [x["samples"] for x in lines if "policy/entropy" in x] == [6, 12, 18, 24]
    assert any("policy/real/success_rate" in x for x in lines) and all(p.grad is None for p in local.parameters())
    # a resumed run gets back the fine-tuned local model it was trained against, not the one passed in
    saved = {k: v.clone() for k, v in local.state_dict().items()}
    with torch.no_grad():
        for p in local.parameters():
            p.add_(1.0)
    train_policy(cfg, local, 16, finetune, None, progress=False)  # 4 iterations done: restores, runs none
    for k, v in local.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    more = train_policy(replace_iterations(cfg, 6), local, 16, None, None, progress=False)  # resumes at 4
    assert more["samples"] == 6 * 3 * 2
    times = [x["time_s"] for x in read_metrics(tmp_path / "p" / "metrics.jsonl") if "time_s" in x]
    assert len(times) == 6 and times == sorted(times)  # the wall-time clock goes on across the resume
    assert all(0 <= x["policy/moved"] <= 1 for x in read_metrics(tmp_path / "p" / "metrics.jsonl") if "time_s" in x)
    with pytest.warns(CheckpointWarning, match="no module 'local'"):  # written without a local model
        train_policy(replace_iterations(cfg, 6), local, 16, finetune, None, progress=False)
    # the "No Diffusion" ablation: same loop, the local model imagines alone
    from dataclasses import replace

    n_calls = len(calls)
    # neither global model is read: the paths may point nowhere
    nd_cfg = replace(cfg, name="nd", forward="local", wm=tmp_path / "none", reward=tmp_path / "none.safetensors")
    nodiff = train_policy(nd_cfg, local, 16, finetune, None, progress=False)
    assert nodiff["samples"] == 4 * 3 * 2 and len(calls) == n_calls  # no fine-tuning without generated frames


def test_init_starts_a_run_from_another_runs_agent_once_and_sampler_steps_reach_the_rollouts(tmp_path, monkeypatch):
    from dataclasses import replace

    import worldgrad.algos.train_policy as tp
    from worldgrad.algos.dmo_sapo import SAPOConfig

    world = tiny_world(tmp_path)
    torch.manual_seed(0)
    local = ToyRSSM(size=world["pusht"].image_size)
    seen = []

    class Recording(tp.WorldModelRollout):
        def __init__(self, denoiser, sampler, *args, **kwargs):
            seen.append(sampler.steps)
            super().__init__(denoiser, sampler, *args, **kwargs)

    monkeypatch.setattr(tp, "WorldModelRollout", Recording)
    sapo = SAPOConfig(horizon=2, critic_iterations=1, critic_minibatches=1, actor_hidden=(16,), critic_hidden=(8,))
    cfg = tp.TrainPolicyConfig(wm=world["wm"], reward=world["reward"], store=world["store"], runs=tmp_path,
                               name="a", sapo=sapo, num_envs=2, iterations=2, eval_every=2, device="cpu")  # fmt: skip
    a = tp.train_policy(cfg, local, 16, None, None, progress=False)["agent"].state_dict()
    b_cfg = replace(cfg, name="b", init=tmp_path / "a", sampler_steps=1, seed=1)
    b0 = tp.train_policy(replace(b_cfg, iterations=0), local, 16, None, None, progress=False)["agent"].state_dict()
    assert seen[0] != 1 and seen[1:] == [1]
    for k, v in a.items():  # the warm start is the other run's agent exactly
        torch.testing.assert_close(b0[k], v, rtol=0, atol=0)
    b = tp.train_policy(b_cfg, local, 16, None, None, progress=False)["agent"].state_dict()
    assert any(not torch.equal(b[k], v) for k, v in a.items())  # it trained on from there
    again = tp.train_policy(b_cfg, local, 16, None, None, progress=False)["agent"].state_dict()
    for k, v in b.items():  # a resume continues its own checkpoint, not the warm start
        torch.testing.assert_close(again[k], v, rtol=0, atol=0)
    # the other run's moments, this run's learning rates
    from worldgrad.algos.dmo_sapo import Agent
    from worldgrad.runtime.resume import warm_start

    agent = Agent(16, 2, replace(sapo, actor_lr=0.123))
    optims = agent.optimizers()
    warm_start(tmp_path / "a", {"agent": agent}, optims)
    assert optims["actor"].param_groups[0]["lr"] == 0.123 and len(optims["actor"].state) > 0
    with pytest.raises(FileNotFoundError, match="no checkpoint to start from"):
        tp.train_policy(replace(cfg, name="c", init=tmp_path / "b" / "tb"), local, 16, None, None, progress=False)
    with pytest.raises(ValueError, match="--sampler-steps -1"):
        replace(cfg, sampler_steps=-1)


def test_behaviour_prior_is_zero_at_the_demonstrated_action_and_pulls_the_mode_toward_it():
    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, bc_loss

    torch.manual_seed(0)
    agent = Agent(6, 2, SAPOConfig(actor_hidden=(16,), action_scale=0.5))
    feats = torch.randn(32, 6)
    with torch.no_grad():
        own = 0.5 * agent.actor(feats).mode()
    assert bc_loss(agent, feats, own).item() < 1e-10  # the actor's own (scaled) mode costs nothing
    # beyond the scaled range the target is clipped inside (-1, 1): finite, and the mode is pulled to the edge
    far = torch.full((32, 2), 3.0)
    opt = torch.optim.Adam(agent.actor.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        loss = bc_loss(agent, feats, far)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.05 * losses[0]
    assert (agent.actor(feats).mode() > 0.9).all()


def test_behaviour_prior_alone_clones_the_operator(tmp_path):
    from dataclasses import replace

    from worldgrad.algos.dmo_sapo import SAPOConfig
    from worldgrad.algos.train_policy import TrainPolicyConfig, train_policy
    from worldgrad.runtime.metrics import read_metrics

    world = tiny_world(tmp_path)
    torch.manual_seed(0)
    local = ToyRSSM(size=world["pusht"].image_size)
    sapo = SAPOConfig(horizon=2, critic_iterations=1, critic_minibatches=1, actor_hidden=(16,), critic_hidden=(8,),
                      bc_weight=1.0, bc_batch=256, bc_history=3, policy_gradient=False, actor_lr=1e-2)  # fmt: skip
    cfg = TrainPolicyConfig(wm=world["wm"], reward=world["reward"], store=world["store"], runs=tmp_path, name="bc",
                            sapo=sapo, num_envs=2, iterations=40, eval_every=40, device="cpu")  # fmt: skip
    train_policy(cfg, local, 16, None, None, progress=False)
    bc = [x["policy/bc_loss"] for x in read_metrics(tmp_path / "bc" / "metrics.jsonl") if "policy/bc_loss" in x]
    assert len(bc) == 40 and np.mean(bc[-5:]) < 0.7 * np.mean(bc[:5])
    # no intent-on frame in the store: a one-line error that says what to collect
    from worldgrad.data.store import EpisodeStore, StoreError

    src = EpisodeStore.open(world["store"])
    bare = EpisodeStore.create(tmp_path / "bare", src.meta)
    for k in src.keys():
        ep = src.episode(k)
        bare.append(k, np.asarray(ep.frames), np.asarray(ep.actions), np.zeros(len(ep), bool))
    with pytest.raises(StoreError, match="no intent-on frames"):
        train_policy(replace(cfg, store=tmp_path / "bare", name="bare"), local, 16, None, None, progress=False)


def test_behaviour_pretraining_warm_starts_the_actor_once(tmp_path):
    from dataclasses import replace

    from worldgrad.algos.dmo_sapo import SAPOConfig
    from worldgrad.algos.train_policy import TrainPolicyConfig, train_policy
    from worldgrad.runtime.metrics import read_metrics

    world = tiny_world(tmp_path)
    torch.manual_seed(0)
    local = ToyRSSM(size=world["pusht"].image_size)
    sapo = SAPOConfig(horizon=2, critic_iterations=1, critic_minibatches=1, actor_hidden=(16,), critic_hidden=(8,),
                      bc_pretrain=40, bc_batch=256, bc_history=3, actor_lr=1e-2)  # fmt: skip
    cfg = TrainPolicyConfig(wm=world["wm"], reward=world["reward"], store=world["store"], runs=tmp_path, name="pre",
                            sapo=sapo, num_envs=2, iterations=1, eval_every=1, device="cpu")  # fmt: skip
    train_policy(cfg, local, 16, None, None, progress=False)
    train_policy(replace(cfg, iterations=2), local, 16, None, None, progress=False)  # resumes: no second warm start
    rows = [x for x in read_metrics(tmp_path / "pre" / "metrics.jsonl") if "policy/bc_pretrain_last" in x]
    assert len(rows) == 1 and rows[0]["step"] == 0
    assert rows[0]["policy/bc_pretrain_last"] < 0.7 * rows[0]["policy/bc_pretrain_first"]
    # without a behaviour weight the windows carry no behaviour term
    assert not any("policy/bc_loss" in x for x in read_metrics(tmp_path / "pre" / "metrics.jsonl"))


def replace_iterations(cfg, n):
    from dataclasses import replace

    return replace(cfg, iterations=n)


def test_dmo_equals_bptt_with_the_rssm_as_forward_and_backward_model():
    from worldgrad.algos.dmo_sapo import decouple_state
    from worldgrad.models.rssm import RSSM, RSSMConfig

    torch.manual_seed(0)
    rssm = RSSM(RSSMConfig(image_size=16, cnn_depth=4, deter=16, hidden=16, stoch=3, classes=4)).requires_grad_(False)
    actor = Actor(rssm.feature_dim, 2, (16,))
    start = rssm.step_prior(rssm.initial_state(4), torch.rand(4, 2))
    noise = torch.randn(6, 4, 2)

    def objective(dmo: bool):
        state, total = start, 0.0
        for eps in noise:
            dist = actor(rssm.features(state))
            a = torch.tanh(dist.mean + dist.log_std.exp() * eps)
            nxt = rssm.step_prior(state, a)
            if dmo:
                with torch.no_grad():
                    fwd = rssm.step_prior(state, a)
                nxt = decouple_state(nxt, fwd)
            state = nxt
            total = total + rssm.reward(rssm.features(state)).mean() + state.stoch.square().mean()
        return total, state

    j_bptt, s_bptt = objective(False)
    g_bptt = torch.autograd.grad(j_bptt, list(actor.parameters()))
    j_dmo, s_dmo = objective(True)
    g_dmo = torch.autograd.grad(j_dmo, list(actor.parameters()))
    torch.testing.assert_close(j_dmo, j_bptt, rtol=0, atol=0)
    torch.testing.assert_close(s_dmo.deter, s_bptt.deter, rtol=0, atol=0)
    assert sum(float(g.abs().sum()) for g in g_bptt) > 0
    for a, b in zip(g_dmo, g_bptt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_train_policy_with_the_rssm_exports_a_deployable_policy(tmp_path):
    from dataclasses import replace

    from worldgrad.algos.dmo_sapo import SAPOConfig
    from worldgrad.algos.train_policy import TrainPolicyConfig, train_policy_from_files
    from worldgrad.eval.policies import make_policy
    from worldgrad.policy import ImagePolicy

    world = tiny_world(tmp_path)
    store, rpath, lpath, pusht = world["store"], world["reward"], world["local"], world["pusht"]
    size = pusht.image_size
    sapo = SAPOConfig(horizon=2, critic_iterations=1, critic_minibatches=1, actor_hidden=(8,), critic_hidden=(8,))
    cfg = TrainPolicyConfig(wm=tmp_path / "wm", reward=rpath, local=lpath, store=store, runs=tmp_path, name="p",
                            sapo=sapo, num_envs=2, max_episode_len=4, iterations=2, eval_every=2, eval_episodes=1,
                            device="cpu")  # fmt: skip
    out = train_policy_from_files(cfg, pusht=pusht, progress=False)
    assert out["samples"] == 2 * 2 * 2 and "success_rate" in out["real"]
    policy = ImagePolicy.from_checkpoint(out["policy"])
    policy.reset(0)
    action = policy.act(np.zeros((size, size, 3), np.uint8))
    assert action.shape == (2,) and action.dtype == np.float32 and np.abs(action).max() <= 1
    with pytest.raises(ValueError, match="one uint8"):
        policy.act(np.zeros((size, size), np.float32))
    assert policy.local.cfg.filter_sample  # the default: the filter samples
    mean = train_policy_from_files(replace(cfg, name="mean", mean_posteriors=True), pusht=pusht, progress=False)
    deployed = ImagePolicy.from_checkpoint(mean["policy"])
    assert not deployed.local.cfg.filter_sample  # deployed as trained
    sampled = make_policy(f"sampled:{mean['policy']}", env=None)  # type: ignore[arg-type]
    frame = np.full((size, size, 3), 128, np.uint8)

    def actions(p: ImagePolicy, seed: int) -> np.ndarray:
        p.reset(seed)
        return np.stack([p.act(frame) for _ in range(3)])

    assert isinstance(sampled, ImagePolicy) and not sampled.deterministic
    np.testing.assert_array_equal(actions(sampled, 5), actions(sampled, 5))  # seeded per episode
    assert not np.array_equal(actions(sampled, 5), actions(sampled, 6))
    np.testing.assert_array_equal(actions(deployed, 5), actions(deployed, 6))  # the mode of mean posteriors: no seed


def test_play_values_give_the_critic_recorded_sequences_with_their_reward_labels(tmp_path):
    from dataclasses import replace

    from worldgrad.algos.dmo_sapo import Agent, SAPOConfig, Window, critic_targets, with_play_values
    from worldgrad.algos.train_policy import PlayValues, TrainPolicyConfig, train_policy
    from worldgrad.data.store import EpisodeStore, StoreError
    from worldgrad.runtime.metrics import read_metrics

    world = tiny_world(tmp_path)
    torch.manual_seed(0)
    local = ToyRSSM(size=world["pusht"].image_size)
    cfg = SAPOConfig(horizon=3, play_values=5, play_burn_in=2, critic_hidden=(8,))
    play = PlayValues(EpisodeStore.open(world["store"]), local, "reward", cfg, torch.device("cpu"))
    feats, rewards = play.sample(np.random.default_rng(3))
    assert feats.shape == (4, 5, 16) and rewards.shape == (3, 5)
    batch = play.sampler.sample(5, np.random.default_rng(3))  # the same windows: reward t = label of frame t + 1
    torch.testing.assert_close(rewards, torch.as_tensor(batch.labels["reward"][:, 3:6].T, dtype=torch.float32))
    # merged with an imagined window (B = 2): play rewards get the window's mean entropy bonus, targets stay TD-lambda
    g = torch.randn(3, 2)
    window = Window(features=torch.randn(4, 2, 16), rewards=g + 0.25, frames=torch.zeros(4, 2, 1, 1, 3),
                    actions=torch.zeros(3, 2, 2), global_rewards=g, entropy=torch.zeros(3, 2),
                    bonus=torch.full((3, 2), 0.25))  # fmt: skip
    merged = with_play_values(window, feats, rewards)
    assert merged.features.shape == (4, 7, 16)
    torch.testing.assert_close(merged.rewards[:, 2:], rewards + 0.25)
    agent = Agent(16, 2, cfg)
    torch.testing.assert_close(critic_targets(agent, merged)[:, :2], critic_targets(agent, window))
    # with the progress reward the play rewards are the labels' changes, r_{t+1} - r_t
    progress = PlayValues(play.sampler.store, local, "reward", replace(cfg, progress_reward=True), torch.device("cpu"))
    _, changes = progress.sample(np.random.default_rng(3))
    torch.testing.assert_close(changes, torch.as_tensor(np.diff(batch.labels["reward"][:, 2:6], axis=1).T))
    # train-policy reads the store's labels for them (a store without the label fails with the labelling command)
    pcfg = TrainPolicyConfig(wm=world["wm"], reward=world["reward"], store=world["store"], runs=tmp_path, name="pv",
                             sapo=replace(cfg, critic_iterations=1, critic_minibatches=1, actor_hidden=(16,),
                                          play_value_pretrain=3),
                             num_envs=2, iterations=2, eval_every=2, device="cpu")  # fmt: skip
    train_policy(pcfg, local, 16, None, None, progress=False)
    lines = read_metrics(tmp_path / "pv" / "metrics.jsonl")
    assert all(np.isfinite(x["policy/critic_loss"]) for x in lines if "policy/critic_loss" in x)
    assert [x["step"] for x in lines if "policy/critic_pretrain_last" in x] == [0]  # the critic's warm start
    with pytest.raises(ValueError, match=r"pass --sapo\.play-values N"):
        train_policy(replace(pcfg, sapo=replace(pcfg.sapo, play_values=0)), local, 16, None, None, progress=False)
    with pytest.raises(StoreError, match="label 'nope' is missing"):
        train_policy(replace(pcfg, name="pv2", reward_label="nope"), local, 16, None, None, progress=False)


def test_motion_reward_pays_where_consecutive_forward_frames_show_the_object_moved(tmp_path):
    from worldgrad.algos.dmo_sapo import SAPOConfig
    from worldgrad.algos.train_policy import MotionReward, TrainPolicyConfig, train_policy
    from worldgrad.models.image import changed_pixels

    still = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    moved = still.clone()
    moved[0, :10, :5] = 200  # 50 pixels: the object moved
    moved[1, :2, :5] = 200  # 10 pixels: the agent alone
    motion = MotionReward(lambda f: torch.full((len(f),), 0.5), weight=2.0, pixels=40)
    with pytest.raises(RuntimeError, match="start"):
        motion(moved)
    motion.start(still)
    torch.testing.assert_close(motion(moved), torch.tensor([2.5, 0.5]))
    torch.testing.assert_close(motion(moved), torch.tensor([0.5, 0.5]))  # scored against the last frame
    motion.start(still)  # a new window (environments may have restarted): scored against its first frame
    torch.testing.assert_close(motion(moved), torch.tensor([2.5, 0.5]))
    with pytest.raises(ValueError, match="--motion-reward >= 0"):
        TrainPolicyConfig(motion_reward=-1.0)
    with pytest.raises(ValueError, match="--forward local"):
        TrainPolicyConfig(motion_reward=1.0, forward="local")

    # through train-policy: the first window's global rewards gain the weight exactly where its frames changed
    world = tiny_world(tmp_path)
    seen = {}

    def recorder(name):
        def finetune(frames, actions, rewards):
            seen.setdefault(name, (frames, rewards))
            return {}

        return finetune

    sapo = SAPOConfig(horizon=3, critic_iterations=1, critic_minibatches=1, actor_hidden=(16,), critic_hidden=(8,))
    for name, weight in (("plain", 0.0), ("motion", 2.0)):
        torch.manual_seed(0)
        local = ToyRSSM(size=world["pusht"].image_size)
        cfg = TrainPolicyConfig(wm=world["wm"], reward=world["reward"], store=world["store"], runs=tmp_path,
                                name=name, sapo=sapo, num_envs=2, iterations=1, eval_every=1, motion_reward=weight,
                                motion_pixels=1, device="cpu")  # fmt: skip
        train_policy(cfg, local, 16, recorder(name), None, progress=False)
    frames, plain = seen["plain"]
    torch.testing.assert_close(seen["motion"][0], frames)  # the same window, generated from the same seed
    b, t = plain.shape
    changed = changed_pixels(frames[:, :-1].reshape(b * t, *frames.shape[2:]).numpy(),
                             frames[:, 1:].reshape(b * t, *frames.shape[2:]).numpy()).reshape(b, t)  # fmt: skip
    assert (changed >= 1).any()
    torch.testing.assert_close(seen["motion"][1], plain + 2.0 * torch.as_tensor(changed >= 1, dtype=torch.float32))


def test_motion_goal_reward_signs_its_term_by_the_rewards_change():
    from worldgrad.algos.train_policy import MotionReward, TrainPolicyConfig, moved_fraction

    still = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    moved = still.clone()
    moved[:2, :10, :5] = 200  # envs 0 and 1: the object moved; env 2: nothing changed

    # the reward reads the frame: env 0's push raises it, env 1's lowers it, env 2 stands still
    def reward(f: torch.Tensor) -> torch.Tensor:
        lit = (f.float().mean((1, 2, 3)) > 0).float()
        return torch.tensor([0.5, 0.5, 0.5]) + lit * torch.tensor([1.0, -1.0, 0.0])

    motion = MotionReward(reward, weight=0.0, pixels=40, goal_weight=2.0)
    motion.start(still)
    torch.testing.assert_close(motion(moved), torch.tensor([1.5 + 2.0, -0.5 - 2.0, 0.5]))
    torch.testing.assert_close(motion(moved), torch.tensor([1.5, -0.5, 0.5]))  # no motion: no term
    back = still.clone()
    torch.testing.assert_close(motion(back), torch.tensor([0.5 - 2.0, 0.5 + 2.0, 0.5]))  # moved back: signs flip
    flat = MotionReward(reward, weight=2.0, pixels=40)
    flat.start(still)
    torch.testing.assert_close(flat(moved), torch.tensor([1.5 + 2.0, -0.5 + 2.0, 0.5]))  # any push pays
    both = MotionReward(reward, weight=2.0, pixels=40, goal_weight=1.5)
    both.start(still)
    torch.testing.assert_close(both(moved), torch.tensor([1.5 + 3.5, -0.5 + 0.5, 0.5]))  # the two terms add up
    # the logged share of moved transitions: (T + 1, B) frames still -> moved -> moved: envs 0, 1 move once of twice
    assert moved_fraction(torch.stack([still, moved, moved]), 40) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="--motion-goal-reward >= 0"):
        TrainPolicyConfig(motion_goal_reward=-1.0)
    with pytest.raises(ValueError, match="--forward local does not generate"):
        TrainPolicyConfig(motion_goal_reward=1.0, forward="local")
