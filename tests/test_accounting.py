"""Composition of releases for replace-one neighbours: min(basic, PLD) at the budget's delta,
checked against closed forms and known values."""

import math
import subprocess
import sys

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from lmdock.common import accounting
from lmdock.common.accounting import (
    Budget,
    Release,
    check_delta,
    compose,
    composed_epsilon,
    dp_sgd_noise_multiplier,
    max_delta,
)
from lmdock.common.calibration import analytic_delta, analytic_sigma
from lmdock.common.errors import InvalidArgument
from lmdock.common.mechanism import calibrate
from scipy.stats import norm

#: sigma / Delta of an analytically calibrated epsilon = 1, delta = 1e-6 Gaussian release.
Z_EPS1 = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=1.0)


def spec_release(epsilon: float = 1.0, delta: float = 1e-6) -> Release:
    z = analytic_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)
    return Release(epsilon=epsilon, delta=delta, noise_multiplier=z)


def sgd_release(z: float, q: float, steps: int = 1) -> Release:
    """A DP-SGD run as the ledger books it (epsilon is irrelevant to the PLD bound)."""
    return Release(
        epsilon=50.0, delta=1e-6, noise_multiplier=z, sample_rate=q, steps=steps, sensitivity="add-remove"
    )


def epsilon_at(delta_of, delta: float) -> float:
    """The epsilon at which a decreasing privacy curve delta_of(epsilon) reaches `delta`."""
    lo, hi = 0.0, 60.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


def subsampled_replace_delta(z: float, q: float, epsilon: float) -> float:
    """Exact delta(epsilon) of one Poisson-sampled Gaussian step under replace-one: the pair
    P = (1-q) N(0, z²) + q N(1, z²), Q = (1-q) N(0, z²) + q N(-1, z²). Its privacy loss is
    increasing in x, so delta = P(X > x*) - e^eps Q(X > x*) where the loss at x* is epsilon;
    with a = e^(x/z²), c = e^(-1/(2z²)): q c a² + (1-q)(1-e^eps) a - e^eps q c = 0."""
    c, e = math.exp(-1 / (2 * z * z)), math.exp(epsilon)
    b = (1 - q) * (1 - e)
    a = (-b + math.sqrt(b * b + 4 * q * c * e * q * c)) / (2 * q * c)
    x = z * z * math.log(a)
    p_tail = (1 - q) * norm.sf(x / z) + q * norm.sf((x - 1) / z)
    q_tail = (1 - q) * norm.sf(x / z) + q * norm.sf((x + 1) / z)
    return p_tail - e * q_tail


def test_a_single_release_costs_exactly_its_calibrated_epsilon() -> None:
    spent = compose([spec_release()], delta=1e-6)
    assert (spent.epsilon, spent.delta, spent.method, spent.releases) == (1.0, 1e-6, "basic", 1)
    assert spent.within(Budget(epsilon=1.0, delta=1e-6))  # a cap of 1 allows the first search
    assert composed_epsilon([spec_release()], delta=1e-6) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # Opacus' own log(1 - q) at q = 1
