"""Empirical privacy audit of the released spec: a black-box lower bound on epsilon, and a
calibration check of the end-to-end release path against the claim.

Part A, the black-box bound (`audit`), runs the mechanism `release` uses:

1. Worst-case neighbours (replace-one): n = b records (b its own size bucket, so the noise is
   calibrated to exactly this n); X holds R e_1 and X' holds -R e_1 in place of the same record,
   the other n - 1 records are equal. Their kernel means differ by 2R/n along e_1, the full
   sensitivity.
2. Run the mechanism `release` uses (`calibrate` + `add_noise`: grid, discrete Gaussian from
   the OS CSPRNG) `--runs` times on each.
3. The best distinguisher: for a shift along e_1 the likelihood ratio is monotone in the first
   coordinate, so by Neyman-Pearson the most powerful tests are "say X when coordinate 1 >= t".
   t is chosen before any sample is drawn, from the public sigma (the threshold that maximises
   the expected bound below), so the confidence statement stays valid.
4. With TPR = P[say X | X] and FPR = P[say X | X'], (epsilon, delta)-DP implies
   TPR <= e^epsilon FPR + delta, so epsilon >= ln((TPR - delta) / FPR). Clopper-Pearson bounds
   (TPR from below, FPR from above, each at 1 - alpha/2) make it a lower bound that holds with
   probability >= 1 - alpha. The bound is limited by the number of runs (small FPRs need many
   of them); `expected_bound_at_this_many_runs` is what an exact Gaussian mechanism at the
   claimed epsilon would give, so the gap between it and the claim is statistics, not slack.

Part B, the calibration check (`calibration_audit`). A black-box bound cannot see a small
noise deficit (10 % too little noise is a true epsilon of about 1.12 at a claim of 1; a threshold
audit's bound crosses 1 only near 10^8 runs). So the audit also runs the path the CLI takes for a
spec -- `client.spec_release.private_spec` (the release `SpecBooking` books): embeddings ->
the profile's feature map -> person means -> `plan_release` -> noise -- on neighbouring tasks
of 96 persons with two records each (person 0's records embed to R e_1 in X, -R e_1 in X'; the
others' to R e_D; the embedder is replaced by that table, the one step outside the mechanism),
`--releases` times each, and compares the noise over all D coordinates of every release,
residual = release - exact mean, with the noise the claim needs: sigma_needed =
analytic_sigma(epsilon, delta, 2R/b), computed here from (epsilon, delta) alone. Under a correct
mechanism N sigma_hat^2 / sigma^2 ~ chi^2_N (N = 2 releases D draws, known mean), so the check
fails when sigma_hat / sigma_needed < sqrt(chi2.ppf(alpha, N) / N) (alpha = 1e-6); the deficit
it detects with 95 % power is 1 - sqrt(chi2.ppf(alpha, N) / chi2.ppf(0.95, N)). It also checks
the mean shift between X and X' (the data reaches the release) and, for a few releases through
`SpecBooking` with a fresh ledger each, that the ledger books the claimed (epsilon, delta) and a
noise multiplier the measured noise supports.

    python benchmarks/privacy_audit.py --json [--runs 1000000] [--releases 10000] [--epsilon 1]
                                       [--delta 1e-6] [--full] [--noise-scale 1.0]

Prints claimed_epsilon, empirical_epsilon (part A) and their ratio, and `calibration` (part B)
with smallest_detected_deficit. `--noise-scale` < 1 simulates a broken mechanism in both parts
(in part B: the release path run at the epsilon whose sigma is that much smaller).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lmdock.client.ledger import Ledger
from lmdock.client.spec_release import SpecBooking, private_spec
from lmdock.common.calibration import analytic_sigma
from lmdock.common.mechanism import Calibration, add_noise, calibrate
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import plan_release, size_bucket
from scipy.stats import beta, chi2, norm

CLIP_RADIUS = 1.0


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided 1 - alpha interval for a binomial proportion."""
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def epsilon_lower_bound(tp: int, fp: int, runs: int, *, delta: float, alpha: float) -> float:
    """ln((TPR_lo - delta) / FPR_hi), with each rate bounded at confidence 1 - alpha/2."""
    tpr_lo, _ = clopper_pearson(tp, runs, alpha)
    _, fpr_hi = clopper_pearson(fp, runs, alpha)
    if tpr_lo - delta <= 0:
        return 0.0
    return max(0.0, math.log((tpr_lo - delta) / fpr_hi))


