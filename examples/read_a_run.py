"""Read a finished run with pandas and make a plot of your own.

A run directory holds ``per_image.csv`` (one row per image and attack: predictions, norms, and for each attack map
the overlap of its Region of Attack with the Region of Importance) and ``metrics.json`` (every summary number and the
claims with their verdicts). This script prints the claims as a table and plots, per attack, how much of the attack
map's mass falls inside the RoI on the images the attack fooled.

    python examples/read_a_run.py runs/spatial                 # after `advspatial run` (or make run)
    python examples/read_a_run.py runs/mine --plot energy.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # a figure saved to a file, no window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished run directory (spatial, maps or analyze)")
    parser.add_argument("--plot", type=Path, default=None, help="where to save the figure (default: RUN_DIR/mine.png)")
    args = parser.parse_args()

    rows = pd.read_csv(args.run_dir / "per_image.csv")
    metrics = json.loads((args.run_dir / "metrics.json").read_text())

    # the claims: what is claimed, about what, the effect with its 95% CI, the verdict; the primary ones first
    claims = pd.DataFrame([{"subject": c["subject"], "effect": c["effect"]["mean"], "low": c["effect"]["low"],
                            "high": c["effect"]["high"], "verdict": c["verdict"], "primary": bool(c.get("primary"))}
                           for c in metrics.get("claims", [])])
    if len(claims):
        primary = claims[claims["primary"]]
        print(f"{len(claims)} claims, {len(primary)} primary:")
        with pd.option_context("display.width", 160, "display.max_colwidth", 50):
            print(primary.drop(columns="primary").to_string(index=False))

    # the images each attack fooled (correct before, wrong after), and where its contribution map's mass is
    fooled = rows[rows["correct"].astype(bool) & rows["success"].astype(bool)]
    column = "contribution:energy_in_roi"
    attacks = [a for a, group in fooled.groupby("attack") if group[column].notna().any()]
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    axis.boxplot([fooled.loc[fooled["attack"] == a, column].dropna() for a in attacks], showfliers=False)
    axis.set_xticks(range(1, len(attacks) + 1), attacks)
    axis.set_ylabel("share of the attack map inside the RoI")
    axis.set_title(f"{len(fooled)} fooled images, {args.run_dir.name}")
    figure.tight_layout()
    out = args.plot or args.run_dir / "mine.png"
    figure.savefig(out, dpi=120)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
