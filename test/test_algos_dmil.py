"""Model-based and discriminator-weighted imitation (bc_dyn, dmil, dwbc, d2mil) and the
dynamics model: the checks of ALGORITHMS.md, on small data, in seconds."""

import numpy as np
import pytest
import torch
from conftest import assert_exported_member_matches

from droil_ros import algos
from droil_ros.algos.dynamics import GaussianDynamics
from droil_ros.algos.imitation import pu_loss
from droil_ros.data import DatasetError
from droil_ros.errors import DroilError
from droil_ros.robots import load_spec

SPEC = load_spec("wheel_legged")
EXPERT_LEARNERS = ["bc_dyn", "bc_dyn_2phase", "dmil"]
MIXED_LEARNERS = ["dwbc", "d2mil"]
LEARNERS = EXPERT_LEARNERS + MIXED_LEARNERS


@pytest.fixture(scope="module")
def mixed_dataset(quality_mixed_dataset):
    return quality_mixed_dataset


def data_for(name, lqr_dataset, mixed_dataset):
    return mixed_dataset if name in MIXED_LEARNERS else lqr_dataset


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def networks(learner) -> list[torch.nn.Module]:
    """Every trained network of a learner: policy, model, discriminators."""
    return [m for m in (learner.policy, getattr(learner, "model", None), getattr(learner, "disc", None),
                        getattr(learner, "disc_o", None)) if m is not None]


def linear_system(n=2000, noise=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([[1.0, 0.05], [-0.1, 0.95]])
    b = torch.tensor([[0.0], [0.1]])
    s = torch.randn(n, 2, generator=g)
    u = torch.rand(n, 1, generator=g) * 2 - 1
    return s, u, s @ a.T + u @ b.T + noise * torch.randn(n, 2, generator=g)


def test_dynamics_fits_a_linear_system():
    s, u, s_next = linear_system()
    model = GaussianDynamics(2, 1, seeds=[0, 1], n_models=2, hidden=(32, 32), lr=3e-3)
    model.fit_scaler(s, u, s_next)
    history = model.fit(s, u, s_next, steps=400, batch_size=128)
    assert history[-1] < -6.0 < history[0]  # optimum: 2 * (0.5 + log 0.01 + log sqrt(2 pi)) = -6.37
    test_s, test_u, test_next = linear_system(200, noise=0.0, seed=1)
    pred = model.predict(test_s.expand(2, -1, -1), test_u.expand(2, -1, -1))
    assert pred.next_mean.shape == (2, 2, 200, 2)
    with torch.no_grad():
        assert float((pred.next_mean - test_next).abs().mean()) < 0.01  # the noise is 0.01
        assert 0.005 < float(pred.next_std.mean()) < 0.03  # learnt the noise level
    with torch.no_grad():
        draws = model.sample(test_s.expand(2, -1, -1), test_u.expand(2, -1, -1))
        assert draws.shape == (2, 2, 200, 2)
        assert 0.005 < float((draws - pred.next_mean).std()) < 0.03
    log_p = model.log_prob(test_s.expand(2, -1, -1), test_u.expand(2, -1, -1), test_next.expand(2, -1, -1))
    torch.testing.assert_close(-log_p.sum(-1), model.nll(test_s.expand(2, -1, -1), test_u.expand(2, -1, -1),
                                                         test_next.expand(2, -1, -1)))


def test_dynamics_models_are_independent_of_their_neighbours():
    """Model k of seed i is the same whether it trains alone or in a (seeds x models) ensemble."""
    s, u, s_next = linear_system(500)
    big = GaussianDynamics(2, 1, seeds=[3, 4], n_models=3, hidden=(16,), reward=True)
    small = GaussianDynamics(2, 1, seeds=[4], n_models=2, hidden=(16,), reward=True)
    r = s[:, 0] ** 2
    for model in (big, small):
        model.fit_scaler(s, u, s_next, r)
        model.fit(s, u, s_next, r, steps=20, batch_size=32)
    for a, b in zip(params(big), params(small), strict=True):
        torch.testing.assert_close(a[4], b[1], rtol=1e-5, atol=1e-6)  # seed 4, model 1
    pred = small.predict(s[:5].expand(1, -1, -1), u[:5].expand(1, -1, -1))
    assert pred.reward_mean.shape == (1, 2, 5)
    with pytest.raises(DroilError, match="predicts rewards"):
        small.nll(s[:5].expand(1, -1, -1), u[:5].expand(1, -1, -1), s_next[:5].expand(1, -1, -1))
    with pytest.raises(DroilError, match="expected shape"):
        small.predict(s[:5].expand(3, -1, -1), u[:5].expand(3, -1, -1))


@pytest.mark.parametrize("name", LEARNERS)
def test_loss_decreases(name, lqr_dataset, mixed_dataset, tmp_path):
    data = data_for(name, lqr_dataset, mixed_dataset)
    learner = algos.create(name, data, SPEC, preset="fast", steps=200)
    rows = learner.fit(progress=False, log_path=tmp_path / "log.csv")
    assert len({tuple(row) for row in rows}) == 1  # the same metrics before and after rollouts start
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]  # squared error of the deterministic action
    if "nll" in rows[0]:
        assert rows[-1]["nll"] < rows[0]["nll"] - 1.0  # the policy's likelihood of expert actions
    if "model_nll" in rows[0]:
        assert rows[-1]["model_nll"] < rows[0]["model_nll"] - 1.0


