"""Composition of releases: min(basic, PRV) at the budget's delta, with known values."""

import math

import pytest
from lmdock.common.accounting import Budget, Release, compose, prv_epsilon
from lmdock.common.calibration import analytic_sigma
from lmdock.common.errors import InvalidArgument

#: sigma / Delta of an analytically calibrated epsilon = 1, delta = 1e-6 Gaussian release.
Z_EPS1 = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=1.0)


def spec_release(epsilon: float = 1.0, delta: float = 1e-6) -> Release:
    z = analytic_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)
    return Release(epsilon=epsilon, delta=delta, noise_multiplier=z)


def test_known_values_prv_1_010_rdp_1_078() -> None:
    """The numbers the design is built on: Opacus' PRV books 1.010, its RDP accountant 1.078."""
    from opacus.accountants import RDPAccountant

    assert prv_epsilon([spec_release()], delta=1e-6) == pytest.approx(1.010, abs=0.002)
    rdp = RDPAccountant()
    rdp.history = [(Z_EPS1, 1.0, 1)]
    assert rdp.get_epsilon(1e-6) == pytest.approx(1.078, abs=0.002)


def test_a_single_release_costs_exactly_its_calibrated_epsilon() -> None:
    spent = compose([spec_release()], delta=1e-6)
    assert (spent.epsilon, spent.delta, spent.method, spent.releases) == (1.0, 1e-6, "basic", 1)
    assert spent.within(Budget(epsilon=1.0, delta=1e-6))  # a cap of 1 allows the first search


def test_at_a_larger_delta_the_prv_bound_is_below_the_calibrated_epsilon() -> None:
    spent = compose([spec_release()], delta=1e-5)
    assert spent.method == "prv" and spent.epsilon == pytest.approx(0.883, abs=0.005)


def test_repeated_releases_use_the_tighter_prv_bound() -> None:
    two = compose([spec_release(), spec_release()], delta=2e-6)
    assert two.method == "prv" and two.delta == 2e-6
    assert two.epsilon == pytest.approx(1.413, abs=0.005)
    five = compose([spec_release()] * 5, delta=1e-5)
    assert five.epsilon == pytest.approx(2.134, abs=0.005)
    assert not two.within(Budget(epsilon=1.0, delta=1e-5))


def test_basic_composition_needs_the_deltas_to_fit() -> None:
    """Two delta = 1e-6 releases are not (2, 1e-6)-DP by basic composition: PRV decides."""
    spent = compose([spec_release(), spec_release()], delta=1e-6)
    assert spent.method == "prv" and spent.epsilon == pytest.approx(1.465, abs=0.005)
    weak = Release(epsilon=1.0, delta=1e-6, noise_multiplier=0.05)  # far less noise than it claims
    assert compose([weak, weak], delta=1e-6).epsilon > 2  # the sum does not hold at 1e-6


def test_composition_at_a_fixed_delta_never_decreases() -> None:
    releases: list[Release] = []
    last = 0.0
    for eps in (0.5, 1.0, 2.0, 0.3, 1.0):
        releases.append(spec_release(eps))
        spent = compose(releases, delta=1e-5)
        assert spent.epsilon >= last - 1e-9
        assert spent.epsilon <= math.fsum(r.epsilon for r in releases) + 1e-12
        last = spent.epsilon


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # Opacus' own log(1 - q) at q = 1
def test_heterogeneous_and_subsampled_releases_match_opacus_directly() -> None:
    """A DP-SGD run (Poisson sampling, many steps) composes with a spec release."""
    from opacus.accountants import PRVAccountant

    sgd = Release(epsilon=2.5, delta=1e-6, noise_multiplier=1.1, sample_rate=0.01, steps=300)
    spent = compose([sgd, spec_release()], delta=1e-5)
    direct = PRVAccountant()
    direct.history = [(1.1, 0.01, 300), (Z_EPS1, 1.0, 1)]
    assert spent.epsilon == pytest.approx(min(3.5, direct.get_epsilon(1e-5)), rel=1e-9)


def test_tv_slack_is_paid_out_of_delta() -> None:
    clean = compose([spec_release(), spec_release()], delta=2e-6)
    slack = Release(epsilon=1.0, delta=1e-6, noise_multiplier=Z_EPS1, tv_slack=1e-7)
    slack_spent = compose([slack, slack], delta=2e-6)
    assert slack_spent.epsilon > clean.epsilon  # PRV evaluated at a smaller delta
    hopeless = Release(epsilon=1.0, delta=1e-6, noise_multiplier=Z_EPS1, tv_slack=1e-6)
    assert compose([hopeless, hopeless], delta=2e-6).method == "basic"


def test_empty_history_spends_nothing() -> None:
    spent = compose([], delta=1e-5)
    assert (spent.epsilon, spent.delta, spent.releases, spent.method) == (0.0, 1e-5, 0, "none")


@pytest.mark.parametrize(
    "fields",
    [
        {"epsilon": 0.0, "delta": 1e-6, "noise_multiplier": 1.0},
        {"epsilon": 1.0, "delta": 1.0, "noise_multiplier": 1.0},
        {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": -1.0},
        {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": math.nan},
        {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": 1.0, "sample_rate": 0.0},
        {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": 1.0, "steps": 0},
        {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": 1.0, "tv_slack": -1e-9},
    ],
)
def test_invalid_releases_are_refused(fields: dict) -> None:
    with pytest.raises(InvalidArgument):
        Release(**fields)


def test_privacy_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Release(1.0, 1e-6, 4.2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Budget(1.0, 1e-6)  # type: ignore[misc]
    with pytest.raises(InvalidArgument):
        Budget(epsilon=-1.0, delta=1e-6)


def test_release_round_trips_and_malformed_records_are_refused() -> None:
    r = Release(epsilon=1.0, delta=1e-6, noise_multiplier=4.2, sample_rate=0.5, steps=3, tv_slack=1e-12)
    assert Release.from_dict(r.to_dict()) == r
    with pytest.raises(InvalidArgument):
        Release.from_dict({"epsilon": 1.0})
