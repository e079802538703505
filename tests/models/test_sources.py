"""The source files a model's code is made of: its file and every file it imports from outside installed packages,
so that a resumed run refuses a model whose helper module was edited meanwhile."""

from __future__ import annotations

import sys
from pathlib import Path

from advspatial.models import load_model
from advspatial.models.sources import source_closure
from advspatial.models.spec import code_checksum

NET = '''
import torch
import helpers


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return helpers.act(self.fc(x.flatten(1)))


def make():
    return Net()
'''

HELPERS = "import torch\n\n\ndef act(x):\n    return torch.relu(x)\n"


def checksum_with(folder: Path, helpers: str) -> str:
    """The code checksum of ``folder/net.py:make`` whose ``helpers.py`` reads ``helpers`` (imported afresh)."""
    folder.mkdir(exist_ok=True)
    (folder / "net.py").write_text(NET)
    (folder / "helpers.py").write_text(helpers)
    sys.modules.pop("helpers", None)
    spec = f"{folder / 'net.py'}:make"
    try:
        return code_checksum(load_model(spec), spec)
    finally:
        sys.modules.pop("helpers", None)


def test_an_edit_of_a_module_the_model_file_imports_changes_the_code_checksum(tmp_path: Path) -> None:
    """relu -> leaky relu in helpers.py, the model file and its weights unchanged: a resume used to mix the stages of
    the two models with exit 0 (the checksum covered the factory file and the layers' files only)."""
    relu = checksum_with(tmp_path / "a", HELPERS)
    again = checksum_with(tmp_path / "b", HELPERS)
    leaky = checksum_with(tmp_path / "c", HELPERS.replace("torch.relu(x)", "torch.nn.functional.leaky_relu(x)"))
    assert relu == again != leaky


def test_the_closure_follows_relative_and_package_imports_but_not_installed_ones(tmp_path: Path) -> None:
    package = tmp_path / "nets"
    (package / "blocks").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "blocks" / "__init__.py").write_text("")
    (package / "blocks" / "act.py").write_text("import numpy\nimport torch.nn\n")
    (package / "model.py").write_text("import os\nfrom . import util\nfrom .blocks.act import x\n"
                                      "def f():\n    import json\n")
    (package / "util.py").write_text("from .blocks import act\n")
    found = {p.resolve().relative_to(tmp_path) for p in source_closure([package / "model.py"])}
    assert found == {Path(p) for p in ("nets/model.py", "nets/__init__.py", "nets/util.py", "nets/blocks/__init__.py",
                                       "nets/blocks/act.py")}


def test_a_file_that_does_not_parse_is_counted_by_its_content_alone(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    assert source_closure([broken, tmp_path / "missing.py"]) == {broken}
