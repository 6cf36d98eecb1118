"""Offline RL learners (iql, droco): the checks of ALGORITHMS.md and the properties that make
them what they are, on small data, in seconds."""

import numpy as np
import pytest
import torch
from conftest import assert_exported_member_matches

from droil_ros import algos
from droil_ros.algos.droco import huber
from droil_ros.algos.iql import Batch, expectile_loss
from droil_ros.data import DatasetError
from droil_ros.data.dataset import TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.robots import load_spec

SPEC = load_spec("wheel_legged")


@pytest.fixture(scope="module")
def mixed_dataset(domain_mixed_dataset):
    return domain_mixed_dataset


def data_for(name, lqr_dataset, mixed_dataset):
    return mixed_dataset if name == "droco" else lqr_dataset


def bandit(rng, n=512, reward=None, **arrays) -> TransitionDataset:
    """One-step problems on the robot's spaces: random states, actions +-1.5 N m at random,
    terminal; ``arrays`` replace any of them."""
    obs = rng.normal(size=(n, SPEC.obs_dim)).astype(np.float32)
    actions = rng.choice([-1.5, 1.5], size=(n, 1)).astype(np.float32)
    rewards = reward(obs, actions) if reward is not None else arrays.pop("rewards")
    data = dict(observations=obs, actions=actions, rewards=rewards,
                next_observations=rng.normal(size=obs.shape).astype(np.float32),
                terminals=np.ones(n, bool), episode_starts=np.ones(n, bool))
    return TransitionDataset.from_arrays(SPEC, "bandit", **{**data, **arrays})