def best_threshold(shift: float, runs: int, *, delta: float, alpha: float) -> tuple[float, float]:
    """The threshold (in sigmas above the mean under X') maximising the bound expected from an
    exact Gaussian mechanism with this `shift` / sigma, and that expected bound."""
    candidates = np.arange(0.0, 6.0, 0.01)
    expected = [
        epsilon_lower_bound(
            int(runs * norm.sf(t - shift)), int(runs * norm.sf(t)), runs, delta=delta, alpha=alpha
        )
        for t in candidates
    ]
    best = int(np.argmax(expected))
    return float(candidates[best]), float(expected[best])


def neighbours(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel means of the worst-case pair: they differ by 2R/n along e_1."""
    rest = np.zeros(dim)
    rest[-1] = CLIP_RADIUS  # n - 1 identical records, orthogonal to e_1
    one = np.zeros(dim)
    one[0] = CLIP_RADIUS
    mean_x = ((n - 1) * rest + one) / n
    mean_x_prime = ((n - 1) * rest - one) / n
    return mean_x, mean_x_prime


def run_mechanism(
    mean: np.ndarray, calibration: Calibration, runs: int, *, full: bool, batch: int = 20_000
) -> np.ndarray:
    """The first coordinate of `runs` releases of `mean`.

    With `full`, each release draws all D coordinates, exactly as `release` does; otherwise
    only the first: the others are independent of it and equal in law on both data sets, so
    they carry no information, and skipping them buys two orders of magnitude more runs.
    """
    drawn = mean if full else mean[:1]
    out = np.empty(runs)
    for start in range(0, runs, batch):
        m = min(batch, runs - start)
        out[start : start + m] = add_noise(np.broadcast_to(drawn, (m, drawn.size)), calibration)[:, 0]
    return out


def audit(
    *,
    epsilon: float,
    delta: float,
    runs: int,
    n: int = 96,
    dim: int = 384,
    alpha: float = 0.05,
    full: bool = False,
    noise_scale: float = 1.0,
) -> dict[str, Any]:
    started = time.perf_counter()
    if size_bucket(n) != n:
        raise ValueError(f"n must be its own size bucket (e.g. 96), got {n}")
    calibration = calibrate(epsilon=epsilon, delta=delta, clip_radius=CLIP_RADIUS, bucket=n, dim=dim)
    if noise_scale != 1.0:  # a deliberately broken mechanism, to show the audit has teeth
        calibration = dataclasses.replace(calibration, sigma=calibration.sigma * noise_scale)
    mean_x, mean_x_prime = neighbours(n, dim)
    sigma = calibration.sigma
    shift = (mean_x[0] - mean_x_prime[0]) / sigma
    t, expected = best_threshold(shift, runs, delta=delta, alpha=alpha)
    threshold = mean_x_prime[0] + t * sigma
    on_x = run_mechanism(mean_x, calibration, runs, full=full)
    on_x_prime = run_mechanism(mean_x_prime, calibration, runs, full=full)
    tp = int(np.sum(on_x >= threshold))
    fp = int(np.sum(on_x_prime >= threshold))
    empirical = epsilon_lower_bound(tp, fp, runs, delta=delta, alpha=alpha)
    return {
        "claimed_epsilon": epsilon,
        "empirical_epsilon": empirical,
        "ratio": empirical / epsilon,
        # what a perfect audit of an exact Gaussian mechanism would certify with this many runs
        "expected_bound_at_this_many_runs": expected,
        "delta": delta,
        "runs_per_dataset": runs,
        "confidence": 1 - alpha,
        "tpr": tp / runs,
        "fpr": fp / runs,
        "threshold_sigmas": t,
        "sigma": sigma,
        "sensitivity": calibration.sensitivity,
        "pair": f"n={n} records, R={CLIP_RADIUS}, D={dim}; one record R*e1 vs -R*e1",
        "coordinates_drawn": dim if full else 1,
        "noise_scale": noise_scale,
        "seconds": round(time.perf_counter() - started, 1),
    }


class TableEmbedder:
    """Texts -> chosen unit vectors: the audit picks the worst-case embeddings itself."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def neighbouring_tasks(persons: int, dim: int) -> dict[str, Any]:
    """Two tasks of `persons` persons x 2 records that differ in all of person 0's records."""
    axis = np.eye(dim)
    rest = [f"record-{i}" for i in range(2, 2 * persons)]
    table = {t: axis[-1] for t in rest}
    table.update({"x-0": axis[0], "x-1": axis[0], "y-0": -axis[0], "y-1": -axis[0]})
    ids = [f"person-{i // 2}" for i in range(2 * persons)]
    return {
        "embedder": TableEmbedder(table),
        "persons": ids,
        "x": ["x-0", "x-1", *rest],
        "x_prime": ["y-0", "y-1", *rest],
        "mean_x": (axis[0] + (persons - 1) * axis[-1]) / persons,
        "mean_x_prime": (-axis[0] + (persons - 1) * axis[-1]) / persons,
    }


def epsilon_with_sigma(profile: SpecProfile, sigma: float, *, delta: float, units: int) -> float:
    """The epsilon at which plan_release calibrates `sigma` (a broken mechanism's wrong epsilon)."""
    lo, hi = 1e-3, 64.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        planned = plan_release(profile, epsilon=mid, delta=delta, units=units).calibration.sigma
        lo, hi = (mid, hi) if planned > sigma else (lo, mid)
    return hi


def calibration_audit(
    *,
    epsilon: float,
    delta: float,
    releases: int,
    persons: int = 96,
    alpha: float = 1e-6,
    noise_scale: float = 1.0,
    ledger_checks: int = 3,
) -> dict[str, Any]:
    """Part B of the module docstring: the end-to-end release path's noise against the claim."""
    started = time.perf_counter()
    profile = make_profile()
    dim, radius = profile.feature_dim, profile.clip_radius
    if size_bucket(persons) != persons:
        raise ValueError(f"persons must be its own size bucket (e.g. 96), got {persons}")
    planned = plan_release(profile, epsilon=epsilon, delta=delta, units=persons).calibration
    run_epsilon = epsilon
    if noise_scale != 1.0:
        run_epsilon = epsilon_with_sigma(profile, planned.sigma * noise_scale, delta=delta, units=persons)
    pair = neighbouring_tasks(persons, dim)

    def spec_of(texts: list[str]) -> np.ndarray:
        who, emb = pair["persons"], pair["embedder"]
        released = private_spec(texts, profile, epsilon=run_epsilon, delta=delta, persons=who, embedder=emb)
        return np.asarray(released.spec.values, dtype=np.float64)

    squares, first = 0.0, {"x": np.empty(releases), "x_prime": np.empty(releases)}
    for side in ("x", "x_prime"):
        for r in range(releases):
            residual = spec_of(pair[side]) - pair[f"mean_{side}"]
            squares += float(residual @ residual)
            first[side][r] = residual[0] + pair[f"mean_{side}"][0]
    draws = 2 * releases * dim
    sigma_hat = math.sqrt(squares / draws)
    sensitivity = 2 * radius / persons  # replace-one, one person: also the shift of the mean along e1
    sigma_needed = analytic_sigma(epsilon=epsilon, delta=delta, sensitivity=sensitivity)
    threshold = math.sqrt(chi2.ppf(alpha, draws) / draws)
    detectable = 1 - math.sqrt(chi2.ppf(alpha, draws) / chi2.ppf(0.95, draws))
    shift = float(first["x"].mean() - first["x_prime"].mean())
    shift_tolerance = 5 * sigma_hat * math.sqrt(2 / releases)

    booked = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ledger_checks):
            ledger = Ledger(Path(tmp) / f"ledger-{i}.jsonl")
            booking = SpecBooking.open(
                ledger, pair["x"], epsilon=run_epsilon, delta=delta, persons=pair["persons"]
            )
            _, debit = booking.spec(profile, destination="audit", embedder=pair["embedder"])
            assert debit.entry is not None
            booked.append(debit.entry.release)
    supported = sigma_hat / sensitivity * (1 + 4 / math.sqrt(2 * draws))
    ledger_ok = all(
        (r.epsilon, r.delta) == (epsilon, delta) and r.noise_multiplier <= supported for r in booked
    )
    t, _ = best_threshold(sensitivity / planned.sigma, releases, delta=delta, alpha=0.05)
    cut = pair["mean_x_prime"][0] + t * planned.sigma
    tp, fp = int(np.sum(first["x"] >= cut)), int(np.sum(first["x_prime"] >= cut))
    return {
        "path": "client.spec_release.private_spec (+ SpecBooking and the ledger)",
        "pair": f"{persons} persons x 2 records, R={radius}, D={dim}; person 0: R*e1 vs -R*e1",
        "releases_per_dataset": releases,
        "noise_draws": draws,
        "sigma_needed": sigma_needed,
        "sigma_estimated": sigma_hat,
        "ratio": sigma_hat / sigma_needed,
        "fail_below_ratio": threshold,
        "passes": sigma_hat / sigma_needed >= threshold
        and abs(shift - sensitivity) <= shift_tolerance
        and ledger_ok,
        "smallest_detected_deficit": detectable,
        "mean_shift": shift,
        "mean_shift_expected": sensitivity,
        "ledger_releases_checked": len(booked),
        "ledger_books_claim": ledger_ok,
        "ledger_noise_multiplier": booked[0].noise_multiplier if booked else None,
        "empirical_epsilon": epsilon_lower_bound(tp, fp, releases, delta=delta, alpha=0.05),
        "noise_scale": noise_scale,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON (default: one line per epsilon)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="mechanism runs per data set")
    parser.add_argument("--epsilon", default="1", help="claimed epsilon(s), comma-separated")
    parser.add_argument("--delta", type=float, default=1e-6)
    parser.add_argument("--dim", type=int, default=384, help="spec dimension (the default profile's)")
    parser.add_argument("--full", action="store_true", help="draw all D coordinates of every release")
    parser.add_argument("--releases", type=int, default=10_000, help="end-to-end releases per data set")
    parser.add_argument("--noise-scale", type=float, default=1.0, help="< 1 simulates too little noise")
    args = parser.parse_args()
    reports = []
    for e in args.epsilon.split(","):
        report = audit(
            epsilon=float(e),
            delta=args.delta,
            runs=args.runs,
            dim=args.dim,
            full=args.full,
            noise_scale=args.noise_scale,
        )
        report["calibration"] = calibration_audit(
            epsilon=float(e), delta=args.delta, releases=args.releases, noise_scale=args.noise_scale
        )
        report["smallest_detected_deficit"] = report["calibration"]["smallest_detected_deficit"]
        reports.append(report)
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        for r in reports:
            print(
                f"claimed epsilon {r['claimed_epsilon']:g}: empirical lower bound "
                f"{r['empirical_epsilon']:.3f} (ratio {r['ratio']:.2f}, {r['runs_per_dataset']} runs "
                f"per data set, {r['confidence']:.0%} confidence)"
            )
            c = r["calibration"]
            print(
                f"  end to end: noise {c['ratio']:.4f} of what the claim needs over {c['noise_draws']} "
                f"draws ({'passes' if c['passes'] else 'FAILS'}; fails below {c['fail_below_ratio']:.4f}, "
                f"detects a {c['smallest_detected_deficit']:.2%} deficit)"
            )


if __name__ == "__main__":
    main()