@pytest.mark.parametrize("name", LEARNERS)
def test_batched_member_equals_single_seed_run(name, lqr_dataset, mixed_dataset):
    data = data_for(name, lqr_dataset, mixed_dataset)
    batched = algos.create(name, data, SPEC, preset="fast", steps=60, seed=3, n_seeds=3)
    batched.fit(progress=False)
    single = algos.create(name, data, SPEC, preset="fast", steps=60, seed=4)
    single.fit(progress=False)
    for net_b, net_s in zip(networks(batched), networks(single), strict=True):
        for a, b in zip(params(net_b), params(net_s), strict=True):
            torch.testing.assert_close(a[1], b[0], rtol=1e-4, atol=1e-5)


def assert_imitates_like_bc(learner, data, steps):
    """BC's action explains > 95 % of the expert actions' second moment after ``steps``; the
    learner's > 80 % (maximum likelihood weighs samples by 1/sigma^2, so its mean fits less
    tightly than a squared error in as many steps)."""
    bc = algos.create("bc", data, SPEC, preset="fast", steps=steps, seed=0)
    bc.fit(progress=False)
    obs = bc.obs.expand(1, -1, -1)
    with torch.no_grad():
        errors = [float(((m.act(obs) - m.actions) ** 2).sum(-1).mean()) for m in (bc, learner)]
    second_moment = float((bc.actions**2).sum(-1).mean())
    assert errors[0] < 0.05 * second_moment
    assert errors[1] < 0.2 * second_moment


@pytest.mark.parametrize("name", ["bc_dyn", "bc_dyn_2phase"])
def test_bc_dyn_without_rollouts_is_bc(name, lqr_dataset):
    bc = algos.create("bc", lqr_dataset, SPEC, preset="fast", steps=120, seed=1)
    bc.fit(progress=False)
    dyn = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=120, seed=1, rollout_weight=0.0)
    dyn.fit(progress=False)
    assert dyn.buffer_size > 0  # rollouts were made, and weighed nothing
    for a, b in zip(params(bc.policy), params(dyn.policy), strict=True):
        assert torch.equal(a, b)
    trusted = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=120, seed=1)
    trusted.fit(progress=False)
    assert not torch.equal(params(trusted.policy)[0], params(bc.policy)[0])


def test_two_phase_pretrains_before_rolling_out(lqr_dataset):
    learner = algos.create("bc_dyn_2phase", lqr_dataset, SPEC, preset="fast")
    learner.fit(steps=200, progress=False)
    assert learner.rollout_start == 100  # half of the run; bc_dyn starts after the model warm-up
    assert algos.create("bc_dyn", lqr_dataset, SPEC, preset="fast").rollout_start == 50


def test_dmil_without_rollouts_or_discriminator_is_maximum_likelihood_bc(lqr_dataset):
    """Rollout weight 0 and d fixed: the policy is weighted-likelihood BC, whatever the model."""
    common = dict(preset="fast", steps=150, seed=2, rollout_weight=0.0, discriminator=False,
                  policy_warmup=True)
    runs = [algos.create("dmil", lqr_dataset, SPEC, model_lr=lr, **common) for lr in (1e-3, 1e-5)]
    for learner in runs:
        learner.fit(progress=False)
    assert not torch.equal(params(runs[0].model)[0], params(runs[1].model)[0])
    for a, b in zip(params(runs[0].policy), params(runs[1].policy), strict=True):
        assert torch.equal(a, b)
    assert_imitates_like_bc(runs[0], lqr_dataset, steps=150)


