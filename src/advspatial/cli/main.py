"""The ``advspatial`` command: the top-level group, its commands, and the entry point.

User errors (``advspatial.errors.AdvspatialError``) print one line and exit 2;
click's own usage errors also exit 2.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from .. import __version__
from ..errors import AdvspatialError
from .attack_commands import attack, maps
from .listing import list_cmd
from .model_commands import evaluate, train_command
from .plan import plan_command
from .run import RESUME_HINT, experiment_command, report_command, run_group

#: the commands that share their work among the processes of a torchrun launch
DISTRIBUTED_COMMANDS = ("run", "analyze", "study", "train", "list")


class TopLevel(click.Group):
    """The commands, plus two built on first use from their config dataclasses: ``analyze`` (the ``analyze``
    experiment's command, ``advspatial run analyze``) and ``train`` (:class:`~advspatial.training.TrainConfig`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "analyze", "study", "train"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from ..distributed import world

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
        if name == "train":
            return train_command()
        if name == "study":
            from .study import study_command

            return study_command()
        return super().get_command(ctx, name)


@click.group(cls=TopLevel, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="advspatial")
def cli() -> None:
    """advspatial: where adversarial perturbations act in an image, compared with where the
    classifier looks - and what follows from that for defence."""


for command in (list_cmd, evaluate, attack, maps, plan_command, report_command, run_group):
    cli.add_command(command)


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
    from ..distributed import init_from_environment, shutdown, stop_on_terminate, world
    from ..runtime import keep_freed_memory

    keep_freed_memory()
    status: int | None = None
    try:
        try:
            init_from_environment()
        except AdvspatialError as exc:  # a bad RANK, WORLD_SIZE, ADVSPATIAL_THREADS...: one line, before any work
            _error(one_line(str(exc)), exc)
            sys.exit(2)
        distributed = world().is_distributed
        if distributed:
            stop_on_terminate()
        try:
            _run_cli(argv)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            raise
    finally:
        if world().is_distributed:
            stop_on_terminate(False)  # the outcome is printed: leaving the process group needs no line of its own
        shutdown()
        if status == 0 and distributed:  # on an error the usual exit: rank 0 must live to print the one line
            exit_without_teardown(status)


def exit_without_teardown(status: int) -> None:
    """End a torchrun process that succeeded now, its output flushed and its process group already left, skipping
    the interpreter's teardown: there gloo's worker threads can outlive the interpreter and abort the process
    ("terminate called without an active exception", exit -6) after every result was written. Not on an error:
    a rank that left at once would let torchrun stop rank 0 before it prints the error's one line."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


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
        from ..distributed import PEER_LOST, RankFailed, Stopped, is_shared, lost_peer, world

        if isinstance(exc, Stopped):
            _error(str(exc) + "".join(RESUME_HINT), exc)
            sys.exit(143)
        if world().is_distributed and lost_peer(exc) and not is_shared(exc):
            _error(f"{PEER_LOST} ({one_line(str(exc))[:120]}); its own line, or torchrun's report, says why", exc)
            sys.exit(1)
        if not (isinstance(exc, RankFailed) or (world().is_distributed and is_shared(exc))):
            raise
        _error(one_line(str(exc)), exc)
        sys.exit(1)


def _error(message: str, exc: BaseException | None = None) -> None:
    """``advspatial: error: MESSAGE`` on stderr. Under torchrun rank 0 prints the errors every process meets
    (user errors, which all processes find alike, and errors shared at a meeting point); another rank prints
    only a failure of its own (a file system error, a crash), prefixed with its rank."""
    from ..distributed import is_shared, world

    current = world()
    if current.is_distributed and not current.is_main:
        if exc is None or is_shared(exc) or isinstance(exc, AdvspatialError):
            return
        message = f"rank {current.rank}: {message}"
    click.echo(f"advspatial: error: {message}", err=True)


def one_line(message: str) -> str:
    """A message on one line (the CLI promises one-line errors): inner line breaks become '; '."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())

