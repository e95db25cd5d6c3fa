"""`alignez-eval fit` flags come from FitSettings: one default per setting, one error per bad value."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignez_eval.cli import main as cli_main
from alignez_eval.commands.fit import _settings, configure, setting_flags
from alignez_eval.fitting.capture import READS
from alignez_eval.fitting.settings import HELP_CHOICES, FitSettings
from alignez_eval.fitting.subspaces import HARM_BASES
from alignez_eval.sampling import Sampling
from alignez_eval.selfpref.generate import CHAT_MODES

REPO = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignez-eval fit")
    configure(parser)
    return parser


def _parse(*extra: str) -> argparse.Namespace:
    args = _parser().parse_args(["--model_args", "pretrained=x", "--out", "e.safetensors", *extra])
    args.layers_path = None  # main() takes it out of --model_args
    return args


def test_every_setting_has_a_flag_with_the_fields_default() -> None:
    flags = setting_flags()
    fields = {f.name: f for f in dataclasses.fields(FitSettings)}
    assert set(fields) - set(flags) == {"layers_path"}  # given as --model_args layers_path=…
    parser = _parser()
    by_flag = {opt: action for action in parser._actions for opt in action.option_strings}
    defaults = _parse()
    for name, flag in flags.items():
        assert flag in by_flag, f"{name} has no flag {flag}"
        assert by_flag[flag].dest == name
        assert getattr(defaults, name) == fields[name].default, name
    assert _settings(defaults) == FitSettings()


def test_flags_reach_the_settings() -> None:
    args = _parse("--method", "caa", "--energy", "0.5", "--batch-size", "3", "--greedy", "--limit", "7",
                  "--probe-l2", "0.1", "--gate", "none", "--top-p", "0.8")
    s = _settings(args)
    assert (s.method, s.energy, s.gen_batch_size, s.do_sample, s.limit, s.probe_l2, s.gate, s.top_p) == \
        ("caa", 0.5, 3, False, 7, 0.1, "none", 0.8)


def test_sampling_defaults_have_one_source() -> None:
    assert FitSettings().selfpref().sampling == Sampling()


def test_help_choices_match_their_owners() -> None:
    assert HELP_CHOICES["harm_basis"] == HARM_BASES
    assert HELP_CHOICES["read"] == READS
    assert HELP_CHOICES["chat"] == CHAT_MODES


@pytest.mark.parametrize("extra,message", [
    (["--energy", "abc"], "energy='abc' is not a valid float"),
    (["--min-pairs", "2.5"], "min_pairs='2.5' is not a valid int"),
    (["--limit", "0"], "limit=0 must be ≥ 1"),
    (["--component", "attn"], "component='attn'; choose one of mlp, block"),
])
def test_a_bad_value_is_one_clear_line_before_any_model_loads(tmp_path, capsys, extra, message) -> None:
    (tmp_path / "q.jsonl").write_text(json.dumps({"instruction": "hi"}) + "\n")
    argv = ["fit", "--model_args", "pretrained=/nonexistent", "--out", str(tmp_path / "e.safetensors"),
            "--queries", str(tmp_path / "q.jsonl"), *extra]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_help_teaches_without_importing_torch() -> None:
    code = ("import sys\nfrom alignez_eval.cli import main\ntry:\n    main(['fit', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text, torch_loaded = proc.stdout.rsplit("\n", 2)[0], proc.stdout.split()[-1]
    assert torch_loaded == "False"
    assert "--method {v2,v1,caa,iti}" in text and "(default v2)" in text
    assert "--temperature TEMPERATURE" in text and "(default 0.7)" in text
    assert "--greedy" in text and "--batch-size BATCH_SIZE" in text
