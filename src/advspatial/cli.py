"""The ``advspatial`` command.

User errors (``advspatial.errors.AdvspatialError``) print one line and exit 2;
click's own usage errors also exit 2.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from . import __version__
from .errors import AdvspatialError

LISTABLE = ("datasets", "models", "attacks", "maps", "experiments", "training-modes")


def _registries() -> dict[str, Callable[[], dict[str, str]]]:
    """What ``advspatial list`` shows: name -> description per registry (imported lazily)."""

    def datasets() -> dict[str, str]:
        from .data import list_datasets

        return {k: v.description for k, v in list_datasets().items()}

    def models() -> dict[str, str]:
        from .models import describe_zoo, list_models

        out = {k: f"[trained on first use] {v.description}" for k, v in list_models().items()}
        out.update({k: f"[pretrained zoo] {v}" for k, v in describe_zoo().items()})
        out["FILE.py:factory"] = "your model: a callable returning an nn.Module on [0,1] images (--weights STATE_DICT)"
        out["torchvision:NAME"] = "a torchvision model (lazy import; ImageNet normalization added)"
        out["timm:NAME"] = "a timm model (lazy import; its own normalization added)"
        return out

    def attacks() -> dict[str, str]:
        from .attacks import list_attacks

        out = {}
        for name, spec in list_attacks().items():
            params = ", ".join(f"{p}={v.default!r}" for p, v in spec.parameters().items() if p != "seed")
            out[name] = f"{spec.description} [{params}]"
        return out

    def maps() -> dict[str, str]:
        from .maps import describe_attack_maps, describe_importance_methods

        out = {f"importance:{k}": v for k, v in describe_importance_methods().items()}
        out.update({f"attack-map:{k}": v for k, v in describe_attack_maps().items()})
        return out

    def experiments() -> dict[str, str]:
        from .experiments import list_experiments

        return list_experiments()

    def modes() -> dict[str, str]:
        from .training import TRAINING_MODES

        return {k: (v.__doc__ or "").strip().splitlines()[0] for k, v in TRAINING_MODES.items()}

    return {"datasets": datasets, "models": models, "attacks": attacks, "maps": maps,
            "experiments": experiments, "training-modes": modes}


#: the commands that share their work among the processes of a torchrun launch
DISTRIBUTED_COMMANDS = ("run", "analyze", "list")


class TopLevel(click.Group):
    """The commands, plus ``analyze``: the ``analyze`` experiment's command (``advspatial run analyze``),
    built on first use so that ``advspatial --help`` imports no experiment."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "analyze"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from .distributed import world

        if world().is_distributed and name not in DISTRIBUTED_COMMANDS:
            raise AdvspatialError(f"`advspatial {name}` runs in one process; under torchrun use one of: "
                                  f"{', '.join(DISTRIBUTED_COMMANDS)} (or start it without torchrun)")
        if name == "analyze":
            command = experiment_command("analyze")
            command.help = ("Analyse adversarial examples made elsewhere (torchattacks, ART, AutoAttack, your own "
                            "code): --model M --clean FILE --adv FILE [--labels FILE] [--source NAME]; the RoI/RoA "
                            "measurement of the spatial experiment (gate, maps, nulls, verdicts), no attack run.")
            command.short_help = "RoI vs RoA of adversarial examples made elsewhere."
            return command
        return super().get_command(ctx, name)


@click.group(cls=TopLevel, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="advspatial")
def cli() -> None:
    """advspatial: where adversarial perturbations act in an image, compared with where the
    classifier looks - and what follows from that for defence."""


