"""Utility under privacy: does a user's DP spec find the right learnware (top-1)?

Real data (the ten shared data sets, MiniLM embeddings cached by `corpus`), the released
mechanism itself (`calibrate` + `add_noise`: analytic Gaussian, discrete Gaussian on the
grid, CSPRNG), replace-one, delta = 1e-6. Each data set is split once (seeded): a publisher
part whose exact kernel mean is the learnware's spec, and a disjoint user part from which the
user tasks of size n are drawn (without replacement, `--repeats` times per task and n, fresh
noise each time).

Two markets:
* sets:  10 learnwares, one per data set; every data set is a task.
* labels: the 16 labels with >= 170 records inside the labelled sets (MedQuAD question types,
  MATH subjects, financial-tweet sentiment) are learnwares and tasks; the other 7 data sets
  are distractor learnwares.
A task takes part at size n only if its user part holds n records; `tasks` says how many did.

Profiles compared (`--configs`): the linear kernel with and without the public centre and a
clip radius, and Gaussian random features. The centre is the mean of the per-data-set means of
the publisher parts (public learnware data, never a user record); the clip radius a quantile of
||e - c|| over the same public records.

    python benchmarks/identification.py --json [--repeats 20] [--sizes 50,100,300,1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import EmbeddedSet, load_all
from lmdock.common.features import build_feature_map
from lmdock.common.mechanism import add_noise, calibrate
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import size_bucket

DELTA = 1e-6
PUBLISHER_SHARE = 0.5
MIN_LABEL_RECORDS = 170


@dataclass(frozen=True)
class Part:
    """Rows of the global embedding matrix that make up a learnware's data or a user pool."""

    name: str
    publisher: np.ndarray  # row indices
    user: np.ndarray


@dataclass(frozen=True)
class Market:
    name: str
    learnwares: list[Part]
    tasks: list[int]  # indices into learnwares


def split(indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(indices)
    cut = round(PUBLISHER_SHARE * len(shuffled))
    return shuffled[:cut], shuffled[cut:]


def build_markets(sets: list[EmbeddedSet], seed: int) -> tuple[np.ndarray, list[Market]]:
    """All embeddings stacked, and the two markets over them (splits fixed by `seed`)."""
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0] + [len(s.texts) for s in sets])
    embeddings = np.concatenate([s.embeddings for s in sets]).astype(np.float64)
    whole, fine, distractors = [], [], []
    for s, start in zip(sets, offsets, strict=False):
        rows = np.arange(start, start + len(s.texts))
        labels = np.array([label or "" for label in s.labels])
        # one split per record, shared by both markets: a record is publisher or user data
        pub, user = split(rows, rng)
        is_pub = np.zeros(len(embeddings), dtype=bool)
        is_pub[pub] = True
        whole.append(Part(s.name, pub, user))
        kept = [lab for lab in sorted(set(labels)) if lab and (labels == lab).sum() >= MIN_LABEL_RECORDS]
        if len(kept) < 2:
            distractors.append(whole[-1])
            continue
        for lab in kept:
            members = rows[labels == lab]
            fine.append(Part(f"{s.name}:{lab}", members[is_pub[members]], members[~is_pub[members]]))
    markets = [
        Market("sets", whole, list(range(len(whole)))),
        Market("labels", fine + distractors, list(range(len(fine)))),
    ]
    return embeddings, markets


def public_centre(embeddings: np.ndarray, market: Market) -> np.ndarray:
    """Mean of the per-data-set means of the publisher parts (public records only)."""
    centre: np.ndarray = np.mean([embeddings[p.publisher].mean(axis=0) for p in market.learnwares], axis=0)
    return centre


def public_norms(embeddings: np.ndarray, market: Market, centre: np.ndarray) -> np.ndarray:
    rows = np.concatenate([p.publisher for p in market.learnwares])
    norms: np.ndarray = np.linalg.norm(embeddings[rows] - centre, axis=1)
    return norms


def profiles(embeddings: np.ndarray, sets_market: Market, names: list[str]) -> dict[str, SpecProfile]:
    centre = public_centre(embeddings, sets_market)
    norms = public_norms(embeddings, sets_market, centre)
    fake = "0" * 64  # the weight hash plays no part here; the embeddings are cached
    table: dict[str, SpecProfile] = {
        "linear": make_profile(embedder_hash=fake, centre=(), clip_radius=1.0),
        "linear+centre": make_profile(
            embedder_hash=fake, centre=centre, clip_radius=float(min(2.0, norms.max()))
        ),
    }
    for q in (50, 75, 90, 95, 99):
        table[f"linear+centre+clip{q}"] = make_profile(
            embedder_hash=fake, centre=centre, clip_radius=float(np.percentile(norms, q))
        )
    for gamma in (0.5, 1.0, 2.0):
        table[f"rbf{gamma:g}"] = make_profile(
            embedder_hash=fake, kernel="rbf", feature_dim=1024, bandwidth=gamma, seed=7
        )
    unknown = set(names) - set(table)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {sorted(table)}")
    return {name: table[name] for name in names}


