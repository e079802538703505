"""``advspatial plan RUN_DIR``: what more data would decide, from a finished run's files."""

from __future__ import annotations

from pathlib import Path

import click

from ..statistics.outcomes import DEFAULT_POWER


@click.command("plan")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--power", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_POWER,
              show_default=True, help="power the projections are made for")
def plan_command(run_dir: str, power: float) -> None:
    """Print every undecided gate comparison and claim of a finished run with the images that would decide it at
    POWER (a projection at the observed effect and paired standard deviation; the report's "What more data would
    decide" section). Nothing is computed again.

    Example: advspatial plan runs/spatial-fashion-mnist --power 0.9
    """
    from ..errors import ConfigError, DataError, first_line, is_finite_number
    from ..experiments.running import READ_ERRORS, finished_run
    from ..experiments.smoke import SMOKE_LINE
    from ..report.planning import findings_parts, plan_rows

    if not is_finite_number(power):  # click's range lets NaN through: every comparison with it is false
        raise ConfigError(f"--power={power} is not a number; valid: a power between 0 and 1, e.g. --power 0.8")
    _, config, _, findings = finished_run(Path(run_dir))
    smoke = bool(config.smoke_test)
    try:
        gates, claims = findings_parts(findings)
        rows = plan_rows(gates, claims, power=power)
    except READ_ERRORS as exc:
        raise DataError(f"{Path(run_dir) / 'metrics.json'} does not hold findings a plan can read "
                        f"({first_line(exc)}); run the experiment again") from exc
    if not rows:
        said = ("this run makes no gate comparison and no claim: nothing for more images to decide"
                if not gates and not claims else "every gate comparison and claim of this run is decided")
        click.echo(said + (f" ({SMOKE_LINE})" if smoke else ""))
        return
    click.echo(f"{len(rows)} undecided; images that would decide each at {power:.0%} power (a projection at the "
               "observed effect):")
    width = max(len(r.subject) for r in rows)
    for r in rows:
        click.echo(f"  {r.subject:<{width}}  {r.effect:<28} n={r.n:<6} leans {r.leans:<11} -> {r.need()}"
                   f"{' (smoke)' if smoke else ''}")
    if smoke:
        click.echo(f"{SMOKE_LINE}: the run is a smoke test (--quick), so each projection above is marked (smoke)")
