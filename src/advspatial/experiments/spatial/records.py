"""The spatial experiment's adaptive records: what one batch of the adaptive evaluation keeps per image, and the
stages that save them.

A configuration's outcome (:class:`SettingOutcome`: the defence and its control attacked, clean correctness, for the
main defence the RoI-restricted attack and the transfers), the undefended model's references
(:class:`UndefendedOutcome`) and a trivial transform's (:class:`BaselineOutcome`) are each a
:class:`~advspatial.defence.adaptive_evaluation.PerImageRecord` of
:class:`~advspatial.defence.adaptive_evaluation.ComponentOutcome` columns, saved by a :class:`RecordStage` as the
dict of their fields (what a stage file holds, so stage files of any run load alike) and joined over batches into
:class:`AdaptiveOutcomes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import torch

from ...defence.adaptive_evaluation import ComponentOutcome, PerImageRecord
from ..stage import Stage
from .config import DefenceSetting

R = TypeVar("R", bound=PerImageRecord)


@dataclass(frozen=True)
class RecordStage(Stage[R]):
    """A stage whose value is a :class:`~advspatial.defence.adaptive_evaluation.PerImageRecord`, saved as the dict
    of its fields (what a stage file holds) and read back with ``read``."""

    read: Callable[[Mapping[str, Any]], R] = field(kw_only=True)

    def saved(self, value: R) -> dict[str, Any]:
        return value.as_dict()

    def loaded(self, saved: Any) -> R:
        return self.read(saved)


class MainAttacks(NamedTuple):
    """The main defence's RoI-restricted attack, and the transfer of its and the whole-image attack's examples."""

    roi: ComponentOutcome
    roi_transfer: torch.Tensor
    transfer: torch.Tensor


@dataclass(frozen=True)
class SettingOutcome(PerImageRecord):
    """A configuration's adaptive outcome per image: the defence and its control (share of fresh draws) attacked,
    and its clean correctness; for the main defence also the RoI-restricted attack (``roi``) and the transfer of
    both attacks' examples to the undefended model (``transfer``, ``roi_transfer``)."""

    defended: ComponentOutcome
    control: ComponentOutcome
    clean: torch.Tensor
    transfer: torch.Tensor | None = None
    roi: ComponentOutcome | None = None
    roi_transfer: torch.Tensor | None = None

    def restricted(self) -> MainAttacks:
        """The RoI-restricted attack and the transfer (the main defence's outcome holds them)."""
        if self.roi is None or self.transfer is None or self.roi_transfer is None:
            raise ValueError("only the main defence's outcome holds the RoI-restricted attack and the transfer")
        return MainAttacks(self.roi, self.roi_transfer, self.transfer)


@dataclass(frozen=True)
class UndefendedOutcome(PerImageRecord):
    """The undefended model's white-box references per image, each with its curve: the whole image and the
    RoI-restricted attack; its clean correctness and the transfer of both attacks' examples to the main defence."""

    white_box: ComponentOutcome = field(metadata={"key": "white-box"})
    roi: ComponentOutcome
    clean: torch.Tensor
    transfer: torch.Tensor
    roi_transfer: torch.Tensor


@dataclass(frozen=True)
class BaselineOutcome(PerImageRecord):
    """A trivial input transform per image: under the adaptive attack (with its curve), and clean (share of draws)."""

    baseline: ComponentOutcome
    clean: torch.Tensor


#: the adaptive outcomes of a batch: ``ADAPTIVE.at(*setting.parts)``; the undefended model's ``UNDEFENDED``
ADAPTIVE = RecordStage[SettingOutcome]("adaptive", read=SettingOutcome.from_dict)
UNDEFENDED = RecordStage[UndefendedOutcome]("adaptive", read=UndefendedOutcome.from_dict).at("undefended")
#: a trivial input transform under the adaptive attack: ``BASELINES.at(transform, strength)``
BASELINES = RecordStage[BaselineOutcome]("baselines", read=BaselineOutcome.from_dict)


@dataclass
class AdaptiveOutcomes:
    """Every adaptive outcome, per image over the adaptive images: the undefended model's, each configuration's
    attacked adaptively, each baseline's (by (transform, strength))."""

    undefended: UndefendedOutcome
    settings: dict[DefenceSetting, SettingOutcome]
    baselines: dict[tuple[str, float], BaselineOutcome]
