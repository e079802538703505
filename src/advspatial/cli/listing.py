"""``advspatial list``: the registered datasets, models, attacks, maps, experiments and training modes."""

from __future__ import annotations

from collections.abc import Callable

import click

LISTABLE = ("datasets", "models", "attacks", "maps", "experiments", "training-modes")


def registries() -> dict[str, Callable[[], dict[str, str]]]:
    """What ``advspatial list`` shows: name -> description per registry (imported lazily)."""

    def datasets() -> dict[str, str]:
        from ..data import list_datasets

        return {k: v.description for k, v in list_datasets().items()}

    def models() -> dict[str, str]:
        from ..models import describe_zoo, list_models
        from ..models.spec import spec_forms

        out = {k: f"[trained on first use] {v.description}" for k, v in list_models().items()}
        out.update({k: f"[pretrained zoo] {v}" for k, v in describe_zoo().items()})
        out.update(spec_forms())
        return out

    def attacks() -> dict[str, str]:
        from ..attacks import list_attacks

        out = {}
        for name, spec in list_attacks().items():
            params = ", ".join(f"{p}={v.default!r}" for p, v in spec.parameters().items() if p != "seed")
            out[name] = f"{spec.description} [{params}]"
        return out

    def maps() -> dict[str, str]:
        from ..maps import describe_attack_maps, describe_importance_methods

        out = {f"importance:{k}": v for k, v in describe_importance_methods().items()}
        out.update({f"attack-map:{k}": v for k, v in describe_attack_maps().items()})
        return out

    def experiments() -> dict[str, str]:
        from ..experiments import list_experiments

        return list_experiments()

    def modes() -> dict[str, str]:
        from ..training_modes import TRAINING_MODES

        return {k: (v.__doc__ or "").strip().splitlines()[0] for k, v in TRAINING_MODES.items()}

    return {"datasets": datasets, "models": models, "attacks": attacks, "maps": maps,
            "experiments": experiments, "training-modes": modes}


@click.command("list")
@click.argument("what", required=False, type=click.Choice(LISTABLE))
def list_cmd(what: str | None) -> None:
    """List registered datasets, models, attacks, maps and experiments."""
    shown = registries()
    for kind in [what] if what else LISTABLE:
        entries = shown[kind]()
        click.echo(f"{kind}:")
        width = max((len(k) for k in entries), default=0)
        for name, description in entries.items():
            click.echo(f"  {name:<{width}}  {description}")
