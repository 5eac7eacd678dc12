"""Empirical privacy audit of the released spec mechanism: a statistical lower bound on epsilon.

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

    python benchmarks/privacy_audit.py --json [--runs 1000000] [--epsilon 1] [--delta 1e-6] [--full]

Prints claimed_epsilon, empirical_epsilon and their ratio. The bound can never exceed the
claim unless the mechanism is broken (`noise_scale` < 1 simulates a broken one in the tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from typing import Any

import numpy as np
from lmdock.common.mechanism import Calibration, add_noise, calibrate
from lmdock.common.spec import size_bucket
from scipy.stats import beta, norm

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON (default: one line per epsilon)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="mechanism runs per data set")
    parser.add_argument("--epsilon", default="1", help="claimed epsilon(s), comma-separated")
    parser.add_argument("--delta", type=float, default=1e-6)
    parser.add_argument("--dim", type=int, default=384, help="spec dimension (the default profile's)")
    parser.add_argument("--full", action="store_true", help="draw all D coordinates of every release")
    args = parser.parse_args()
    reports = [
        audit(epsilon=float(e), delta=args.delta, runs=args.runs, dim=args.dim, full=args.full)
        for e in args.epsilon.split(",")
    ]
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        for r in reports:
            print(
                f"claimed epsilon {r['claimed_epsilon']:g}: empirical lower bound "
                f"{r['empirical_epsilon']:.3f} (ratio {r['ratio']:.2f}, {r['runs_per_dataset']} runs "
                f"per data set, {r['confidence']:.0%} confidence)"
            )


if __name__ == "__main__":
    main()
