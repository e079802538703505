"""The commands that attack: ``advspatial attack`` (an attack over a dataset, saved as a .pt file) and
``advspatial maps`` (the RoI/RoA measurement of one attack)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import AdvspatialError, bounded_repr
from .model_commands import load_model_and_data, model_options


def mask_needs_cam(mask: str, data: Any) -> bool:
    """True when ``--mask`` is cut from Grad-CAM: roi masks, and background/foreground on colour data without masks."""
    if mask in ("roi", "roi-complement"):
        return True
    return mask in ("background", "foreground") and data.masks is None and data.image_shape[0] > 1


def parse_params(pairs: tuple[str, ...], attack_name: str | None = None) -> dict[str, Any]:
    """``key=value`` strings to a dict; values parsed as YAML scalars (numbers, booleans, strings) and, given
    the attack, checked against the type of the parameter's default (``steps=1.5`` or ``eps=big`` is an error)."""
    import yaml

    from ..files import YAMLAliasError, load_yaml_text

    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise AdvspatialError(f"--param {bounded_repr(pair)} must look like name=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key in ("seed", "model"):  # make_attack's own arguments: a --param would give them twice
            raise AdvspatialError(f"--param {key} is not an attack parameter here; use --{key}")
        try:
            params[key] = load_yaml_text(value)
        except YAMLAliasError as exc:
            raise AdvspatialError(f"--param {key[:40]}=... uses a YAML alias; valid: a number, true/false "
                                  "or a string, written out") from exc
        except yaml.YAMLError:
            params[key] = value
        except RecursionError as exc:  # PyYAML composes nested lists recursively: '[[[[...' thousands deep
            raise AdvspatialError(f"--param {key}=... nests lists or mappings too deeply; valid: a number, "
                                  "true/false or a string") from exc
    if attack_name is not None:
        from ..attacks import list_attacks

        spec = list_attacks().get(attack_name)
        if spec is not None:
            declared = spec.parameters()
            params = {k: typed_param(k, v, declared[k].default) if k in declared else v for k, v in params.items()}
    return params


def typed_param(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the parameter's ``default`` (bool, int, float, str), or a one-line error."""
    kind = type(default)
    if default is None or kind not in (bool, int, float, str):
        return value
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, (str, int, float)) and not isinstance(value, bool)}[kind]
    if not ok:
        valid = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
        raise AdvspatialError(f"--param {name}={bounded_repr(value)} is not valid; valid: {valid} (default "
                              f"{default!r})")
    try:
        return kind(value)
    except OverflowError as exc:  # an integer too large for a float
        raise AdvspatialError(f"--param {name}={str(value)[:30]}... is too large; valid: a number below 1e308") from exc


@click.command()
@model_options
@click.option("--attack", "attack_name", default="pgd", show_default=True,
              help="Attack name (advspatial list attacks).")
@click.option("--eps", default=None, type=float, help="Perturbation budget (attacks that have one).")
@click.option("--steps", default=None, type=int, help="Iterations (attacks that have them).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Any other attack parameter; repeatable.")
@click.option("--n", default=1000, show_default=True, type=int, help="Attack N test images (see --subset).")
@click.option("--batch-size", default=200, show_default=True, type=int)
@click.option("--mask", default=None, help="background|foreground|roi|roi-complement|FILE: where the attack may act.")
@click.option("--mask-fraction", default=0.2, show_default=True, type=float,
              help="Top fraction of Grad-CAM for roi masks.")
