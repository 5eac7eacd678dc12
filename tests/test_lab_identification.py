"""Leave-one-data-set-out identification: folds, intervals, and the protocol on known geometry."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from lmdock.client.embedder import Embedder
from lmdock.common.profile import SpecProfile
from lmdock.lab.cli import main
from lmdock.lab.embeddings import CachingEmbedder
from lmdock.lab.ident_doc import IDENT_BEGIN
from lmdock.lab.identification import (
    QUICK_IDENT,
    Cell,
    IdentSettings,
    Learnware,
    folds_of,
    profiles_compared,
    run_profile,
    summarise,
    wilson_half_width,
)

DIM = 384


def test_wilson_interval_known_values() -> None:
    # 50 of 100: the textbook Wilson 95 % interval is [0.4038, 0.5962]
    assert wilson_half_width(50, 100) == pytest.approx(0.0962, abs=1e-4)
    # 0 of 1000 is not an interval of width 0 (as the normal approximation would say)
    assert wilson_half_width(0, 1000) == pytest.approx(0.00192, abs=1e-5)
    # enough draws for +-0.03 at the worst case p = 1/2
    assert wilson_half_width(540, 1080) < 0.03 < wilson_half_width(500, 1000)
    assert math.isnan(wilson_half_width(0, 0))


def _lw(id_: str, domain: str, *datasets: str) -> Learnware:
    return Learnware(id_, domain, datasets, tuple(f"{d}:{id_}:{i}" for d in datasets for i in range(40)))


def test_folds_hide_only_the_specialists_and_score_domains_with_two_sets() -> None:
    learnwares = [
        _lw("a1", "finance", "finance/a"),
        _lw("a2", "finance", "finance/a"),
        _lw("b", "finance", "finance/b"),
        _lw("g", "general", "general/g"),
        _lw("mix", "general", "finance/a", "finance/b", "general/g", "medical/c"),
    ]
    pools = {d: [f"{d}:user"] for d in ("finance/a", "finance/b", "general/g", "medical/c")}
    folds = {f.dataset: f for f in folds_of(learnwares, pools)}
    assert folds["finance/a"].hidden == ("a1", "a2") and folds["finance/a"].scored
    assert folds["finance/b"].hidden == ("b",) and folds["finance/b"].scored
    assert folds["general/g"].hidden == ("g",) and not folds["general/g"].scored
    # a set only a mixture saw: nothing to hide, its domain from its folder, one set: apart
    assert folds["medical/c"].hidden == () and folds["medical/c"].domain == "medical"
    assert not folds["medical/c"].scored
    assert all("mix" not in f.hidden for f in folds.values())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_the_protocol_catches_a_centroid_learnware(profile: SpecProfile) -> None:
    """Two domains of two data sets each; each set a tight cluster around its own direction,
    the sets of one domain sharing a domain direction (cosine 0.47 between them). The mixture
    of all four sets has its mean at the centroid: with the linear kernel its squared distance
    to a task whose specialist is hidden is 0.63, against 1.06 for the other set of the domain,
    so every search of the exact spec goes to the mixture."""
    rng = np.random.default_rng(7)
    basis = _unit(rng.standard_normal((6, DIM)))
    centres = {
        "finance/a": _unit(basis[0] + 0.6 * basis[2]),
        "finance/b": _unit(basis[0] - 0.6 * basis[2]),
        "medical/c": _unit(basis[1] + 0.6 * basis[3]),
        "medical/d": _unit(basis[1] - 0.6 * basis[3]),
    }
    learnwares = [_lw(d.split("/")[1], d.split("/")[0], d) for d in centres]
    learnwares.append(_lw("mix", "general", *centres))
    pools = {d: [f"{d}:user:{i}" for i in range(120)] for d in centres}

    def embed(texts):  # each text near its set's centre, the same vector every time
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            noise = np.random.default_rng(seed).standard_normal(DIM) * 0.03
            out[i] = _unit(centres[text.split(":")[0]] + noise)
        return out

    settings = IdentSettings(quick=True, sizes=(50,), epsilons=(math.inf, 1.0), draws=8)
    folds = folds_of(learnwares, pools)
    outcomes, used = run_profile(lambda specs: profile, learnwares, folds, embed, settings)
    assert set(used.values()) == {profile}
    summary = summarise(folds, outcomes, settings)
    assert {(c["n"], c["epsilon"]) for c in summary["pooled"]} == {
        (50, None),
        ("whole", None),
        (50, 1.0),
        ("whole", 1.0),
    }
    whole_exact = outcomes[("finance/a", Cell(None, math.inf))]
    assert len(whole_exact) == 1  # deterministic: one draw
    assert len(outcomes[("finance/a", Cell(50, 1.0))]) == 8
    exact = next(c for c in summary["pooled"] if c["n"] == "whole" and c["epsilon"] is None)
    assert exact["mixture"]["rate"] == 1.0 and exact["right"]["rate"] == 0.0
    assert all(o.sigma > 0 for o in outcomes[("finance/a", Cell(50, 1.0))])
    # the projected kind, fitted on each fold's visible specs, finds the domain, not the mixture
    outcomes, used = run_profile(
        profiles_compared(quick=True)["projected"], learnwares, folds, embed, settings
    )
    assert len({p.profile_id for p in used.values()}) == len(folds)  # one fit per fold's market
    exact = next(c for c in summarise(folds, outcomes, settings)["pooled"] if c["epsilon"] is None)
    assert exact["right"]["rate"] == 1.0 and exact["mixture"]["rate"] == 0.0


@pytest.mark.slow
def test_quick_identification_eval_writes_its_json_and_section(tmp_path, capsys) -> None:
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nthe classifier's report\n")
    argv = ["eval", "--identification", "--quick", "--json", "--workdir", str(tmp_path / "work")]
    assert main([*argv, "--out", str(tmp_path / "ident"), "--docs", str(docs)]) == 0
    brief = json.loads(capsys.readouterr().out)
    results = json.loads((tmp_path / "ident" / "loo.json").read_text())
    linear = results["profiles"]["linear"]
    assert set(brief["right_domain"]) == set(results["profiles"])
    # the quick market's router is a mixture of all four samples: with the linear kernel's
    # exact spec, it is the nearest mean of every fold whose specialist is hidden
    exact = next(c for c in linear["pooled"] if c["epsilon"] is None and c["n"] == 50)
    assert exact["mixture"]["rate"] == 1.0 and exact["right"]["draws"] == 2 * QUICK_IDENT.draws
    assert [f["dataset"] for f in linear["folds"] if f["scored"]] == ["banking77", "tfns"]
    assert set(results["profiles"]) == {"linear", "cosine", "projected"}
    fitted = results["profiles"]["projected"]
    folds = fitted["fold_profile_ids"]
    assert fitted["profile_id"] is None and len(set(folds.values())) == len(folds) == 4  # one fit a fold
    # every noisy search lands in one bin of the confidence table
    noisy = sum(c["right"]["draws"] for c in linear["pooled"] if c["epsilon"] is not None)
    assert sum(b["agrees"]["draws"] for b in linear["calibration"]) == noisy
    text = docs.read_text()
    assert text.startswith("# Results\n\nthe classifier's report\n") and IDENT_BEGIN in text
    assert "leave one data set out" in text
    assert list((tmp_path / "work" / "embeddings").glob("*.npz"))


def test_embeddings_kept_on_disk_are_read_back_by_content(profile, tmp_path, monkeypatch) -> None:
    texts = ["a first text", "a second one", "a first text"]
    first = CachingEmbedder(profile, folder=tmp_path).embed(texts)
    assert np.array_equal(first[0], first[2])

    def no_model(*args, **kwargs):
        raise AssertionError("embedded again")

    monkeypatch.setattr(Embedder, "embed", no_model)
    again = CachingEmbedder(profile, folder=tmp_path)
    assert np.array_equal(again.embed(texts[::-1]), first[::-1])
    with pytest.raises(AssertionError, match="embedded again"):
        again.embed(["a text it has not seen"])