def test_dmil_rollouts_follow_the_model_and_the_policy(lqr_dataset):
    learner = algos.create("dmil", lqr_dataset, SPEC, preset="fast", rollout_horizon=3)
    learner.fit(steps=60, progress=False)  # the buffer is filled at step 50
    assert learner.buffer_size == learner.capacity == len(lqr_dataset)
    learner.rollout(10)
    new = slice(learner.buffer_pos - 10, learner.buffer_pos)
    obs, actions, next_obs = (learner.buffer[k][:, new] for k in ("obs", "actions", "next_obs"))
    with torch.no_grad():
        torch.testing.assert_close(actions, learner.act(obs))
        torch.testing.assert_close(next_obs, learner.model.predict(obs, actions).next_mean[:, 0])
    # horizon 3: two stored transitions per start, the second continuing the first
    torch.testing.assert_close(obs[:, 5:], next_obs[:, :5])


def test_dwbc_on_all_expert_data_behaves_as_bc(lqr_dataset):
    """Every other expert transition tagged 'other': DWBC imitates the expert like BC."""
    data = lqr_dataset.select(np.ones(len(lqr_dataset), bool))
    data.quality[1::2] = 1
    dwbc = algos.create("dwbc", data, SPEC, preset="fast", steps=300, seed=0)
    dwbc.fit(progress=False)
    assert_imitates_like_bc(dwbc, data, steps=300)


def test_weights_match_the_papers_formulas(mixed_dataset):
    d2mil = algos.create("d2mil", mixed_dataset, SPEC, preset="fast")
    low, high = torch.tensor([0.1]), torch.tensor([0.9])
    # paper variant, at d_o = d_r = 0.1: D_E weight 10 - 0.5*0.5/0.09 - 0.5/0.1 = 2.22,
    # D_O weight 0.5/0.9 - 0.5/0.1 = -4.44 (literal, clamp_other=False), D_R 0.5/0.9 + 0.5/0.9
    literal = algos.create("d2mil", mixed_dataset, SPEC, preset="fast", clamp_other=False)
    w_e, w_o, w_r = literal.policy_weights([low] * 3, [low] * 3)
    np.testing.assert_allclose([w_e.item(), w_o.item(), w_r.item()], [2.2222, -4.4444, 1.1111], atol=1e-4)
    assert d2mil.policy_weights([low] * 3, [low] * 3)[1].item() == 0.0  # clamped by default
    # DWBC-style variant: expert weight 10 - 1/0.1 - 0.5/0.09 - 1 < 0 -> clamped to 0;
    # D_O weight d_o/(1-d_o) = 9 at 0.9, 0 below 0.5
    dwbc_style = algos.create("d2mil", mixed_dataset, SPEC, preset="fast", variant="dwbc")
    w_e, w_o, _ = dwbc_style.policy_weights([low] * 3, [high, torch.tensor([0.9, 0.4]), high])
    assert w_e.item() == 0.0
    np.testing.assert_allclose(w_o.numpy(), [9.0, 0.0], rtol=1e-5)
    # PU risk: eta E_P[-log d] + E_U[-log(1-d)] - eta E_P[-log(1-d)], DWBC divides by eta
    d_pos, d_unl = torch.tensor([[0.8, 0.6]]), torch.tensor([[0.3, 0.2]])
    risk = 0.5 * -np.log([0.8, 0.6]).mean() - np.log([0.7, 0.8]).mean() + 0.5 * np.log([0.2, 0.4]).mean()
    np.testing.assert_allclose(pu_loss(d_pos, d_unl, 0.5, scaled=False).item(), risk, rtol=1e-5)
    np.testing.assert_allclose(pu_loss(d_pos, d_unl, 0.5).item(), risk / 0.5, rtol=1e-5)


def test_bad_data_and_options_fail_clearly(lqr_dataset, mixed_dataset):
    for name in MIXED_LEARNERS:
        with pytest.raises(DatasetError, match=f"{name} needs transitions tagged quality='other'"):
            algos.create(name, lqr_dataset, SPEC, preset="fast")
    nan = lqr_dataset.select(np.ones(len(lqr_dataset), bool))
    nan.next_observations[3, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN/Inf in next_observations"):
        algos.create("dmil", nan, SPEC)
    with pytest.raises(DroilError, match="unknown d2mil variant 'gail'"):
        algos.create("d2mil", mixed_dataset, SPEC, variant="gail")
    with pytest.raises(DroilError, match="rollout_horizon must be >= 2"):
        algos.create("bc_dyn", lqr_dataset, SPEC, rollout_horizon=1)
    with pytest.raises(DroilError, match="unknown config keys"):
        algos.create("dwbc", mixed_dataset, SPEC, rollout_weight=0.0)


@pytest.mark.parametrize("name", LEARNERS)
def test_exported_onnx_matches_torch(name, lqr_dataset, mixed_dataset, tmp_path):
    learner = algos.create(name, data_for(name, lqr_dataset, mixed_dataset), SPEC, preset="fast",
                           steps=60, n_seeds=2)
    learner.fit(progress=False)
    assert_exported_member_matches(learner, SPEC, tmp_path)