def evaluate(
    features: np.ndarray,
    market: Market,
    profile: SpecProfile,
    *,
    sizes: list[int],
    epsilons: list[float],
    repeats: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Top-1 accuracy per n and epsilon ("inf" = the exact, non-private spec)."""
    specs = np.stack([features[p.publisher].mean(axis=0) for p in market.learnwares])
    spec_sq = np.sum(specs**2, axis=1)
    out: dict[str, Any] = {}
    for n in sizes:
        eligible = [t for t in market.tasks if len(market.learnwares[t].user) >= n]
        hits = {str(e): 0 for e in [*epsilons, math.inf]}
        for t in eligible:
            pool = market.learnwares[t].user
            means = np.stack(
                [features[rng.choice(pool, size=n, replace=False)].mean(axis=0) for _ in range(repeats)]
            )
            for eps in [*epsilons, math.inf]:
                if math.isinf(eps):
                    released = means
                else:
                    cal = calibrate(
                        epsilon=eps,
                        delta=DELTA,
                        clip_radius=profile.clip_radius,
                        bucket=size_bucket(n),
                        dim=profile.feature_dim,
                    )
                    released = add_noise(means, cal)
                # argmin_l ||s - mu_l||^2 (the noise energy is the same for every l: exact specs)
                scores = spec_sq[None, :] - 2.0 * released @ specs.T
                hits[str(eps)] += int(np.sum(np.argmin(scores, axis=1) == t))
        total = len(eligible) * repeats
        out[str(n)] = {
            "tasks": len(eligible),
            "accuracy": {e: (h / total if total else None) for e, h in hits.items()},
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    sets = load_all(make_profile())
    embeddings, markets = build_markets(sets, args.seed)
    chosen = profiles(embeddings, markets[0], args.configs.split(","))
    sizes = [int(x) for x in args.sizes.split(",")]
    epsilons = [float(x) for x in args.epsilons.split(",")]
    rng = np.random.default_rng(args.seed + 1)
    results: dict[str, Any] = {}
    for name, profile in chosen.items():
        feature_map = build_feature_map(profile)
        features = feature_map(embeddings)
        unclipped = dataclasses.replace(feature_map, clip_radius=math.inf)(embeddings)
        results[name] = {
            "clip_radius": profile.clip_radius,
            "kernel": profile.kernel,
            "centred": bool(profile.centre),
            "clipped_share": float(
                np.mean(np.linalg.norm(unclipped, axis=1) > profile.clip_radius * (1 + 1e-6))
            ),
            "markets": {
                m.name: evaluate(
                    features, m, profile, sizes=sizes, epsilons=epsilons, repeats=args.repeats, rng=rng
                )
                for m in markets
            },
        }
        print(f"{name}: done ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
    centre = public_centre(embeddings, markets[0])
    norms = public_norms(embeddings, markets[0], centre)
    return {
        "delta": DELTA,
        "repeats": args.repeats,
        "seed": args.seed,
        "learnwares": {m.name: len(m.learnwares) for m in markets},
        "public_centre_norm": float(np.linalg.norm(centre)),
        "public_norm_quantiles": {str(q): float(np.percentile(norms, q)) for q in (50, 75, 90, 95, 99, 100)},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    """The table docs/privacy.md shows: accuracy per market, config, n and epsilon."""
    lines = []
    for market in ("sets", "labels"):
        first = next(iter(report["results"].values()))["markets"][market]
        eps_keys = list(next(iter(first.values()))["accuracy"])
        head = " | ".join(("no DP" if e == "inf" else f"ε = {float(e):g}") for e in eps_keys)
        lines += [
            f"\n**{market}**\n",
            f"| profile | n | tasks | {head} |",
            "|---" * (3 + len(eps_keys)) + "|",
        ]
        for name, res in report["results"].items():
            for n, cell in res["markets"][market].items():
                if not cell["tasks"]:
                    continue
                accs = " | ".join(f"{cell['accuracy'][e]:.3f}" for e in eps_keys)
                lines.append(f"| {name} | {n} | {cell['tasks']} | {accs} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON (default: a table)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sizes", default="50,100,300,1000")
    parser.add_argument("--epsilons", default="0.5,1,2")
    parser.add_argument("--configs", default="linear,linear+centre+clip50,rbf0.5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    main()
