"""Read a finished run with pandas and make a plot of your own.

A run directory holds ``per_image.csv`` (one row per image and attack: predictions, norms, and for each attack map
the overlap of its Region of Attack with the Region of Importance) and ``metrics.json`` (every summary number and the
claims with their verdicts). This script checks that metrics.json is the run's own (as ``advspatial report`` does),
prints the claims as a table and plots, per attack, how much of the attack map's mass falls inside the RoI on the
images the attack fooled. It needs pandas, which advspatial does not: ``pip install -e '.[examples]'``.

    python examples/read_a_run.py runs/spatial                 # after `advspatial run`; plot: ./spatial-energy.png
    python examples/read_a_run.py runs/mine --out energy.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure  # a figure saved to a file, no window

from advspatial.errors import AdvspatialError, DataError
from advspatial.experiments.running import finished_findings

#: the per-image column plotted: the share of the attack's contribution map inside the RoI
COLUMN = "contribution:energy_in_roi"


def read_rows(run_dir: Path):  # -> pandas.DataFrame
    """per_image.csv of the run, or a one-line error."""
    try:
        import pandas as pd
    except ImportError:
        raise AdvspatialError("this example needs pandas: pip install -e '.[examples]' (or pip install pandas)") \
            from None
    try:
        rows = pd.read_csv(run_dir / "per_image.csv")
    except (OSError, ValueError) as exc:  # missing, unreadable, or not a CSV file (pandas' errors are ValueErrors)
        raise DataError(f"{run_dir / 'per_image.csv'} is unreadable ({str(exc).splitlines()[0][:120]}); run "
                        "again") from exc
    missing = {"attack", "correct", "success", COLUMN} - set(rows.columns)
    if missing:
        raise DataError(f"{run_dir / 'per_image.csv'} has no column {', '.join(sorted(missing))}; valid: the "
                        "per_image.csv of a maps, spatial or analyze run")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished run directory (spatial, maps or analyze)")
    parser.add_argument("--out", "--plot", dest="out", type=Path, default=None,
                        help="where to save the figure (default: RUN_NAME-energy.png in the current directory)")
    args = parser.parse_args()

    metrics = finished_findings(args.run_dir)  # the run's own findings, checked as `advspatial report` checks them
    rows = read_rows(args.run_dir)
    import pandas as pd

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
    attacks = [a for a, group in fooled.groupby("attack") if group[COLUMN].notna().any()]
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    axis.boxplot([fooled.loc[fooled["attack"] == a, COLUMN].dropna() for a in attacks], showfliers=False)
    axis.set_xticks(range(1, len(attacks) + 1), attacks)
    axis.set_ylabel("share of the attack map inside the RoI")
    axis.set_title(f"{len(fooled)} fooled images, {args.run_dir.name}")
    figure.tight_layout()
    out = args.out or Path(f"{args.run_dir.resolve().name}-energy.png")
    try:
        figure.savefig(out, dpi=120)
    except OSError as exc:
        raise AdvspatialError(f"cannot write the plot {out} ({exc.strerror or exc}); choose another --out") from exc
    print(f"plot: {out}")


if __name__ == "__main__":
    try:
        main()
    except AdvspatialError as exc:  # not a finished run, another run's findings, a missing package: one line, exit 2
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