def policy_actions(learner, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return learner.export_modules()[0](torch.as_tensor(obs)).numpy()


def all_params(learner) -> list[torch.Tensor]:
    nets = [learner.policy, learner.critic, learner.critic_target, learner.value]
    return [p.detach().clone() for net in nets for p in net.parameters()]


@pytest.mark.parametrize("name", ["iql", "droco"])
def test_loss_decreases(name, lqr_dataset, mixed_dataset):
    learner = algos.create(name, data_for(name, lqr_dataset, mixed_dataset), SPEC, preset="fast",
                           steps=200)
    rows = learner.fit(progress=False)
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert rows[-1]["q_loss"] < 0.5 * rows[0]["q_loss"]


@pytest.mark.parametrize("name", ["iql", "droco"])
def test_every_loss_decreases_on_a_fixed_batch(name, lqr_dataset, mixed_dataset):
    """gamma = 0 makes each of V, Q and the actor a regression with a fixed target."""
    learner = algos.create(name, data_for(name, lqr_dataset, mixed_dataset), SPEC, preset="fast",
                           gamma=0.0, polyak=0.05, cosine_lr=False)
    n_source = 64 if name == "droco" else 0
    idx = torch.cat([learner.source_idx[:n_source], learner.target_idx[:64]]) if name == "droco" \
        else torch.arange(128)
    batch = learner.batch(idx[None], n_source)
    first = learner.iql_step(batch)
    for _ in range(150):
        last = learner.iql_step(batch)
    for key in ("loss", "v_loss", "q_loss"):
        assert last[key] < 0.5 * first[key], key


@pytest.mark.parametrize("name", ["iql", "droco"])
def test_batched_member_equals_single_seed_run(name, lqr_dataset, mixed_dataset):
    """Member 1 of seeds 3..5 is seed 4 alone: policy, both critics, V and (droco) the models."""
    data = data_for(name, lqr_dataset, mixed_dataset)
    batched = algos.create(name, data, SPEC, preset="fast", steps=20, seed=3, n_seeds=3)
    batched.fit(progress=False)
    single = algos.create(name, data, SPEC, preset="fast", steps=20, seed=4)
    single.fit(progress=False)
    for a, b in zip(batched.policy.parameters(), single.policy.parameters(), strict=True):
        torch.testing.assert_close(a[1], b[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(batched.critic.parameters(), single.critic.parameters(), strict=True):
        torch.testing.assert_close(a[[1, 4]], b, rtol=1e-5, atol=1e-5)  # Q1, Q2 of seed 4
    for a, b in zip(batched.value.parameters(), single.value.parameters(), strict=True):
        torch.testing.assert_close(a[1], b[0], rtol=1e-5, atol=1e-5)
    if name == "droco":
        obs, actions = single.obs[:50], single.actions[:50]
        s_batched = batched.worst_case(obs.expand(3, -1, -1), actions.expand(3, -1, -1))[0][1]
        torch.testing.assert_close(s_batched, single.worst_case(obs[None], actions[None])[0][0],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["iql", "droco"])
def test_exported_onnx_matches_torch(name, lqr_dataset, mixed_dataset, tmp_path):
    learner = algos.create(name, data_for(name, lqr_dataset, mixed_dataset), SPEC, preset="fast",
                           steps=20, n_seeds=2)
    learner.fit(progress=False)
    assert_exported_member_matches(learner, SPEC, tmp_path)


def test_expectile_loss_is_half_mse_at_one_half_and_finds_the_expectile():
    diff = torch.linspace(-3, 3, 61)
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff**2, rtol=0, atol=0)
    q = torch.tensor([0.0, 0.0, 1.0, 5.0])
    for tau, expected in ((0.5, q.mean()), (0.9, None)):
        v = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([v], max_iter=200, line_search_fn="strong_wolfe")

        def closure(tau=tau, v=v, opt=opt):
            opt.zero_grad()
            loss = expectile_loss(q - v, tau).mean()
            loss.backward()
            return loss

        opt.step(closure)
        if expected is not None:
            assert float(v.detach()) == pytest.approx(float(expected), abs=1e-5)
        else:  # first-order condition of the expectile: tau E[(q-v)+] = (1-tau) E[(v-q)+]
            v = v.detach()
            assert float(v) > float(q.mean())
            up, down = torch.relu(q - v).mean(), torch.relu(v - q).mean()
            assert float(tau * up) == pytest.approx(float((1 - tau) * down), abs=1e-5)


@pytest.mark.parametrize("tau", [0.5, 0.9])
def test_iql_value_is_the_expectile_of_q_over_the_data_actions(tau):
    """Reward 1 for a > 0, else 0: Q -> r, and V(s) -> the tau-expectile of the rewards logged
    at s, tau p / (tau p + (1 - tau)(1 - p)) for a fraction p of ones: at tau = 0.5 it is E[Q]
    (regression), at 0.9 near the best action's. Few distinct states, each with both actions."""
    rng = np.random.default_rng(0)
    states = rng.normal(size=(8, SPEC.obs_dim)).astype(np.float32)
    which = rng.integers(8, size=1024)
    positive = rng.random(1024) < np.linspace(0.15, 0.85, 8)[which]
    actions = np.where(positive, 1.5, -1.5).astype(np.float32)[:, None]
    data = bandit(rng, n=1024, observations=states[which], actions=actions,
                  rewards=positive.astype(np.float32))
    learner = algos.create("iql", data, SPEC, preset="fast", expectile=tau, gamma=0.0, polyak=0.05,
                           critic_lr=1e-3, batch_size=512)
    learner.fit(300, progress=False)
    p = np.array([positive[which == k].mean() for k in range(8)])
    expected = tau * p / (tau * p + (1 - tau) * (1 - p))
    with torch.no_grad():
        v = learner.v_values(learner.normalise(torch.as_tensor(states))[None])[0].numpy()
    np.testing.assert_allclose(v, expected, atol=0.06)  # minibatch noise
    assert np.ptp(expected) > 0.3  # the states differ: V had to tell them apart


def test_iql_learns_the_better_action_that_bc_averages_away():
    """Contextual bandit: reward 1 when sign(a) = sign(theta), data actions +-1.5 at random.
    BC regresses to ~0; IQL's advantage weights pick the rewarded side."""
    rng = np.random.default_rng(1)
    data = bandit(rng, n=1024, reward=lambda o, a: (np.sign(a[:, 0]) == np.sign(o[:, 0])).astype(np.float32))
    iql = algos.create("iql", data, SPEC, preset="fast", gamma=0.0, polyak=0.05, critic_lr=1e-3)
    iql.fit(600, progress=False)
    bc = algos.create("bc", data, SPEC, preset="fast")
    bc.fit(600, progress=False)
    test = rng.normal(size=(200, SPEC.obs_dim)).astype(np.float32)
    test = test[np.abs(test[:, 0]) > 0.5]
    a_iql, a_bc = policy_actions(iql, test)[:, 0], policy_actions(bc, test)[:, 0]
    assert np.mean(np.sign(a_iql) == np.sign(test[:, 0])) > 0.95
    assert np.mean(np.abs(a_iql)) > 1.0
    assert np.mean(np.abs(a_bc)) < 0.5


def test_terminals_stop_the_bootstrap_and_time_limits_do_not():
    """Self-loops with reward 1 and gamma 0.5: Q = 1 where s' is terminal, 1/(1-gamma) = 2
    where the episode was only cut by a time limit."""
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(512, SPEC.obs_dim)).astype(np.float32)
    terminal = obs[:, 0] > 0
    data = bandit(rng, rewards=np.ones(512, np.float32), observations=obs, next_observations=obs,
                  terminals=terminal, timeouts=~terminal)
    learner = algos.create("iql", data, SPEC, preset="fast", gamma=0.5, polyak=0.05, critic_lr=1e-3,
                           expectile=0.5)
    learner.fit(800, progress=False)
    with torch.no_grad():
        q = learner.q_values(learner.critic, learner.obs[None], learner.actions[None]).mean(0)[0]
    t = torch.as_tensor(terminal)
    assert float(q[t].mean()) == pytest.approx(1.0, abs=0.1)
    assert float(q[~t].mean()) == pytest.approx(2.0, abs=0.15)


def test_droco_without_source_data_is_iql_step_for_step(lqr_dataset):
    iql = algos.create("iql", lqr_dataset, SPEC, preset="fast", steps=40, seed=2)
    iql.fit(progress=False)
    droco = algos.create("droco", lqr_dataset, SPEC, preset="fast", steps=40, seed=2)
    assert droco.dynamics is None  # no source transitions: nothing to penalise
    droco.fit(progress=False)
    for a, b in zip(all_params(iql), all_params(droco), strict=True):
        assert torch.equal(a, b)


def test_droco_with_its_robust_terms_off_makes_iql_updates(mixed_dataset):
    """beta = 0, kappa = inf: on the same batch DROCO's update is IQL's (its critic loss, a sum of
    two per-domain means over equal halves, is twice IQL's mean: the same Adam step)."""
    droco = algos.create("droco", mixed_dataset, SPEC, preset="fast", beta=0.0,
                         huber_delta=float("inf"), seed=1)
    assert droco.dynamics is None
    iql = algos.create("iql", mixed_dataset, SPEC, preset="fast", seed=1)
    idx = torch.cat([droco.source_idx[:32], droco.target_idx[:32]])[None]
    for _ in range(5):
        droco.iql_step(droco.batch(idx, n_source=32))
        iql.iql_step(iql.batch(idx))
    for a, b in zip(all_params(iql), all_params(droco), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # Adam's eps
    with_penalty = algos.create("droco", mixed_dataset, SPEC, preset="fast", beta=1.0, seed=1)
    with_penalty.iql_step(with_penalty.batch(idx, n_source=32),
                          torch.nn.functional.pad(torch.ones(1, 32), (0, 32)))
    assert not torch.equal(all_params(with_penalty)[-1], all_params(droco)[-1])


@pytest.fixture(scope="module")
def trained_droco(mixed_dataset):
    learner = algos.create("droco", mixed_dataset, SPEC, preset="fast", seed=0)
    learner.fit(20, progress=False)
    return learner


def test_coord_min_worst_state_is_the_per_coordinate_minimum_of_mean_plus_variance(trained_droco):
    learner = trained_droco
    src = learner.source_idx[:100]
    obs, actions = learner.obs[src][None], learner.actions[src][None]
    with torch.no_grad():
        p = learner.dynamics.predict(obs, actions)
    candidates = p.next_mean + p.next_std**2  # (1, 7, 100, 4)
    assert candidates.shape == (1, 7, 100, SPEC.obs_dim)
    s_inf, v_inf = learner.worst_case(obs, actions)
    torch.testing.assert_close(s_inf, candidates.min(1).values, rtol=0, atol=0)
    torch.testing.assert_close(v_inf, learner.v_values(s_inf), rtol=0, atol=0)
    # not any one model's prediction: per coordinate, different models are the lowest
    is_a_candidate = (candidates == s_inf[:, None]).all(-1).any(1)
    assert not is_a_candidate.all()
    # the penalty: relu(beta (V(s') - V(s_inf))), zero where the logged s' is worse
    u = learner.penalty(obs, actions, learner.next_obs[src][None])
    expected = torch.relu(0.3 * (learner.v_values(learner.next_obs[src][None]) - v_inf))
    torch.testing.assert_close(u, expected, rtol=0, atol=0)


def test_value_min_worst_state_is_the_candidate_of_lowest_value(trained_droco):
    learner = trained_droco
    src = learner.source_idx[:100]
    obs, actions = learner.obs[src][None], learner.actions[src][None]
    learner.config.inf_mode = "value_min"
    try:
        s_inf, v_inf = learner.worst_case(obs, actions)
    finally:
        learner.config.inf_mode = "coord_min"
    candidates = learner.candidate_next_states(obs, actions)[0]  # (7, 100, 4)
    values = torch.stack([learner.v_values(c[None])[0] for c in candidates])  # (7, 100)
    torch.testing.assert_close(v_inf[0], values.min(0).values, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s_inf[0], candidates[values.argmin(0), torch.arange(100)], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["mean", "minus_std", "sample"])
def test_noise_modes(mode, mixed_dataset):
    learner = algos.create("droco", mixed_dataset, SPEC, preset="fast", noise_mode=mode, model_epochs=1)
    learner.train_dynamics()
    src = learner.source_idx[:20]
    obs, actions = learner.obs[src][None], learner.actions[src][None]
    p = learner.dynamics.predict(obs, actions)
    got = learner.candidate_next_states(obs, actions)
    if mode == "mean":
        torch.testing.assert_close(got, p.next_mean, rtol=0, atol=0)
    elif mode == "minus_std":
        torch.testing.assert_close(got, p.next_mean - p.next_std, rtol=0, atol=0)
    else:
        z = (got - p.next_mean) / p.next_std
        assert 0.5 < float(z.std()) < 1.5
        assert not torch.equal(got, learner.candidate_next_states(obs, actions))  # fresh draws


def test_huber_applies_only_to_source_td_errors(trained_droco):
    td = torch.tensor([[100.0, -100.0, 1.0, 2.0, 100.0, -100.0, 1.0, 2.0]]).expand(2, 1, 8)
    batch = Batch(*(torch.zeros(1, 8, 1) for _ in range(5)), n_source=4)
    loss = trained_droco.critic_losses(td, batch)  # kappa = 30
    src = (30 * (100 - 15) * 2 + 0.5 + 2.0) / 4
    tar = (0.5 * 100**2 * 2 + 0.5 + 2.0) / 4
    torch.testing.assert_close(loss, torch.full((2, 1), src + tar))
    e = torch.linspace(-50, 50, 101)
    torch.testing.assert_close(huber(e, 30.0), torch.nn.functional.huber_loss(e, torch.zeros(101),
                                                                             reduction="none", delta=30.0))
    torch.testing.assert_close(huber(e, float("inf")), 0.5 * e**2)


def test_bad_inputs_fail_clearly(lqr_dataset, mixed_dataset):
    no_reward = lqr_dataset.select(np.ones(len(lqr_dataset), bool))
    no_reward.rewards[3] = np.nan
    with pytest.raises(DatasetError, match="needs rewards"):
        algos.create("iql", no_reward, SPEC)
    source_only = mixed_dataset.select(mixed_dataset.domain == 1)
    with pytest.raises(DroilError, match="droco needs target-domain transitions"):
        algos.create("droco", source_only, SPEC)
    with pytest.raises(DroilError, match="unknown inf_mode 'argmin'"):
        algos.create("droco", mixed_dataset, SPEC, inf_mode="argmin")
    with pytest.raises(DroilError, match="unknown noise_mode"):
        algos.create("droco", mixed_dataset, SPEC, noise_mode="gauss")
    with pytest.raises(DroilError, match="expectile must be in"):
        algos.create("iql", lqr_dataset, SPEC, expectile=1.0)
    with pytest.raises(DroilError, match="gamma must be in"):
        algos.create("iql", lqr_dataset, SPEC, gamma=1.0)
    assert {"iql", "droco"} <= set(algos.available())