def test_pld_is_tighter_than_opacus_prv_and_rdp() -> None:
    """Opacus books the same release as 1.010 (PRV) and 1.078 (RDP); the PLD bound is exact."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    prv, rdp = PRVAccountant(), RDPAccountant()
    prv.history = rdp.history = [(Z_EPS1, 1.0, 1)]
    assert prv.get_epsilon(1e-6) == pytest.approx(1.010, abs=0.002)
    assert rdp.get_epsilon(1e-6) == pytest.approx(1.078, abs=0.002)


def test_known_values_of_repeated_spec_releases() -> None:
    assert compose([spec_release()], delta=1e-5).epsilon == pytest.approx(0.8725, abs=0.001)
    two = compose([spec_release(), spec_release()], delta=2e-6)
    assert two.method == "gaussian" and two.delta == 2e-6
    assert two.epsilon == pytest.approx(1.4033, abs=0.001)
    assert compose([spec_release()] * 5, delta=1e-5).epsilon == pytest.approx(2.1240, abs=0.001)
    assert not compose([spec_release()] * 2, delta=1e-6).within(Budget(epsilon=1.4, delta=1e-6))  # 1.455


def test_k_gaussian_releases_compose_to_one_with_sigma_over_root_k() -> None:
    """Closed form: k Gaussian steps of multiplier z are one Gaussian of multiplier z / sqrt(k)."""
    z = 2.0
    for k in (1, 4, 9):
        sigma = z / math.sqrt(k)
        exact = epsilon_at(lambda e, s=sigma: analytic_delta(sigma=s, sensitivity=1.0, epsilon=e), 1e-5)
        release = Release(epsilon=50.0, delta=1e-6, noise_multiplier=z, steps=k)
        assert composed_epsilon([release], delta=1e-5) == pytest.approx(exact, abs=1e-3)
        assert composed_epsilon([release], delta=1e-5) >= exact - 1e-9  # an upper bound


def test_dp_sgd_under_replace_one_doubles_the_sensitivity_without_sampling() -> None:
    """q = 1: replacing a record moves the clipped sum by up to 2C, so the step is a Gaussian
    mechanism of sensitivity 2 at noise z (in units of C)."""
    z = 1.3
    exact = epsilon_at(lambda e: analytic_delta(sigma=z, sensitivity=2.0, epsilon=e), 1e-5)
    assert exact == pytest.approx(7.2685, abs=1e-3)
    assert composed_epsilon([sgd_release(z, 1.0)], delta=1e-5) == pytest.approx(exact, abs=1e-3)


@pytest.mark.parametrize(("z", "q", "known"), [(0.8, 0.1, 2.8327), (1.0, 0.25, 2.9924), (0.5, 0.05, 5.5682)])
def test_one_poisson_sampled_step_matches_the_closed_form(z: float, q: float, known: float) -> None:
    exact = epsilon_at(lambda e: subsampled_replace_delta(z, q, e), 1e-5)
    assert exact == pytest.approx(known, abs=1e-3)
    bound = composed_epsilon([sgd_release(z, q)], delta=1e-5)
    assert exact - 1e-9 <= bound <= exact + 1e-3


def test_replace_one_costs_more_than_opacus_add_remove_for_the_same_run() -> None:
    """A DP-SGD run's replace-one epsilon exceeds the add/remove epsilon Opacus reports for it,
    and stays below the add/remove epsilon at half the noise (group privacy would allow)."""
    from opacus.accountants import PRVAccountant

    z, q, steps = 1.1, 0.0625, 160
    replace_one = composed_epsilon([sgd_release(z, q, steps)], delta=1e-6)
    add_remove = PRVAccountant()
    add_remove.history = [(z, q, steps)]
    assert (
        add_remove.get_epsilon(1e-6)
        < replace_one
        < composed_epsilon([sgd_release(z / 2, q, steps)], delta=1e-6)
    )


def test_dp_sgd_noise_is_the_smallest_that_fits_the_target() -> None:
    q, steps = 1 / 16, 160
    z = dp_sgd_noise_multiplier(epsilon=8.0, delta=1e-6, sample_rate=q, steps=steps)
    assert z == pytest.approx(1.085, abs=0.005)  # the benchmark's medquad setting
    assert composed_epsilon([sgd_release(z, q, steps)], delta=1e-6) <= 8.0
    assert composed_epsilon([sgd_release(z * 0.995, q, steps)], delta=1e-6) > 8.0
    with pytest.raises(InvalidArgument):
        dp_sgd_noise_multiplier(epsilon=0.0, delta=1e-6, sample_rate=q, steps=steps)


def test_basic_composition_needs_the_deltas_to_fit() -> None:
    """Two delta = 1e-6 releases are not (2, 1e-6)-DP by basic composition: the composed bound decides."""
    spent = compose([spec_release(), spec_release()], delta=1e-6)
    assert spent.method == "gaussian" and spent.epsilon == pytest.approx(1.4547, abs=0.001)
    weak = Release(epsilon=1.0, delta=1e-6, noise_multiplier=0.05)  # far less noise than it claims
    assert compose([weak, weak], delta=1e-6).epsilon > 2  # the sum does not hold at 1e-6


def test_composition_at_a_fixed_delta_never_decreases() -> None:
    releases: list[Release] = []
    last = 0.0
    for release in (spec_release(0.5), sgd_release(1.5, 0.1, 50), spec_release(2.0), spec_release(0.3)):
        releases.append(release)
        spent = compose(releases, delta=1e-5)
        assert spent.epsilon >= last - 1e-9
        assert spent.epsilon <= math.fsum(r.epsilon for r in releases) + 1e-12
        last = spent.epsilon


def test_a_training_run_and_a_spec_compose_in_one_accountant() -> None:
    sgd = Release(
        epsilon=2.5, delta=1e-6, noise_multiplier=1.1, sample_rate=0.01, steps=300, sensitivity="add-remove"
    )
    spent = compose([sgd, spec_release()], delta=1e-5)
    alone = compose([sgd], delta=1e-5).epsilon
    assert spent.method == "pld" and alone < spent.epsilon < 3.5
    assert spent.epsilon == pytest.approx(composed_epsilon([sgd, spec_release()], delta=1e-5), rel=1e-12)


def test_tv_slack_is_paid_out_of_delta() -> None:
    clean = compose([spec_release(), spec_release()], delta=2e-6)
    slack = Release(epsilon=1.0, delta=1e-6, noise_multiplier=Z_EPS1, tv_slack=1e-7)
    slack_spent = compose([slack, slack], delta=2e-6)
    assert slack_spent.epsilon > clean.epsilon  # PLD evaluated at a smaller delta
    hopeless = Release(epsilon=1.0, delta=1e-6, noise_multiplier=Z_EPS1, tv_slack=1e-6)
    assert compose([hopeless, hopeless], delta=2e-6).method == "basic"


def exact_gaussian_composition(noise_multiplier: float, k: int, delta: float) -> float:
    """dp_accounting's PLD of k ideal Gaussian mechanisms (replace-one, one record = 2 units),
    on a grid ten times finer than the ledger's."""
    accountant = PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-4
    )
    accountant.compose(dp_accounting.GaussianDpEvent(2 * noise_multiplier), k)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("delta", [1e-5, 1e-6])