@click.option("--target", "target_class", default=None, type=int, help="Targeted attack towards this class.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Save x_adv, predictions and norms (.pt).")
def attack(attack_name: str, eps: float | None, steps: int | None, params: tuple[str, ...], n: int, batch_size: int,
           mask: str | None, mask_fraction: float, target_class: int | None, seed: int, out: str | None,
           **options: Any) -> None:
    """Attack N test images (see --subset) and print success rate, mean norms and time."""
    import time

    import torch

    from ..attacks import make_attack
    from ..errors import check_range, check_seed
    from ..masks import attack_mask, check_mask_spec
    from .pipeline import attack_dataset

    check_range("n", n, 1)
    check_range("batch_size", batch_size, 1)
    check_seed("seed", seed)
    check_range("mask_fraction", mask_fraction, 0, 1, low_inclusive=False)
    check_mask_spec(mask)
    if out:
        check_output_file(out)
    kwargs = parse_params(params, attack_name)
    kwargs.update({k: v for k, v in (("eps", eps), ("steps", steps)) if v is not None})
    make_attack(attack_name, torch.nn.Identity(), seed=seed, **kwargs)  # validate before any training
    model, data = load_model_and_data(options, n, seed)
    dataset = options["dataset"]
    if mask and isinstance(model, torch.jit.ScriptModule) and mask_needs_cam(mask, data):
        raise AdvspatialError(f"--mask {mask} on these images is cut from Grad-CAM, which reads a layer through "
                              "forward hooks that a TorchScript model cannot give; use --model FILE.py:factory "
                              "--weights STATE_DICT, or --mask FILE")
    atk = make_attack(attack_name, model, seed=seed, **kwargs)
    if target_class is not None:
        check_range("target", target_class, 0, data.num_classes - 1)
    mask_fn = (lambda sl: attack_mask(mask, data, sl, model, mask_fraction, seed=seed)) if mask else None
    target_fn = (lambda sl: torch.full((sl.stop - sl.start,), target_class)) if target_class is not None else None
    start = time.perf_counter()
    result = attack_dataset(atk, data, batch_size, mask_fn, target_fn, progress=options["progress"])
    seconds = time.perf_counter() - start
    correct = result.clean_pred == result.labels
    rate_correct = float(result.success[correct].float().mean()) if correct.any() else float("nan")
    click.echo(f"{atk!r} on {len(data)} {dataset} images" + (f", mask {mask}" if mask else ""))
    click.echo(f"clean accuracy {float(correct.float().mean()):.4f}; success rate {result.success_rate:.4f} "
               f"(on correctly classified: {rate_correct:.4f})")
    click.echo(f"mean norms: L0 {result.l0.float().mean():.1f} px, L2 {result.l2.mean():.4f}, "
               f"Linf {result.linf.mean():.4f}; "
               f"queries/image {result.queries.float().mean():.1f}; time {seconds:.1f} s")
    if out:
        from pathlib import Path

        from ..files import atomic_torch_save

        atomic_torch_save({f: getattr(result, f) for f in ("x_adv", "success", "clean_pred", "adv_pred", "labels",
                                                           "target", "l0", "l2", "linf", "queries")}, Path(out))
        click.echo(f"saved {out}")


def check_output_file(out: str) -> None:
    """A file can be written at ``out`` (its folder exists and is writable): checked before any work."""
    from pathlib import Path

    from ..files import check_writable_dir

    path = Path(out)
    if path.is_dir():
        raise AdvspatialError(f"--out {out} is a directory; valid: a file path (.pt)")
    if not path.parent.is_dir():
        raise AdvspatialError(f"--out {out}: folder {path.parent} does not exist")
    check_writable_dir(path.parent, "--out folder")


@click.command()
@model_options
@click.option("--attack", "attack_name", default="pgd-l2", show_default=True,
              help="Attack name (advspatial list attacks).")
@click.option("--importance", default="auto", show_default=True,
              help="Importance map (RoI side); auto: Grad-CAM for a GAP head, HiResCAM for a flatten/FC head.")
@click.option("--attack-map", default="contribution", show_default=True, help="Attack map (RoA side).")
@click.option("--fraction", default=0.2, show_default=True, type=float,
              help="Top fraction of each map forming RoI/RoA.")
@click.option("--n", default=200, show_default=True, type=int)
@click.option("--batch-size", default=None, type=int, help="Images per batch (default: the preset's).")
@click.option("--permutations", default=10000, show_default=True, type=int, help="Derangements per pair-based null.")
@click.option("--gate-n", default=200, show_default=True, type=int, help="Images entering the faithfulness gate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="runs/maps", show_default=True, type=click.Path(file_okay=False))
def maps(attack_name: str, importance: str, attack_map: str, fraction: float, n: int, batch_size: int,
         permutations: int, gate_n: int, seed: int, out: str, **options: Any) -> None:
    """RoI vs RoA for one attack: the faithfulness gate, verdicts against the nulls, figures, CSV and a report
    (the ``maps`` experiment for one attack; ``advspatial run maps`` takes every setting)."""
    from ..experiments import get_experiment, resolve_config
    from ..experiments.running import run_experiment

    o = options
    given = {"dataset": o["dataset"], "model": o["model_name"], "weights": o["weights"] or "", "arch": o["arch"] or "",
             "model_seed": o["model_seed"], "device": o["device"], "subset": o["subset"],
             "image_size": o["image_size"], "fit": o["fit"], "class_map": o["class_map"],
             "crop_fraction": o["crop_fraction"], "n": n, "seed": seed,
             "out": out, "attacks": [attack_name], "importance": importance,
             "attack_map": attack_map, "fraction": fraction, "permutations": permutations, "gate_n": gate_n,
             "panel": [], "progress": o["progress"]}
    if batch_size is not None:
        given["batch_size"] = batch_size
    config = resolve_config(get_experiment("maps"), None, given, quick=False)
    # the same settings complete (or repeat) the run in --out; other settings, or another run there, are refused
    result, _ = run_experiment("maps", config, reuse_same=True)
    click.echo(result.summary)
    click.echo(f"wrote {out}/report.html, per_image.csv, metrics.json")
