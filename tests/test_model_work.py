"""advspatial.model_work and RunDir.cached_model_work: a model-only stage is keyed by everything it was computed
from, found only under exactly that key, and reused by a later run with its earlier passes stated apart."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.files import atomic_torch_save
from advspatial.model_work import HEADER, ModelWorkStore, Unkeyable, inputs_digest
from advspatial.rundir import RunDir

MODEL = {"model_sha256": "ab" * 32, "model_code_sha256": "cd" * 32}


def store(root, model=MODEL, device="cpu") -> ModelWorkStore:
    return ModelWorkStore(root, model, device)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=12), st.data())
def test_a_digest_changes_exactly_when_a_tensor_element_changes(values, data) -> None:
    x = torch.tensor(values)
    i = data.draw(st.integers(0, len(values) - 1))
    changed = x.clone()
    changed[i] = data.draw(st.floats(-1e6, 1e6, allow_nan=False, width=32))
    same = bool(torch.equal(x, changed)) and bool((torch.signbit(x) == torch.signbit(changed)).all())
    assert (inputs_digest({"x": x}) == inputs_digest({"x": changed})) == same
    assert inputs_digest({"x": x}) == inputs_digest({"x": x.clone()})


def test_a_digest_tells_apart_shape_dtype_types_and_values_but_not_mapping_order() -> None:
    x = torch.arange(6.0)
    base = inputs_digest({"x": x, "steps": 12, "kw": {"a": 1, "b": "s"}})
    assert base == inputs_digest({"kw": {"b": "s", "a": 1}, "steps": 12, "x": x})
    others = [{"x": x.view(2, 3), "steps": 12, "kw": {"a": 1, "b": "s"}},
              {"x": x.double(), "steps": 12, "kw": {"a": 1, "b": "s"}},
              {"x": x, "steps": 12.0, "kw": {"a": 1, "b": "s"}},
              {"x": x, "steps": 13, "kw": {"a": 1, "b": "s"}},
              {"x": x, "steps": 12, "kw": {"a": True, "b": "s"}},
              {"x": x, "steps": 12, "kw": {"a": 1, "b": "t"}},
              {"x": x, "steps": 12, "kw": {"a": 1}}]
    digests = {inputs_digest(o) for o in others}
    assert base not in digests and len(digests) == len(others)


def test_an_input_that_cannot_be_keyed_faithfully_is_refused() -> None:
    with pytest.raises(Unkeyable, match="cannot be keyed"):
        inputs_digest({"layer": torch.nn.Linear(2, 2)})


def test_a_stored_value_is_found_only_under_its_full_key(tmp_path) -> None:
    inputs = {"x": torch.ones(3), "steps": 4}
    kept = store(tmp_path)
    assert kept.stored_count() == 0
    kept.save("gate/hirescam/mprt", inputs, {"rows": [1.0]}, {"forward": 10, "backward": 5})
    assert kept.stored_count() == 1
    found = kept.load("gate/hirescam/mprt", inputs)
    assert found is not None and found.value == {"rows": [1.0]} and found.passes == {"forward": 10, "backward": 5}
    assert kept.load("gate/gradcam/mprt", inputs) is None
    assert kept.load("gate/hirescam/mprt", {"x": torch.ones(3), "steps": 5}) is None
    assert store(tmp_path, {**MODEL, "model_code_sha256": "ef" * 32}).load("gate/hirescam/mprt", inputs) is None
    assert store(tmp_path, device="cuda").load("gate/hirescam/mprt", inputs) is None


def test_an_unreadable_file_or_one_holding_another_key_is_computed_afresh(tmp_path) -> None:
    inputs = {"x": torch.ones(2)}
    kept = store(tmp_path)
    path = kept.path(kept.key("prior", inputs))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    assert kept.load("prior", inputs) is None
    atomic_torch_save({HEADER: {"key": "0" * 64, "name": "prior"}, "value": 1}, path)  # a prefix collision
    assert kept.load("prior", inputs) is None
    kept.save("prior", inputs, 2)
    assert kept.load("prior", inputs).value == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_store_that_cannot_be_written_is_skipped(tmp_path) -> None:
    tmp_path.chmod(0o500)
    try:
        store(tmp_path / "inner").save("prior", {"x": 1}, 3)  # no error: the run keeps its own stage file
    finally:
        tmp_path.chmod(0o700)
    assert store(tmp_path / "inner").load("prior", {"x": 1}) is None


def test_a_second_run_reads_the_stage_and_states_the_earlier_passes_apart(tmp_path, monkeypatch) -> None:
    model = torch.nn.Linear(3, 2)
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return model(torch.ones(4, 3)).detach()

    def run(name: str) -> tuple[RunDir, torch.Tensor]:
        rundir = RunDir(tmp_path / name)
        rundir.model_work = store(tmp_path / "store")
        rundir.passes.watch(model)
        return rundir, rundir.cached_model_work("gate/check", lambda: {"x": torch.ones(4, 3)}, compute)

    digests = []
    digest = ModelWorkStore.key
    monkeypatch.setattr(ModelWorkStore, "key", lambda self, *a: digests.append(1) or digest(self, *a))
    first, value = run("a")
    assert digests == [1]  # a miss digests the inputs once, for the read and the write
    second, again = run("b")
    assert calls == [1] and torch.equal(value, again)
    assert first.passes.by_stage["gate/check"].forward == 4 and not first.passes.reused
    assert second.passes.reused["gate/check"].forward == 4 and second.passes.by_stage["gate/check"].forward == 0
    assert second.passes.summary()["reused_stages"] == {"gate/check": second.passes.reused["gate/check"].as_dict()}
    resumed = RunDir(tmp_path / "b")  # the run directory alone says the stage was reused
    assert torch.equal(resumed.cached("gate/check", compute), value) and calls == [1]
    assert resumed.passes.reused["gate/check"].forward == 4


def test_without_a_store_or_with_inputs_that_cannot_be_keyed_the_run_computes_and_keeps_nothing(tmp_path) -> None:
    calls = []

    def compute() -> int:
        calls.append(1)
        return 5

    plain = RunDir(tmp_path / "plain")
    assert plain.cached_model_work("prior", {"x": 1}, compute) == 5
    for name in ("a", "b"):
        rundir = RunDir(tmp_path / name)
        rundir.model_work = store(tmp_path / "store")
        assert rundir.cached_model_work("prior", {"layer": torch.nn.ReLU()}, compute) == 5
    assert calls == [1, 1, 1] and not (tmp_path / "store").exists()
