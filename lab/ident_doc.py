"""The leave-one-data-set-out identification section of docs/results.md, from its results data."""

from __future__ import annotations

from typing import Any

from lmdock.lab.results_doc import table

__all__ = ["IDENT_BEGIN", "IDENT_END", "identification_markdown"]

IDENT_BEGIN = "<!-- lmdock-lab:identification:begin -->"
IDENT_END = "<!-- lmdock-lab:identification:end -->"
COMMAND = "nice -n 10 lmdock-lab eval --identification --data ../shared/data"


def _eps(value: float | None) -> str:
    return "no noise" if value is None else f"ε = {value:g}"


def _cell(rate: dict[str, Any]) -> str:
    return f"{100 * rate['rate']:.1f} ± {100 * rate['ci95']:.1f}"


def _grid(cells: list[dict[str, Any]], what: str) -> list[list[str]]:
    sizes = list(dict.fromkeys(c["n"] for c in cells))
    rows = []
    for eps in dict.fromkeys(c["epsilon"] for c in cells):
        by_n = {c["n"]: c for c in cells if c["epsilon"] == eps}
        rows.append([_eps(eps), *(_cell(by_n[n][what]) for n in sizes)])
    return rows


def identification_markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    profiles = results["profiles"]
    first = next(iter(profiles.values()))
    sizes = list(dict.fromkeys(str(c["n"]) for c in first["pooled"]))
    header = ["", *(f"n = {n}" for n in sizes)]
    scored = [f for f in first["folds"] if f["scored"]]
    apart = [f["dataset"] for f in first["folds"] if not f["scored"]]
    command = COMMAND + (" --quick" if settings.get("quick") else "")
    lines = [
        "## Identification that generalizes: leave one data set out\n",
        f"`{command}` ({results['seconds']:.0f} s). For each of the {len(first['folds'])} data sets "
        "a learnware was trained on, its specialists are hidden and user tasks of n records are drawn "
        "from its held-out part; mixture learnwares (trained on several sets: "
        + ", ".join(f"`{lw['id']}`" for lw in results["learnwares"] if lw["mixture"])
        + ") stay in every fold. Top-1 domain right, in %, with the 95 % Wilson interval, pooled over the "
        f"{len(scored)} folds of domains with two or more data sets ({settings['draws']} draws per fold "
        f"and cell, δ = {settings['delta']:g}; the whole set is each fold's user part, "
        + ", ".join(f"{f['pool']}" for f in scored)
        + " records). "
        + (f"Reported apart: {', '.join(apart)} (its domain has no other data set). " if apart else "")
        + "How often the top-1 is a mixture learnware is the second table of each profile.\n",
    ]
    for name, p in profiles.items():
        which = f"profile `{p['profile_id']}`" if p["profile_id"] else "fitted in each fold"
        dims = p.get("feature_dims", [])  # results from before fitted kinds have none
        dim = "" if not dims else f", D = {dims[0]}" if len(dims) == 1 else f", D = {dims[0]}–{dims[-1]}"
        lines.append(f"\n### {name} ({which}, kernel {p['kernel']}{dim})\n")
        lines.append(table(header, _grid(p["pooled"], "right")))
        lines.append("\nTop-1 is a mixture learnware, %:\n")
        lines.append(table(header, _grid(p["pooled"], "mixture")))
        if p["apart"] and p["apart"][0]["right"]["draws"]:
            lines.append("\nApart (" + ", ".join(apart) + "), top-1 domain right / mixture, %:\n")
            lines.append(
                table(
                    ["", *(f"n = {n}" for n in sizes)],
                    [
                        [row[0], *(f"{a} / {b}" for a, b in zip(row[1:], mix[1:], strict=True))]
                        for row, mix in zip(
                            _grid(p["apart"], "right"), _grid(p["apart"], "mixture"), strict=True
                        )
                    ],
                )
            )
        falls = p["falls"]
        lines.append(
            "\n"
            + (
                "Falls as n grows (beyond both intervals): "
                + "; ".join(f"{_eps(f['epsilon'])}, n = {f['from_n']} → {f['to_n']}" for f in falls)
                if falls
                else "No cell falls as n grows beyond both intervals."
            )
            + "\n"
        )
        if p.get("calibration"):
            lines.append(
                "\nConfidence of the top-1 (the Search response's, over the noisy searches above): how "
                "often the top-1 is the exact spec's top-1 for the same records, and of the right domain:\n"
            )
            lines.append(
                table(
                    [
                        "confidence",
                        "searches",
                        "mean confidence",
                        "top-1 = exact spec's, %",
                        "domain right, %",
                    ],
                    [
                        [
                            f"[{b['bin'][0]:g}, {b['bin'][1]:g}{']' if b['bin'][1] == 1 else ')'}",
                            str(b["agrees"]["draws"]),
                            "–" if b["agrees"]["draws"] == 0 else f"{100 * b['confidence']:.1f}",
                            "–" if b["agrees"]["draws"] == 0 else _cell(b["agrees"]),
                            "–" if b["agrees"]["draws"] == 0 else _cell(b["right"]),
                        ]
                        for b in p["calibration"]
                    ],
                )
            )
        fold_header = [
            "fold (data set)",
            "hidden",
            *(f"{_eps(c['epsilon'])}, n = {c['n']}" for c in p["folds"][0]["cells"]),
        ]
        lines.append("\nPer fold, top-1 domain right / mixture, %:\n")
        lines.append(
            table(
                fold_header,
                [
                    [
                        f["dataset"] + ("" if f["scored"] else " (apart)"),
                        str(len(f["hidden"])),
                        *(f"{100 * c['right']:.0f} / {100 * c['mixture']:.0f}" for c in f["cells"]),
                    ]
                    for f in p["folds"]
                ],
            )
        )
    return "".join(lines)