def test_ten_and_eleven_specs_book_their_exact_composition(delta: float) -> None:
    """The sampler's TV is paid at the composed epsilon: ten epsilon = 1 specs (n = 300, D = 384)
    booked 3.346 at delta = 1e-5 against an exact 3.140 when it was paid at e^(sum epsilon), and
    the eleventh booked infinity."""
    spec = calibrate(epsilon=1.0, delta=1e-6, clip_radius=1.0, bucket=288, dim=384).cost
    assert spec.tv_slack > 0
    for k in (10, 11):
        exact = exact_gaussian_composition(spec.noise_multiplier, k, delta)
        booked = compose([spec] * k, delta=delta)
        assert booked.method == "gaussian"
        assert exact - 1e-6 <= booked.epsilon <= exact + 0.003, (k, booked.epsilon, exact)
    assert compose([spec] * 11, delta=1e-6).within(Budget(epsilon=100.0, delta=1e-6))
    assert exact_gaussian_composition(spec.noise_multiplier, 10, 1e-5) == pytest.approx(3.1397, abs=1e-3)


def test_max_delta_is_one_policy_for_every_n() -> None:
    assert max_delta(1) == max_delta(50) == max_delta(100_000) == 1e-6
    assert max_delta(200_000) == pytest.approx(5e-7)
    check_delta(1e-6, n=300)
    with pytest.raises(InvalidArgument, match=r"delta=0.5 is above .* min\(1e-6, 1/\(10 n\)\) = 1e-06"):
        check_delta(0.5, n=300)
    for delta in (0.5, 1e-5, 1.1e-6):
        with pytest.raises(InvalidArgument, match="above the limit"):
            Budget(epsilon=3.0, delta=delta)
    with pytest.raises(InvalidArgument):
        max_delta(0)


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
        {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": 1.0, "sensitivity": "add-one"},
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
    r = Release(
        epsilon=1.0,
        delta=1e-6,
        noise_multiplier=4.2,
        sample_rate=0.5,
        steps=3,
        tv_slack=1e-12,
        sensitivity="add-remove",
    )
    assert Release.from_dict(r.to_dict()) == r
    legacy = {"epsilon": 1.0, "delta": 1e-6, "noise_multiplier": 4.2}  # ledgers written before DP-SGD
    assert Release.from_dict(legacy).sensitivity == "replace-one"
    with pytest.raises(InvalidArgument):
        Release.from_dict({"epsilon": 1.0})


def test_plain_gaussians_compose_exactly_and_below_the_pld_bound() -> None:
    """Specs (q = 1) compose into one Gaussian: the exact epsilon, never above PLD's pessimistic
    bound and within its grid of it; a subsampled release still goes to PLD."""
    specs = [spec_release(), Release(epsilon=2.0, delta=1e-7, noise_multiplier=1.3, steps=3)]
    exact = compose(specs, delta=1e-6)
    pld = accounting._pld_epsilon_at(accounting._pld(specs), 1e-6)
    assert exact.method == "gaussian" and exact.epsilon <= pld <= exact.epsilon + 1e-4
    sampled = Release(
        epsilon=1.0, delta=1e-6, noise_multiplier=1.0, sample_rate=0.1, steps=10, sensitivity="add-remove"
    )
    assert compose([*specs, sampled], delta=1e-6).method == "pld"


def test_a_spec_ledger_is_accounted_without_importing_scipy() -> None:
    """The budget check of a search stays off dp_accounting and SciPy (1.9 s of imports)."""
    code = (
        "import sys; from lmdock.common.accounting import Release, compose; "
        "compose([Release(epsilon=1.0, delta=1e-6, noise_multiplier=2.0)] * 3, delta=1e-5); "
        "assert not {'dp_accounting', 'scipy'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
