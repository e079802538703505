"""Helpers shared by several test modules (importable as ``helpers``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import importlib.util
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn


#: keys of metrics.json that hold this machine's times (wall_seconds, cpu_seconds, non_model_seconds_per_call, ...)
TIMING_KEY = re.compile(r"(^|_)(wall|seconds|elapsed|timings)($|_)")


#: the ledger's host-read counts (a resumed run may count a few fewer: see tests of resumed runs)
SYNC_KEYS = frozenset({"syncs", "syncs_per_call"})


def without_timings(value: Any, drop: frozenset[str] = frozenset()) -> Any:
    """``value`` (parsed metrics.json) without the keys that hold times (and the keys in ``drop``), recursively:
    what two runs of the same settings must agree on."""
    if isinstance(value, dict):
        return {k: without_timings(v, drop) for k, v in value.items()
                if not TIMING_KEY.search(str(k)) and k not in drop}
    if isinstance(value, list):
        return [without_timings(v, drop) for v in value]
    return value


class TinyGAP(nn.Module):
    """conv-ReLU-conv-ReLU -> global average pooling -> linear: exact CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                                      nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class ReportParser(HTMLParser):
    """Collects what a test checks in an advspatial HTML report: section ids, image sources,
    the number of tables, and any element that would load an external resource."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.tables = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[override]
        found = dict(attrs)
        if tag == "section":
            self.sections.append(found.get("id") or "")
        elif tag == "img":
            self.images.append(found.get("src") or "")
        elif tag == "table":
            self.tables += 1
        if tag in ("link", "script") and (found.get("href") or found.get("src")):
            self.external.append(tag)


def train_briefly(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch: int, lr: float,
    shuffle_seed: int | None = None,
) -> nn.Module:
    """Adam on cross-entropy for a few epochs (in order, or shuffled with a seeded permutation); eval mode after."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = (torch.randperm(len(x), generator=torch.Generator().manual_seed(shuffle_seed))
                 if shuffle_seed is not None else torch.arange(len(x)))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def self_labelled_tiny_cnn(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An untrained TinyCNN (seed 0), ``n`` random 28x28 images and the model's own predictions as labels
    (every image correctly classified)."""
    from conftest import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(n, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def saved_trained_model(directory: Path, arch: str, n_train: int, *, epochs: int, batch: int, lr: float) -> Path:
    """A registered architecture trained briefly (seed 0, in order) on the first ``n_train`` Fashion-MNIST
    training images, saved as ``directory/<arch>.pt`` (a state dict): the fixture models of the end-to-end tests."""
    from advspatial.data import load_dataset
    from advspatial.models import build_model

    train = load_dataset("fashion-mnist", "train").head(n_train)
    torch.manual_seed(0)
    model = train_briefly(build_model(arch), train.images(), train.labels, epochs=epochs, batch=batch, lr=lr)
    path = directory / f"{arch}.pt"
    torch.save(model.state_dict(), path)
    return path


def intensity_map(x: torch.Tensor) -> torch.Tensor:
    """A map that needs no model: the image's intensity summed over channels."""
    return x.sum(1)


def grad_map(model: nn.Module):  # type: ignore[no-untyped-def]
    """A deployable vulnerability map that needs autograd: |d max-logit / dx| summed over channels."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).amax(1).sum(), x)
        return g.abs().sum(1)

    return fn


class RowCounter(nn.Module):
    """Counts the images the wrapped model is evaluated on (an attack's query bookkeeping is checked against it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x)


class StepNotes(nn.Module):
    """Records the progress note (:func:`advspatial.progress.steps`) each call to the wrapped model is made under
    (``notes``; None outside a loop that says where it is)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.notes = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from advspatial import progress

        self.notes.append(progress._ACTIVITY.step)
        return self.model(x)


class CallCounter(nn.Module):
    """Counts the calls made to the wrapped model (``calls``): how many rounds an attack's batching takes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def first_images(subset: tuple[torch.Tensor, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (images, labels) of a fixture subset."""
    return subset[0][:n], subset[1][:n]


def fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the model's prediction on x_adv differs from y."""
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def run_cli(capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """Run the ``advspatial`` command in-process: (exit status, stdout, stderr)."""
    import pytest

    from advspatial.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


class GapNet(nn.Module):
    """conv-ReLU-conv-ReLU-global average pool-linear on 3-channel images of any size (a GAP head, so every CAM
    variant applies); 4 classes, weights from seed 0."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def double_linear_model(weight: torch.Tensor) -> nn.Module:
    """z = W·flatten(x) in float64."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
    return nn.Sequential(nn.Flatten(), lin).eval()


def suppression_case(n: int = 8, seed: int = 0, size: int = 8, block: int = 2, eps: float = 0.05):
    """A linear 3-class model and, per image, a δ that lowers the true logit (class 0) and leaves the target's
    (class 1) unchanged in every block: in each block δ is −W_0 with its part along W_1 removed."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, size * size, generator=g, dtype=torch.float64)
    w0, w1 = weight[0].view(size, size), weight[1].view(size, size)
    delta = torch.zeros(size, size, dtype=torch.float64)
    for r in range(0, size, block):
        for c in range(0, size, block):
            a, b = w0[r:r + block, c:c + block], w1[r:r + block, c:c + block]
            ortho = a - (a * b).sum() / (b * b).sum() * b
            delta[r:r + block, c:c + block] = -eps * ortho / ortho.abs().max()
    x = torch.rand(n, 1, size, size, generator=g, dtype=torch.float64)
    y, t = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    return double_linear_model(weight), x, x + delta, y, t


def smoke_vocabulary() -> set[str]:
    """Every word a smoke test must not print bare: the statistics' verdicts, the defence's and the harm claim's,
    and the convergence check's suspicion of gradient masking (listed here, not read from the registry, so that
    the checks below check it)."""
    from advspatial.experiments.spatial.claims import HARM_WORDS, MASKING_SUSPECTED, VERDICT_WORDS
    from advspatial.statistics.verdicts import VERDICTS

    return {*VERDICTS, *VERDICT_WORDS, *HARM_WORDS, MASKING_SUSPECTED}


def bare_verdict_words(text: str) -> list[str]:
    """Every verdict word in ``text`` (any case, whole words) not preceded by the smoke mark: what a smoke
    test's summary must not hold. Written apart from :mod:`advspatial.experiments.smoke`, so it checks it."""
    import re

    from advspatial.experiments.smoke import SMOKE_MARK

    words = smoke_vocabulary()
    bare = []
    for word in sorted(words, key=len, reverse=True):
        for m in re.finditer(rf"\b{re.escape(word)}\b", text, re.IGNORECASE):
            before = text[:m.start()]
            longer = any(re.search(rf"{re.escape(w)}$", text[:m.end()], re.IGNORECASE)
                         for w in words if len(w) > len(word))
            if not before.endswith(SMOKE_MARK) and not longer:
                bare.append(m.group(0))
    return bare


def assert_smoke_test(path: Path, summary: str) -> None:
    """A smoke test's run directory ``path`` and printed ``summary`` say so: the summary and the report open with
    "smoke test: these settings decide nothing", metrics.json with ``smoke_test``; no verdict in metrics.json,
    per_image.csv, the summary or a report cell reads as a real run's word (each is "(smoke) would read: w")."""
    import csv
    import html
    import json
    import re

    from advspatial.experiments.smoke import SMOKE_MARK

    words = smoke_vocabulary()
    opening = "smoke test: these settings decide nothing"
    assert summary.startswith(opening), summary[:200]
    assert not bare_verdict_words(summary), (bare_verdict_words(summary), summary)
    report = (path / "report.html").read_text(encoding="utf-8")
    body = report[report.index("<body>") + len("<body>"):]
    assert re.match(rf"<p class='banner'>{re.escape(opening)}", body), body[:300]
    for word in words:
        assert f"<td>{html.escape(word)}</td>" not in report and f"— {word.upper()}" not in report, word
    metrics = json.loads((path / "metrics.json").read_text())
    assert next(iter(metrics)) == "smoke_test" and metrics["smoke_test"].startswith(opening)
    verdicts = list(_verdict_values(metrics))
    assert all(v.startswith(SMOKE_MARK) for _, v in verdicts), [v for v in verdicts if not v[1].startswith(SMOKE_MARK)]
    assert not [v for v in _strings(metrics) if v in words], "a bare verdict word outside a verdict key"
    with (path / "per_image.csv").open() as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [cell for cell in cells if cell in words]


def _verdict_values(value, key: str = ""):  # type: ignore[no-untyped-def]
    """(key, string) for every string under a key naming a verdict or a gate's interpretation."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _verdict_values(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _verdict_values(v, key)
    elif isinstance(value, str) and key and (key.endswith("verdict") or key.endswith("interpretation")):
        yield key, value


def _strings(value):  # type: ignore[no-untyped-def]
    """Every string of ``value`` but a claim's statement (under ``claim``: what is tested, which a smoke test keeps
    as it is; the harm claim's statement is also the word of its verdict when it holds)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "claim":
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 1x28x28 images in [0, 1]: noise plus a bright 8x8 square in the quadrant of the label (0..3)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.rand(n, 1, 28, 28, generator=generator) * 0.3
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[i, 0, 3 + 14 * row: 11 + 14 * row, 3 + 14 * col: 11 + 14 * col] += 0.6
    return images.clamp(0, 1), labels


#: the size of a run started by documentation code in the tests: the CI preset on at most this many images
SMALL_RUN = {"n": 12}


def documentation_namespace() -> dict[str, object]:
    """The names a documentation block may take as given when it says so in a comment (``# model, other_model:
    ...; images, labels: ...``), and a test's ready-made small setting: ``model`` and ``other_model`` (untrained
    TinyCNNs on 1x28x28 images, 10 classes, in eval mode), ``images`` (12 random images in [0,1]) and ``labels``
    (``model``'s own predictions, so every image starts correctly classified). Docstring examples and the README
    build their own."""
    from conftest import TinyCNN

    model, images, labels = self_labelled_tiny_cnn(SMALL_RUN["n"])
    torch.manual_seed(1)
    return {"model": model, "images": images, "labels": labels, "other_model": TinyCNN().eval()}


def run_contract(name: str, setting: dict, out: Path, **extra: object):  # type: ignore[no-untyped-def]
    """Experiment ``name`` at its registry line's tiny settings (``contract=``, updated by ``extra``) on
    ``setting``'s model, test and training images, through :func:`advspatial.run` (``analyze`` through
    :func:`advspatial.analyze` on a fixed random-sign change of 8 test images)."""
    import advspatial
    from advspatial.experiments import experiments

    settings = {**experiments()[name].contract, **extra}
    if name == "analyze":
        x, y = setting["data"]
        adv = (x + 0.1 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
        return advspatial.analyze(setting["model"], x[:8], adv[:8], y[:8], quick=True, progress=False, out=str(out),
                                  **settings)
    return advspatial.run(name, setting["model"], setting["data"], train_data=setting["train_data"], quick=True,
                          progress=False, out=str(out), **settings)


#: the content of a file outside a run or study directory, which a report must never embed
OUTSIDE_SECRET = b"\x89PNG\r\n\x1a\nfrom outside the directory"


def plant_outside_figures(out: Path, outside: Path, how: str) -> None:
    """Make the figures of the run or study ``out`` come from ``outside`` (a folder beside it) holding
    :data:`OUTSIDE_SECRET`: ``figure`` links its first figure to ``outside/secret.png`` (``hardlink``: a hard
    link); ``folder`` moves figures/ to ``outside/figures`` (every figure there the secret) and links it back."""
    import shutil

    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.png").write_bytes(OUTSIDE_SECRET)
    figures = sorted((out / "figures").glob("*.png"))
    if how == "figure" and figures:
        figures[0].unlink()
        figures[0].symlink_to(outside / "secret.png")
    elif how == "hardlink" and figures:
        figures[0].unlink()
        figures[0].hardlink_to(outside / "secret.png")
    elif how == "folder":
        shutil.move(out / "figures", outside / "figures")
        for png in [*(outside / "figures").glob("*.png"), outside / "figures" / "extra.png"]:
            png.write_bytes(OUTSIDE_SECRET)
        (out / "figures").symlink_to(outside / "figures")


def on_both_paths(monkeypatch, model: nn.Module, work):  # type: ignore[no-untyped-def]
    """``{False: (value, count), True: (value, count)}``: ``work()`` run in one ledger stage watching ``model``, on
    the CPU's path and on a device's path forced on the CPU (``host_syncs.DEVICE_PATH_ON_CPU``), with the stage's
    :class:`~advspatial.passes.PassCount`."""
    from advspatial import host_syncs
    from advspatial.passes import PassLedger

    seen = {}
    for device_path in (False, True):
        monkeypatch.setattr(host_syncs, "DEVICE_PATH_ON_CPU", device_path)
        ledger = PassLedger()
        ledger.watch(model)
        with ledger.stage("work"):
            value = work()
        seen[device_path] = (value, ledger.by_stage["work"])
    return seen


def assert_same_attack_in_fewer_reads(seen) -> None:  # type: ignore[no-untyped-def]
    """An attack's :func:`on_both_paths` results: some rows ended early, some searched to the end; the device's path
    gave the same examples and query counts in fewer host reads."""
    (plain, plain_count), (masked, masked_count) = seen[False], seen[True]
    assert 0 < int(plain.success.sum()) < len(plain.success)
    assert torch.allclose(plain.x_adv, masked.x_adv, atol=1e-6)
    assert torch.equal(plain.queries, masked.queries)
    assert masked_count.syncs < plain_count.syncs


def counted_block_pairs(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The (image, group) pairs of every call of the incremental evaluator of square groups
    (:class:`~advspatial.analysis.pse_incremental.BlockEvaluator`) from now on, one entry per call: a test's
    record of which pairs went incrementally."""
    from advspatial.analysis import pse_incremental

    calls: list[int] = []
    original = pse_incremental.BlockEvaluator.logits

    def counted(self, inner, image, group, rows):  # type: ignore[no-untyped-def]
        calls.append(int(group.numel()))
        return original(self, inner, image, group, rows)

    monkeypatch.setattr(pse_incremental.BlockEvaluator, "logits", counted)
    return calls


def load_script(path: Path, name: str) -> ModuleType:
    """A script outside the package (benchmarks/, scripts/, docs/, a file a test wrote) imported as module ``name``,
    registered in ``sys.modules`` (where dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
