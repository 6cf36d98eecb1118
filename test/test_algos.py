"""Learners: the checks of ALGORITHMS.md, on small data, in seconds."""

import io

import numpy as np
import pytest
import torch
from conftest import assert_exported_member_matches

from droil_ros import algos
from droil_ros.algos.be_droil import dual_objective, worst_case_weights
from droil_ros.algos.drbc import dual_value, optimal_eta
from droil_ros.data import DatasetError
from droil_ros.data.dataset import TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.robots import load_spec

LEARNERS = ["bc", "drbc", "be_droil", "be_droil_nu0"]
SPEC = load_spec("wheel_legged")


def params(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.policy.parameters()]


@pytest.mark.parametrize("name", LEARNERS)
def test_loss_decreases(name, lqr_dataset):
    learner = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=200)
    rows = learner.fit(progress=False)
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]


def every_parameter(learner) -> list[torch.Tensor]:
    """Of every network the learner holds (policy, critics, models, discriminators)."""
    nets = [m for m in vars(learner).values() if isinstance(m, torch.nn.Module)]
    assert learner.policy in nets
    return [p.detach().clone() for net in nets for p in net.parameters()]


@pytest.mark.parametrize("name", algos.available())
def test_same_seed_same_result_bit_for_bit(name, data_for):
    """70 steps: past the model-based learners' fast-preset warm-up, so rollouts count too."""
    runs = []
    for seed in (7, 7, 8):
        learner = algos.create(name, data_for(name), SPEC, preset="fast", steps=70, seed=seed)
        learner.fit(progress=False)
        runs.append(every_parameter(learner))
    for a, b in zip(runs[0], runs[1], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(runs[2][0], runs[0][0])


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", algos.available())
def test_a_run_cut_short_goes_on_from_its_checkpoint_bit_for_bit(name, data_for, tmp_path):
    """70 steps straight against 50, a pickled checkpoint, the kill, and the last 20 from the
    unpickled learner (the schedules set at the start, e.g. IQL's cosine horizon, are kept)."""
    straight = algos.create(name, data_for(name), SPEC, preset="fast", steps=70, seed=7)
    straight.fit(progress=False)
    cut = algos.create(name, data_for(name), SPEC, preset="fast", steps=70, seed=7)
    saved = io.BytesIO()

    def checkpoint_then_die():
        torch.save(cut, saved)
        raise Interrupted

    with pytest.raises(Interrupted):
        cut.fit(progress=False, checkpoint=checkpoint_then_die, checkpoint_every=0.0)
    assert cut.step == 50
    saved.seek(0)
    resumed = torch.load(saved, weights_only=False)
    rows = resumed.fit(20, progress=False, resume=True)
    assert resumed.step == 70 and [r["step"] for r in rows] == [70]
    assert [r["step"] for r in resumed.history] == [r["step"] for r in straight.history] == [50, 70]
    for a, b in zip(every_parameter(straight), every_parameter(resumed), strict=True):
        assert torch.equal(a, b)
    resumed.fit(0, progress=False, log_path=tmp_path / "log.csv", resume=True)  # nothing left
    logged = (tmp_path / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in logged] == ["step", "50", "70"]


@pytest.mark.parametrize("name", ["bc", "be_droil"])
def test_batched_member_equals_single_seed_run(name, lqr_dataset):
    batched = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=20, seed=3, n_seeds=3)
    batched.fit(progress=False)
    single = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=20, seed=4)
    single.fit(progress=False)
    for a, b in zip(params(batched), params(single), strict=True):
        torch.testing.assert_close(a[1], b[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, overrides", [("drbc", {"rho": 0.0}), ("be_droil", {"alpha": 1e9})])
def test_zero_radius_reduces_to_bc(name, overrides, lqr_dataset):
    bc = algos.create("bc", lqr_dataset, SPEC, preset="fast", steps=50, seed=1)
    bc.fit(progress=False)
    robust = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=50, seed=1, **overrides)
    robust.fit(progress=False)
    for a, b in zip(params(bc), params(robust), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_drbc_eta_minimises_the_piecewise_linear_dual():
    torch.manual_seed(0)
    losses = torch.rand(3, 64) ** 2
    for rho in (0.0, 0.1, 0.37, 1.0, 1.5):
        eta = optimal_eta(losses, rho)
        grid = torch.linspace(-1.0, 2.0, 3001)
        values = torch.stack([dual_value(losses, torch.full((3,), float(g)), rho) for g in grid])
        best = values.min(0).values
        torch.testing.assert_close(dual_value(losses, eta, rho), best, atol=1e-3, rtol=0)


def tabular_mdp(seed=0, states=6, actions=3, gamma=0.9):
    """Random MDP, deterministic expert, its triplet occupancy q0 (research/bedroil_dual_check.py)."""
    rng = np.random.default_rng(seed)
    p0 = rng.dirichlet(np.ones(states), size=(states, actions))
    pi = np.eye(actions)[rng.integers(0, actions, states)]
    mu0 = rng.dirichlet(np.ones(states))
    p_pi = np.einsum("sa,sat->st", pi, p0)
    d_s = (1 - gamma) * np.linalg.solve(np.eye(states) - gamma * p_pi.T, mu0)
    q0 = d_s[:, None, None] * pi[:, :, None] * p0
    ell = rng.random((states, actions))
    return q0, mu0, ell, gamma


@pytest.mark.parametrize("f", ["chi2", "kl", "tv"])
def test_be_droil_weights_satisfy_the_balance_equation(f):
    q0, mu0, ell, gamma = tabular_mdp()
    s_count = len(mu0)
    s, a, s_next = (torch.as_tensor(x) for x in np.nonzero(q0 > 0))
    p = torch.as_tensor(q0[q0 > 0])[None]  # exact expectation over the support
    ell_t = torch.as_tensor(ell)[s, a][None]
    nu = torch.zeros(s_count, dtype=torch.float64, requires_grad=True)
    lam = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.5], dtype=torch.float64)
    mu0_t = torch.as_tensor(mu0)

    def dual():
        e = ell_t + gamma * nu[s_next] - nu[s]
        # (1-gamma) E_mu0[nu] as a mean over states weighted by mu0 * S
        nu0 = (nu * mu0_t * s_count)[None]
        return dual_objective(e, nu0, lam, alpha, gamma, f, p=p).sum(), e

    opt = torch.optim.LBFGS([nu, lam], lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value, _ = dual()
        value.backward()
        return value

    for _ in range(5):
        opt.step(closure)
    with torch.no_grad():
        value, e = dual()
        w = worst_case_weights(e, lam, alpha, f, p=p)
        q = np.zeros_like(q0)
        q[q0 > 0] = (w * p)[0].numpy()
    out_flow = q.sum((1, 2))
    in_flow = q.sum((0, 1))
    np.testing.assert_allclose(q.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(out_flow, (1 - gamma) * mu0 + gamma * in_flow, atol=1e-6)
    robust = float((q.sum(2) * ell).sum())
    nominal = float((q0.sum(2) * ell).sum())
    assert nominal == pytest.approx(0.603, abs=1e-3)  # as in research/bedroil_dual_check.py
    assert robust > nominal + 0.01  # the adversary found a harder kernel
    # strong duality: dual value = E_q[ell] - alpha * D_f(q || q0)
    w_np = w[0].numpy()
    divergence = {"chi2": 0.5 * (w_np - 1) ** 2, "kl": w_np * np.log(w_np) - w_np + 1,
                  "tv": 0.5 * np.log(np.cosh(w_np - 1))}[f]
    penalised = robust - 0.5 * float((p[0].numpy() * divergence).sum())
    assert float(value) == pytest.approx(penalised, abs=1e-6)


def test_bad_datasets_fail_clearly(lqr_dataset):
    empty = lqr_dataset.select(np.zeros(len(lqr_dataset), bool))
    with pytest.raises(DatasetError, match="empty"):
        algos.create("bc", empty, SPEC)
    nan = lqr_dataset.select(np.ones(len(lqr_dataset), bool))
    nan.observations[5, 1] = np.nan
    with pytest.raises(DatasetError, match="NaN/Inf in observations"):
        algos.create("be_droil", nan, SPEC)
    constant = lqr_dataset.select(np.ones(len(lqr_dataset), bool))
    constant.actions[:] = 0.5
    with pytest.raises(DatasetError, match="every action in the dataset is the same"):
        algos.create("drbc", constant, SPEC)
    with pytest.raises(DatasetError, match="dataset is for robot 'wheel_legged', not 'hopper'"):
        algos.create("bc", lqr_dataset, load_spec("hopper"))


def test_unknown_learner_preset_and_key(lqr_dataset):
    with pytest.raises(DroilError, match="unknown learner 'gail'"):
        algos.create("gail", lqr_dataset, SPEC)
    with pytest.raises(DroilError, match="unknown config preset 'huge'"):
        algos.create("bc", lqr_dataset, SPEC, preset="huge")
    with pytest.raises(DroilError, match="unknown config keys"):
        algos.create("bc", lqr_dataset, SPEC, rho=0.3)
    with pytest.raises(DroilError, match="unknown divergence"):
        algos.create("be_droil", lqr_dataset, SPEC, f="js")


@pytest.mark.parametrize("name", LEARNERS)
def test_exported_onnx_matches_torch(name, lqr_dataset, tmp_path):
    learner = algos.create(name, lqr_dataset, SPEC, preset="fast", steps=20, n_seeds=2)
    learner.fit(progress=False)
    assert_exported_member_matches(learner, SPEC, tmp_path)


def chains_with_an_unfittable_tail(chains=4, length=300, seed=0):
    """Deterministic chains of a linear system: a damped rotation of (x1, x2) and a clock z that a
    constant h advances (z' = z + h), so states never repeat. The first half's actions are x1, the
    second half's random signs no policy can fit. A worst case must weight the tail; the old
    default's gamma^t weights sit on the head."""
    rng = np.random.default_rng(seed)
    c, s = 0.99 * np.cos(0.3), 0.99 * np.sin(0.3)
    step = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
    obs, nxt, act, starts = [], [], [], []
    for _ in range(chains):
        x = np.array([*rng.normal(size=2), 0.0, 1.0 / length])
        for t in range(length):
            obs.append(x)
            act.append([x[0] if t < length // 2 else 1.6 * rng.choice([-1.0, 1.0])])
            starts.append(t == 0)
            x = step @ x
            nxt.append(x)
    return TransitionDataset.from_arrays(SPEC, "test chains", observations=obs, actions=act,
                                         next_observations=nxt, episode_starts=starts)


@pytest.mark.parametrize("name, seeks_the_loss", [("be_droil", True), ("be_droil_legacy", False)])
def test_the_default_adversary_seeks_the_loss_the_legacy_one_discounts_time(name, seeks_the_loss):
    """E_w[l]/E[l] > 1 is what makes a worst case; the old default (gamma 0.99, episode starts,
    exact balance equation) gives about 0.5 here, as on Hopper (0.69, audit-2026-12-07)."""
    learner = algos.create(name, chains_with_an_unfittable_tail(), SPEC, preset="fast", steps=2000,
                           seed=0, n_seeds=2)
    rows = learner.fit(progress=False)[-5:]
    ratio, corr, ess = (np.mean([r[k] for r in rows]) for k in ("w_loss_ratio", "w_loss_corr", "w_ess"))
    if seeks_the_loss:
        assert ratio > 1.2 and corr > 0.3 and ess > 0.3
    else:
        assert ratio < 1.0 and corr < 0.0