@cli.command("list")
@click.argument("what", required=False, type=click.Choice(LISTABLE))
def list_cmd(what: str | None) -> None:
    """List registered datasets, models, attacks, maps and experiments."""
    registries = _registries()
    for kind in [what] if what else LISTABLE:
        entries = registries[kind]()
        click.echo(f"{kind}:")
        width = max((len(k) for k in entries), default=0)
        for name, description in entries.items():
            click.echo(f"  {name:<{width}}  {description}")


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that needs a dataset and a model."""
    options = [
        click.option("--dataset", default="fashion-mnist", show_default=True,
                     help="Dataset name (advspatial list datasets), e.g. imagefolder:PATH."),
        click.option("--model", "model_name", default="smallcnn", show_default=True,
                     help="Model spec: registered or zoo name (advspatial list models), FILE.py:factory, "
                          "package.module:factory, torchvision:NAME, timm:NAME, or a TorchScript/state-dict file."),
        click.option("--weights", default=None, help="State-dict file loaded into a registered/zoo model or a factory."),
        click.option("--arch", default=None, help="Architecture for a state-dict --model file."),
        click.option("--model-seed", default=0, show_default=True, help="Training seed of a cached model."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--subset", default="stratified", show_default=True,
                     type=click.Choice(["stratified", "random", "first"]), help="Which --n test images (seeded)."),
        click.option("--image-size", default=0, show_default=True, type=int,
                     help="Folder datasets: image side in pixels (0: a zoo model's input size, else 32)."),
        click.option("--fit", default="crop", show_default=True, type=click.Choice(["crop", "stretch"]),
                     help="Folder datasets: keep the aspect ratio (centre crop) or stretch."),
        click.option("--class-map", default="", help="Folder datasets: TSV of model output index, folder name[, name]."),
        click.option("--crop-fraction", default=0.0, show_default=True, type=float,
                     help="Folder datasets, --fit crop: centre crop side / shorter side (0: a zoo model's, else 1)."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Progress bars on stderr (plain lines when stderr is not a terminal; TQDM_DISABLE=1 "
                          "also turns them off)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_model_and_data(options: dict[str, Any], n: int, seed: int, split: str = "test"):  # type: ignore[no-untyped-def]
    """(model, images) of a command given the :func:`model_options`: validated, the model fitted to the data."""
    from .data import load_dataset
    from .data.subset import select
    from .experiments.context import check_model_fits_data
    from .experiments.settings import dataset_options
    from .models import parse_model_spec
    from .runtime import pick_device
    from .training import resolve_model

    from .errors import check_range, check_seed

    o = options
    check_range("n", n, 1)
    check_seed("seed", seed)
    check_seed("model_seed", o["model_seed"])
    pick_device(o["device"])
    parse_model_spec(o["model_name"], o["weights"], o["arch"])  # validate before any training
    loader_options = dataset_options(o["dataset"], o["model_name"], o["image_size"], o["fit"], o["class_map"],
                                     o["crop_fraction"])
    data = select(load_dataset(o["dataset"], split, **loader_options), n, o["subset"], seed)
    device = pick_device(o["device"])
    model = resolve_model(o["dataset"], o["model_name"], arch=o["arch"], seed=o["model_seed"], device=device,
                          weights=o["weights"], num_classes=data.num_classes, image_shape=data.image_shape,
                          progress=o.get("progress", True))
    check_model_fits_data(model, data, device)
    return model, data


@cli.command()
@click.option("--dataset", default="fashion-mnist", show_default=True)
@click.option("--model", "arch", default="smallcnn", show_default=True, help="Registered architecture.")
@click.option("--mode", default="natural", show_default=True, help="Training mode (advspatial list training-modes).")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--train-limit", default=None, type=int, help="Train on the first N training images only.")
@click.option("--eps", default=0.1, show_default=True, type=float, help="Adversarial modes: attack budget.")
@click.option("--norm", default="linf", show_default=True, type=click.Choice(["linf", "l2"]))
@click.option("--attack-steps", default=7, show_default=True, type=int)
@click.option("--mix", default=0.5, show_default=True, type=float, help="Adversarial modes: weight of the adversarial loss.")
@click.option("--force", is_flag=True, help="Retrain even when a cached checkpoint exists.")
@click.option("--device", default="auto", show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Progress bars on stderr (plain lines when stderr is not a terminal; TQDM_DISABLE=1 "
                          "also turns them off).")
def train(dataset: str, arch: str, mode: str, epochs: int, batch_size: int, lr: float, seed: int,
          train_limit: int | None, eps: float, norm: str, attack_steps: int, mix: float, force: bool, device: str,
          progress: bool) -> None:
    """Train a model (or load it from the cache) and print its test accuracy."""
    from .runtime import pick_device
    from .training import TrainConfig, get_or_train

    config = TrainConfig(dataset, arch, mode, epochs, batch_size, lr, seed=seed, train_limit=train_limit,
                         eps=eps, norm=norm, attack_steps=attack_steps, mix=mix).validate()
    trained = get_or_train(config, pick_device(device), progress=progress, force=force)
    meta = trained.metadata
    click.echo(f"{arch} on {dataset} ({mode}): test accuracy {meta['test_accuracy']:.4f}, "
               f"trained in {meta['train_seconds']:.1f} s; checkpoint {trained.path}")


@cli.command()
@model_options
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--n", default=None, type=int, help="Evaluate on N images only (see --subset).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the --subset draw.")
@click.option("--batch-size", default=100, show_default=True, type=int)
def evaluate(split: str, n: int | None, seed: int, batch_size: int, **options: Any) -> None:
    """Clean accuracy of a model on a dataset, with its 95% Wilson interval."""
    from .regions.inference import wilson_interval
    from .training import evaluate_accuracy

    model, data = load_model_and_data(options, n or 10**9, seed, split)
    correct = round(evaluate_accuracy(model, data, batch_size) * len(data))
    share = wilson_interval(correct, len(data))
    click.echo(f"{options['model_name']} on {options['dataset']} {split} ({len(data)} images): accuracy "
               f"{share.value:.4f} [95% CI {share.low:.4f}, {share.high:.4f}]")


def mask_needs_cam(mask: str, data: Any) -> bool:
    """True when ``--mask`` is cut from Grad-CAM: roi masks, and background/foreground on colour data without masks."""
    if mask in ("roi", "roi-complement"):
        return True
    return mask in ("background", "foreground") and data.masks is None and data.image_shape[0] > 1


def parse_params(pairs: tuple[str, ...], attack_name: str | None = None) -> dict[str, Any]:
    """``key=value`` strings to a dict; values parsed as YAML scalars (numbers, booleans, strings) and, given
    the attack, checked against the type of the parameter's default (``steps=1.5`` or ``eps=big`` is an error)."""
    import yaml

    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise AdvspatialError(f"--param {pair!r} must look like name=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key == "seed":
            raise AdvspatialError("--param seed is not an attack parameter here; use --seed")
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            params[key] = value
    if attack_name is not None:
        from .attacks import list_attacks

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
        raise AdvspatialError(f"--param {name}={value!r} is not valid; valid: {valid} (default {default!r})")
    return kind(value)


@cli.command()
@model_options
@click.option("--attack", "attack_name", default="pgd", show_default=True, help="Attack name (advspatial list attacks).")
@click.option("--eps", default=None, type=float, help="Perturbation budget (attacks that have one).")
@click.option("--steps", default=None, type=int, help="Iterations (attacks that have them).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Any other attack parameter; repeatable.")
@click.option("--n", default=1000, show_default=True, type=int, help="Attack N test images (see --subset).")
@click.option("--batch-size", default=200, show_default=True, type=int)
@click.option("--mask", default=None, help="background|foreground|roi|roi-complement|FILE: where the attack may act.")
@click.option("--mask-fraction", default=0.2, show_default=True, type=float, help="Top fraction of Grad-CAM for roi masks.")
@click.option("--target", "target_class", default=None, type=int, help="Targeted attack towards this class.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Save x_adv, predictions and norms (.pt).")
def attack(attack_name: str, eps: float | None, steps: int | None, params: tuple[str, ...], n: int, batch_size: int,
           mask: str | None, mask_fraction: float, target_class: int | None, seed: int, out: str | None,
           **options: Any) -> None:
    """Attack N test images (see --subset) and print success rate, mean norms and time."""
    import time

    import torch

    from .attacks import make_attack
    from .errors import check_range, check_seed
    from .masks import attack_mask, check_mask_spec
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
    click.echo(f"mean norms: L0 {result.l0.float().mean():.1f} px, L2 {result.l2.mean():.4f}, Linf {result.linf.mean():.4f}; "
               f"queries/image {result.queries.float().mean():.1f}; time {seconds:.1f} s")
    if out:
        from pathlib import Path

        from .runtime import atomic_torch_save

        atomic_torch_save({f: getattr(result, f) for f in ("x_adv", "success", "clean_pred", "adv_pred", "labels",
                                                           "target", "l0", "l2", "linf", "queries")}, Path(out))
        click.echo(f"saved {out}")


def check_output_file(out: str) -> None:
    """A file can be written at ``out`` (its folder exists and is writable): checked before any work."""
    from pathlib import Path

    from .runtime import check_writable_dir

    path = Path(out)
    if path.is_dir():
        raise AdvspatialError(f"--out {out} is a directory; valid: a file path (.pt)")
    if not path.parent.is_dir():
        raise AdvspatialError(f"--out {out}: folder {path.parent} does not exist")
    check_writable_dir(path.parent, "--out folder")


@cli.command()
@model_options
@click.option("--attack", "attack_name", default="pgd-l2", show_default=True, help="Attack name (advspatial list attacks).")
@click.option("--importance", default="auto", show_default=True,
              help="Importance map (RoI side); auto: Grad-CAM for a GAP head, HiResCAM for a flatten/FC head.")
@click.option("--attack-map", default="contribution", show_default=True, help="Attack map (RoA side).")
@click.option("--fraction", default=0.2, show_default=True, type=float, help="Top fraction of each map forming RoI/RoA.")
@click.option("--n", default=200, show_default=True, type=int)
@click.option("--batch-size", default=None, type=int, help="Images per batch (default: the preset's).")
@click.option("--permutations", default=10000, show_default=True, type=int, help="Derangements per pair-based null.")
@click.option("--gate-n", default=200, show_default=True, type=int, help="Images entering the faithfulness gate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="runs/maps", show_default=True, type=click.Path(file_okay=False))
def maps(attack_name: str, importance: str, attack_map: str, fraction: float, n: int, batch_size: int,
         permutations: int, gate_n: int, seed: int, out: str, **options: Any) -> None:
    """RoI vs RoA for one attack: the faithfulness gate, verdicts against the nulls, figures, CSV and a report."""
    import json
    from pathlib import Path

    import dataclasses

    from .experiments import get_experiment, resolve_config
    from .experiments.results import rows_to_csv
    from .experiments.running import open_run
    from .experiments.spatial import maps_analysis
    from .report.html import write_report
    from .runtime import atomic_write_text

    o = options
    given = {"dataset": o["dataset"], "model": o["model_name"], "weights": o["weights"] or "", "arch": o["arch"] or "",
             "model_seed": o["model_seed"], "device": o["device"], "subset": o["subset"],
             "image_size": o["image_size"], "fit": o["fit"], "class_map": o["class_map"],
             "crop_fraction": o["crop_fraction"], "n": n, "seed": seed,
             "out": out, "attacks": [attack_name], "defence_attack": attack_name, "importance": importance,
             "attack_map": attack_map, "fraction": fraction, "permutations": permutations, "gate_n": gate_n,
             "panel": [], "progress": o["progress"]}
    if batch_size is not None:
        given["batch_size"] = batch_size
    config = resolve_config(get_experiment("spatial"), None, given, quick=False)
    # the same settings complete (or repeat) the run in --out; other settings, or another run there, are refused
    with open_run(Path(out), "maps", config, resume=False, reuse_same=True) as rundir:
        rows, metrics, sections = maps_analysis(config, rundir)
        atomic_write_text(Path(out) / "per_image.csv", rows_to_csv(rows))
        atomic_write_text(Path(out) / "metrics.json", json.dumps(metrics, indent=2))
        write_report(Path(out) / "report.html", title="advspatial - maps",
                     subtitle=f"RoI vs RoA for {attack_name}", config=dataclasses.asdict(config), sections=sections)
    m = metrics["attacks"][attack_name]
    click.echo(f"{attack_name} on {m['images']} images: success rate {m['success_rate']:.3f}, "
               f"{m['successful']} successful attacks analysed")
    roi = metrics["roi"]
    gate = metrics["faithfulness"][roi["method"]]
    click.echo(f"RoI {roi['method']}: faithfulness gate {'passed' if gate['passed'] else 'FAILED (' + gate['reason'] + ')'}")
    for c in metrics["claims"]:
        e = c["effect"]
        click.echo(f"  {'*' if c['primary'] else ' '} {c['subject']:<28} {c['statistic']:<14} vs {c['null']:<18} "
                   f"observed {c['observed']:.3f} null {c['null_value']:.3f} excess {e['mean']:+.3f} "
                   f"[{e['low']:+.3f}, {e['high']:+.3f}] p_adj {c['p_adjusted']:.2g}  {c['verdict']}")
    click.echo(f"wrote {out}/report.html, per_image.csv, metrics.json (* = primary endpoint)")


DEFAULT_EXPERIMENT = "spatial"


class ExperimentGroup(click.Group):
    """``advspatial run [EXPERIMENT] [OPTIONS]``: the experiment name is optional.

    Without a known experiment name first, the default experiment runs, so
    ``advspatial run --n 100`` and ``advspatial run --help`` address it.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        from .experiments import experiments

        return list(experiments())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from .experiments import experiments

        if name not in experiments():
            return None
        return experiment_command(name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from .experiments import experiments

        names = experiments()
        if args and not args[0].startswith("-") and args[0] not in names:
            from .errors import unknown_name

            raise unknown_name("experiment", args[0], names)
        ctx.meta[EXPLICIT_EXPERIMENT] = bool(args) and args[0] in names
        if not args or args[0] not in names:
            default = DEFAULT_EXPERIMENT if DEFAULT_EXPERIMENT in names else "baseline"
            args = [default, *args]
        return super().parse_args(ctx, args)


def experiment_command(name: str) -> click.Command:
    """A click command whose options are the fields of the experiment's config dataclass."""
    import dataclasses

    from .experiments import get_experiment
    from .experiments.settings import declared_help, field_types

    experiment = get_experiment(name)
    types = field_types(experiment.config_cls)

    def callback(config_file: str | None, resume: str | None, quick: bool, **values: Any) -> None:
        ctx = click.get_current_context()
        given = {
            key: value for key, value in values.items()
            if ctx.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT
        }
        run_configured(name, config_file, resume, quick, given)

    params: list[click.Parameter] = [
        click.Option(["--config", "config_file"], default=None, help="YAML file of settings (CLI options override it)."),
        click.Option(["--resume"], default=None, metavar="DIR", help="Complete an interrupted run in DIR (its own config)."),
        click.Option(["--quick"], is_flag=True, help=f"CI-sized preset: {experiment.config_cls.QUICK}"),
    ]
    for f in dataclasses.fields(experiment.config_cls):
        if f.name in experiment.config_cls.CLI_HIDDEN:
            continue
        kind = types[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = declared_help(f)
        if kind is bool:
            params.append(click.Option([f"{flag}/--no-{f.name.replace('_', '-')}", f.name], default=default,
                                       show_default=True, help=help_text))
        elif isinstance(default, list):
            params.append(click.Option([flag, f.name], default=",".join(map(str, default)), show_default=True,
                                       help=help_text + " (comma-separated)"))
        else:
            params.append(click.Option([flag, f.name], default=default, show_default=True,
                                       type=kind if kind in (int, float, str) else str, help=help_text))
    return click.Command(name, callback=callback, params=params, help=f"{experiment.description}.")


def run_configured(name: str, config_file: str | None, resume: str | None, quick: bool, given: dict[str, Any]) -> None:
    """Resolve the config (validated before any work), run or resume, print the summary."""
    from pathlib import Path

    from .experiments import get_experiment, resolve_config, run_experiment
    from .experiments.settings import load_yaml, read_yaml_mapping

    explicit = click.get_current_context().meta.get(EXPLICIT_EXPERIMENT, True)
    if resume:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise AdvspatialError(f"--resume {resume}: no config.yaml there; valid: a run directory written by advspatial run")
        extra = sorted(k for k in given if k != "progress")
        if extra or quick or config_file:
            named = ", ".join([*("--" + k.replace("_", "-") for k in extra), *(["--quick"] if quick else []),
                               *(["--config"] if config_file else [])])
            raise AdvspatialError(f"--resume completes a run with its own settings (its config.yaml); drop {named}, "
                                  "or start a new run with another --out")
        saved_name = str(read_yaml_mapping(saved).get("experiment") or name)
        if saved_name == "maps":
            raise AdvspatialError(f"{resume} was written by advspatial maps; run the same maps command again "
                                  f"(--out {resume}) to complete it")
        if explicit and saved_name != name:
            raise AdvspatialError(f"{resume} holds a run of {saved_name}, not {name}; resume it with "
                                  f"advspatial run {saved_name} --resume {resume} (or just --resume)")
        name = saved_name
        values = load_yaml(saved)
        values.update({k: v for k, v in given.items() if k == "progress"})
        values["out"] = resume
        config = resolve_config(get_experiment(name), None, values, quick=False)
    else:
        if config_file:
            wanted = read_yaml_mapping(config_file).get("experiment")
            if wanted is not None and str(wanted) != name:
                if explicit:
                    raise AdvspatialError(f"{config_file} is for experiment {wanted}, but the command runs {name}; "
                                          "drop one of the two")
                name = str(wanted)
                get_experiment(name)  # an unknown name is one line listing the experiments
        config = resolve_config(get_experiment(name), config_file, given, quick)
    RESUME_HINT[:] = [f"; complete the run with: advspatial run --resume {config.out or f'runs/{name}'}"]
    result, rundir = run_experiment(name, config, resume=bool(resume))
    RESUME_HINT.clear()
    from .distributed import world

    if world().is_main:
        click.echo(result.summary)
        click.echo(f"results: {rundir.path}/ (report.html, metrics.json, per_image.csv, figures/)")


EXPLICIT_EXPERIMENT = "advspatial.explicit_experiment"
#: what an interrupted run prints after "aborted" (set while an experiment runs)
RESUME_HINT: list[str] = []


@cli.group("run", cls=ExperimentGroup, invoke_without_command=False)
def run_group() -> None:
    """Run an experiment (default: spatial) into a run directory with a report.

    EXPERIMENT is one of `advspatial list experiments`; `advspatial run EXPERIMENT --help`
    lists every setting with its default.
    """


#: warnings of dependencies that say nothing a user of advspatial can act on (module regex, message regex)
QUIET_WARNINGS = (
    ("captum", r".*did not already require gradients"),  # captum turns requires_grad on itself
    ("", r".*torch\.jit.*deprecated"),  # TorchScript loading is supported here and refused where it cannot work
    ("", r".*TypedStorage is deprecated"),
)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings of dependencies as one line each on stderr (once per message), known noise dropped, instead
    of Python's two-line form with a source path."""
    import warnings

    seen: set[tuple[str, str]] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = one_line(str(message))
        if (category.__name__, text) in seen:
            return
        seen.add((category.__name__, text))
        click.echo(f"advspatial: warning: {category.__name__}: {text}", err=True)

    with warnings.catch_warnings():
        for module, pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, module=module)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit status 2.

    Under torchrun each process joins the process group first
    (:func:`advspatial.distributed.init_from_environment`); an error every
    process shares is printed by rank 0 alone.
    """
    from .distributed import init_from_environment, shutdown

    try:
        init_from_environment()
        _run_cli(argv)
    finally:
        shutdown()


def _run_cli(argv: list[str] | None) -> None:
    try:
        with one_line_warnings():
            cli.main(args=argv, prog_name="advspatial", standalone_mode=False)
    except click.exceptions.Abort as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, EOFError):  # click turns EOFError (an empty file) into Abort
            _error(f"unexpected end of a file ({cause or 'EOFError'}); a file read by this command is empty or "
                   "truncated")
            sys.exit(2)
        click.echo("advspatial: aborted" + "".join(RESUME_HINT), err=True)
        RESUME_HINT.clear()
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AdvspatialError as exc:
        _error(one_line(str(exc)), exc)
        sys.exit(2)
    except OSError as exc:  # the file system: read-only, full, missing, a file where a folder belongs
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _error(f"{one_line(exc.strerror or str(exc))}{where}", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("advspatial: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        from .distributed import RankFailed, is_shared, world

        if not (isinstance(exc, RankFailed) or (world().is_distributed and is_shared(exc))):
            raise
        _error(one_line(str(exc)), exc)
        sys.exit(1)


def _error(message: str, exc: BaseException | None = None) -> None:
    """``advspatial: error: MESSAGE`` on stderr. Under torchrun rank 0 prints the errors every process meets
    (user errors, which all processes find alike, and errors shared at a meeting point); another rank prints
    only a failure of its own (a file system error, a crash), prefixed with its rank."""
    from .distributed import is_shared, world

    current = world()
    if current.is_distributed and not current.is_main:
        if exc is None or is_shared(exc) or isinstance(exc, AdvspatialError):
            return
        message = f"rank {current.rank}: {message}"
    click.echo(f"advspatial: error: {message}", err=True)


def one_line(message: str) -> str:
    """A message on one line (the CLI promises one-line errors): inner line breaks become '; '."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    main()
