"""One settings mechanism (alignez_eval/settings.py) behind EditConfig, FitSettings and the judge
spec with its per-backend options: the same reader of loose values, the same message for an unknown name, the same help metadata."""

from __future__ import annotations

import pytest

from alignez_eval.editing.config import EditConfig
from alignez_eval.errors import ConfigError
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.judge.spec import OPTIONS, JudgeSpec
from alignez_eval.settings import Settings, coerce_to


@pytest.mark.parametrize("cls,kind", [(EditConfig, "edit"), (FitSettings, "fit"),
                                      *((c, c.KIND) for c in OPTIONS.values())])
def test_both_groups_are_read_by_one_mechanism(cls, kind) -> None:
    assert issubclass(cls, Settings) and cls.from_mapping.__func__ is Settings.from_mapping.__func__
    with pytest.raises(ConfigError, match=rf"unknown {kind} setting\(s\) colour, zz; the settings are "):
        cls.from_mapping({"zz": 1, "colour": "red"})
    assert cls.from_mapping({}) == cls()
    for name in cls.names():
        assert cls.help_of(name)  # every setting says what it does


def test_loose_values_are_read_as_typed() -> None:
    fit = FitSettings.from_mapping({"energy": "0.8", "min-pairs": "3", "do_sample": "no", "limit": "none",
                                    "gate": None})
    assert (fit.energy, fit.min_pairs, fit.do_sample, fit.limit, fit.gate) == (0.8, 3, False, None, "none")
    assert fit.replace(energy="0.5").energy == 0.5 and fit.replace() is fit
    edit = EditConfig.from_mapping({"alpha": "1.5", "n_layers": "3.0", "gate": "none", "positions": "ALL"})
    assert (edit.alpha, edit.n_layers, edit.gate, edit.positions) == (1.5, 3, "none", "all")
    assert EditConfig.from_mapping({"gate": "artifact"}).gate is None  # the artifact's own gate
    assert EditConfig.choices_of("positions") == ("last", "all", "generated")
    with pytest.raises(ConfigError, match=r"min_pairs='2.5' is not a valid int"):
        FitSettings.from_mapping({"min_pairs": "2.5"})
    with pytest.raises(ConfigError, match="alpha='abc' must be a finite number"):
        EditConfig.from_mapping({"alpha": "abc"})
    with pytest.raises(ConfigError, match="x needs a value"):
        coerce_to("x", None, int)


def test_the_judge_spec_reads_its_shared_fields_with_the_same_reader() -> None:
    # JudgeSpec only routes names to itself or to its backend's options; both are typed by Settings
    assert issubclass(JudgeSpec, Settings) and "options" not in JudgeSpec.names()
    for name in JudgeSpec.names():
        assert JudgeSpec.help_of(name)
    spec = JudgeSpec.from_mapping({"backend": "hf", "model": "x", "scale": "7.0", "margin": "none",
                                   "batch-size": "2", "dtype": "float32"})
    assert (spec.scale, spec.margin, spec.options.batch_size, spec.options.dtype) == (7, 0.0, 2, "float32")
    with pytest.raises(ConfigError, match=r"scale='7.5' is not a valid int"):
        JudgeSpec.from_mapping({"backend": "hf", "model": "x", "scale": "7.5"})
