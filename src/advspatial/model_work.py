"""Work that depends only on a model and a few explicit inputs, kept beside the model so that a later run reuses it.

Why: some stages of a run do not depend on the run's question at all. The faithfulness gate's randomization checks,
the restricted attack's budget calibration and the class prior depend on the model, the images they are computed
on and a few settings; a second run on the same model (another ``n``, other attacks, another budget for the
adaptive evaluation) would recompute them exactly. :class:`ModelWorkStore` keeps such a value in the cache
(``<cache>/model-work/<model sha256>/``) under a key that covers everything it was computed from:

- the model: the checksums of its weights and its code, and the versions of the packages it was built with;
- advspatial itself: a checksum of its source files, so any change of the code computes the value afresh;
- the device type (a GPU's last bits differ from a CPU's);
- the stage's name and its inputs, given by the caller as a mapping (:func:`inputs_digest`: tensors by their
  content, numbers, strings and containers of them; anything else is refused, never hashed by ``repr``).

A value is found only under exactly that key: nothing is matched by a near key or by a file's name alone. A file
that cannot be read, or that holds another key, is computed afresh and overwritten. A run reads the value into its
own stage file as well, so the run directory stays complete on its own. Example::

    >>> import tempfile, torch
    >>> store = ModelWorkStore(tempfile.mkdtemp(), {"model_sha256": "ab" * 32}, device="cpu")
    >>> inputs = {"x": torch.ones(2, 3), "steps": 12}
    >>> store.load("gate/check", inputs) is None
    True
    >>> store.save("gate/check", inputs, {"rows": [1.0, 2.0]})
    >>> store.load("gate/check", inputs).value
    {'rows': [1.0, 2.0]}
    >>> store.load("gate/check", {"x": torch.ones(2, 3), "steps": 13}) is None
    True
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DataError
from .files import atomic_torch_save, load_torch_file

#: raised whenever what a stored value means changes in a way the source checksum does not see
MODEL_WORK_FORMAT = 1
#: the key of a stored file's header
HEADER = "advspatial_model_work"
#: the entries of a run's identity that say which model it is (the images' checksum is left out: each stage
#: names the images it reads among its inputs)
MODEL_IDENTITY = ("model_sha256", "model_code_sha256")


class Unkeyable(ConfigError):
    """An input that cannot be keyed faithfully (not a tensor, number, string, None or container of them): the
    stage is computed by the run and not stored."""


def inputs_digest(inputs: Mapping[str, Any]) -> str:
    """sha256 of ``inputs``: tensors by dtype, shape and content; bools, ints, floats, strings, None, and lists,
    tuples and mappings of them by value. Anything else is :class:`Unkeyable` (it could not be keyed
    faithfully)."""
    digest = hashlib.sha256()
    _feed(digest, dict(inputs))
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"tensor{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"map{len(value)}".encode())
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, float):
        digest.update(f"float{value!r}".encode())
    elif value is None or isinstance(value, (bool, int, str)):
        digest.update(f"{type(value).__name__}{value!r}".encode())
    else:
        raise Unkeyable(f"a model-work input of type {type(value).__name__} cannot be keyed; valid: tensors, "
                          "numbers, strings, None and lists, tuples or mappings of them")


@functools.cache
def source_checksum() -> str:
    """sha256 of advspatial's own source files (their paths and contents), computed once per process."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Stored:
    """A value found in the store, with the passes its computation cost (None: not counted)."""

    value: Any
    passes: dict[str, Any] | None


class ModelWorkStore:
    """The values of one model's model-only stages, in ``root/<model sha256 prefix>/`` (see the module docstring).

    ``model``: the run's identity entries naming the model (:data:`MODEL_IDENTITY`, extra entries such as package
    versions are keyed too); ``device``: the device type the values are computed on.
    """

    def __init__(self, root: str | Path, model: Mapping[str, Any], device: str) -> None:
        if not model.get("model_sha256"):
            raise ConfigError("a model-work store needs the model's weights checksum (model_sha256)")
        self.directory = Path(root) / str(model["model_sha256"])[:16]
        self._base = {"format": MODEL_WORK_FORMAT, "model": dict(model), "device": str(device),
                      "advspatial": source_checksum()}

    def stored_count(self) -> int:
        """How many stages of this model the store holds (0 when its folder is missing or unreadable)."""
        try:
            return sum(1 for _ in self.directory.glob("*.pt"))
        except OSError:
            return 0

    def key(self, name: str, inputs: Mapping[str, Any]) -> str:
        """The full key of stage ``name`` computed from ``inputs``."""
        text = json.dumps({**self._base, "name": name, "inputs": inputs_digest(inputs)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key[:40]}.pt"

    def load(self, name: str, inputs: Mapping[str, Any]) -> Stored | None:
        """The value stored for ``name`` and ``inputs``; None when there is none, or the file is unreadable or holds
        another key (then it is recomputed and overwritten)."""
        return self.read(name, self.key(name, inputs))

    def save(self, name: str, inputs: Mapping[str, Any], value: Any, passes: Mapping[str, Any] | None = None) -> None:
        """Store ``value`` for ``name`` and ``inputs`` (with the passes it cost); a store that cannot be written
        (read-only cache, full disk) is skipped: the run has the value in its own stage file."""
        self.write(name, self.key(name, inputs), value, passes)

    def read(self, name: str, key: str) -> Stored | None:
        """:meth:`load` under a key :meth:`key` gave (the inputs digested once for a read and a later write)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = load_torch_file(path, "model-work file", "")
        except DataError:
            return None
        if not isinstance(stored, dict):
            return None
        header = stored.get(HEADER)
        if not isinstance(header, dict) or header.get("key") != key or header.get("name") != name:
            return None
        passes = header.get("passes")
        return Stored(stored.get("value"), passes if isinstance(passes, dict) else None)

    def write(self, name: str, key: str, value: Any, passes: Mapping[str, Any] | None = None) -> None:
        """:meth:`save` under a key :meth:`key` gave."""
        header: dict[str, Any] = {"key": key, "name": name}
        if passes is not None:
            header["passes"] = dict(passes)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_torch_save({HEADER: header, "value": value}, self.path(key))
        except OSError:
            return
