"""The fit pipeline on tiny random models: end to end, planted activations, cache, CLI, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import make_model

import alignez_eval
from alignez_eval.cli import main as cli_main
from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.gates import capture_query_states, query_gates
from alignez_eval.editing.hooks import edit_session
from alignez_eval.editing.plan import EditConfig, prepare_plan
from alignez_eval.editing.positions import GenerationPositions
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.fitting.activations import activation_texts
from alignez_eval.fitting.cache import model_fingerprint
from alignez_eval.fitting.capture import save_activations
from alignez_eval.fitting.outputs import write_outputs
from alignez_eval.fitting.run import run_fit
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.hashing import sha256_file, sha256_json

QUERIES = [{"id": f"q{i}", "instruction": f"Explain how to do task number {i} step by step."} for i in range(6)]
FAST = dict(char_tokens=6, answer_tokens=12, gen_batch_size=6, min_pairs=2)


@pytest.fixture(scope="module")
def tiny():
    return make_model("llama")


class Counter:
    """Counts real generate calls and top-level forwards of a model (no mock: the real calls run)."""

    def __init__(self, model):
        self.model, self.generate, self.forward = model, 0, 0
        self._real = model.generate
        self._h = None

    def __enter__(self):
        def generate(*a, **k):
            self.generate += 1
            return self._real(*a, **k)

        self.model.generate = generate
        self._h = self.model.register_forward_pre_hook(lambda *_: setattr(self, "forward", self.forward + 1))
        return self

    def __exit__(self, *exc):
        self.model.generate = self._real
        self._h.remove()


def greedy_with(model, tok, edit, prompt, **cfg):
    """Greedy continuation with the artifact applied through the core hooks (as alignez-hf does)."""
    enc = tok([prompt], return_tensors="pt")
    gates = None
    if edit is not None:
        plan = prepare_plan(edit, EditConfig(**cfg), model)
        if plan.needs_query_states:
            qpos = torch.tensor([enc["input_ids"].shape[1] - 1])
            gates = query_gates(plan, capture_query_states(model, plan, lambda: model(**enc), qpos))
    ctx = edit_session(model, plan, GenerationPositions("last"), gates) if edit is not None else _null()
    with ctx, torch.no_grad():
        out = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _orthonormal(b: torch.Tensor) -> bool:
    return b.dtype == torch.float32 and torch.allclose(b @ b.T, torch.eye(b.shape[0]), atol=1e-5)


# ---- end to end -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["v2", "v1", "caa", "iti"])
def test_fit_end_to_end_and_the_artifact_edits_generation(tiny, tmp_path, method):
    model, tok = tiny
    result = run_fit(model, tok, QUERIES, FitSettings(method=method, top_k=2, **FAST), cache_dir=tmp_path / "c",
                     progress=False)
    paths = write_outputs(result, tmp_path / f"{method}.safetensors")
    edit = Edit.load(paths["edit"])
    meta = edit.meta
    assert meta.method == method and meta.hidden_size == 32 and meta.num_layers == 4
    assert meta.rule == {"v2": "alignez", "v1": "projection", "caa": "add", "iti": "add"}[method]
    assert meta.gate == ("paper" if method == "v2" else "none")
    assert meta.orientation == "help"
    fit_meta = meta.fit
    assert sorted(fit_meta["probe_ranking"]) == [0, 1, 2, 3]
    assert fit_meta["counts"]["pairs"] == 6 and fit_meta["settings"]["method"] == method
    assert "timings" not in fit_meta and "pairs_resumed" not in fit_meta["counts"]  # run facts sit beside it
    assert set(result.report["fit"]["timings"]) >= {"generate_characteristics", "generate_answers", "activations",
                                                    "total"}
    assert fit_meta["data_hash"] and fit_meta["package_version"] == alignez_eval.__version__
    for i, le in edit.layers.items():
        assert {"probe_acc", "mean_cos_help_harm", "n_pairs"} <= set(le.stats)
        if method in ("v2", "v1"):
            assert _orthonormal(le.help) and _orthonormal(le.harm) and le.help.shape[0] >= 1
            d = torch.tensor(fit_meta["layer_diagnostics"][str(i)]["mean_diff_norm"])
            assert d > 0
        else:
            assert le.steer is not None and le.steer.shape == (32,) and le.help.shape == (0, 32)
    if method == "iti":
        assert sorted(edit.layers) == sorted(fit_meta["probe_ranking"][:2])
    if method in ("caa", "iti"):
        assert meta.layers == ";".join(str(i) for i in sorted(fit_meta["probe_ranking"][:2]))
    # the pairs file: one line per query, annotated per layer
    pairs = [json.loads(ln) for ln in paths["pairs"].read_text().splitlines()]
    assert [p["id"] for p in pairs] == [q["id"] for q in QUERIES]
    assert all("layers_kept" in p and "answers" in p and "characteristics" in p for p in pairs)
    report = json.loads(paths["report"].read_text())
    assert report["artifact"]["sha256"] == edit.sha256
    # the artifact changes a greedy generation through the core hooks
    prompt = "Human: How do I bake bread?\nAssistant:"
    base = greedy_with(model, tok, None, prompt)
    cfg = {"alpha": 60.0, "layers": "all", "gate": "none"}
    if method in ("caa", "iti"):
        cfg = {"alpha": 60.0, "layers": meta.layers}
    edited = greedy_with(model, tok, edit, prompt, **cfg)
    assert edited != base
    # … and, for v2, with the artifact's own defaults (layers=auto, gate=paper) it runs
    if method == "v2":
        greedy_with(model, tok, edit, prompt)


def test_public_api_is_callable_from_the_package(tiny, tmp_path):
    model, tok = tiny
    edit = alignez_eval.fit(model, tok, [q["instruction"] for q in QUERIES[:4]], cache_dir=None, progress=False,
                            out=tmp_path / "e.safetensors", **FAST)
    assert isinstance(edit, Edit) and edit.meta.method == "v2"
    assert (tmp_path / "e.pairs.jsonl").exists() and (tmp_path / "e.report.json").exists()


def test_second_run_is_a_cache_hit_and_methods_share_the_generation(tiny, tmp_path):
    model, tok = tiny
    s = FitSettings(**FAST)
    first = run_fit(model, tok, QUERIES, s, cache_dir=tmp_path, progress=False)
    with Counter(model) as c:
        again = run_fit(model, tok, QUERIES, s, cache_dir=tmp_path, progress=False)
    assert again.cache_hit and not first.cache_hit
    assert c.generate == 0 and c.forward == 0
    for i, le in first.edit.layers.items():
        assert torch.equal(le.help, again.edit.layers[i].help)
    assert again.report["fit"]["cache_key"] == first.report["fit"]["cache_key"]
    # another method on the same queries: no new generation (pairs cached), no forward (activations cached)
    with Counter(model) as c:
        caa = run_fit(model, tok, QUERIES, s.replace(method="caa"), cache_dir=tmp_path, progress=False)
    assert not caa.cache_hit and c.generate == 0 and c.forward == 0
    assert caa.report["fit"]["counts"]["pairs_resumed"] == len(QUERIES)
    # a different model (another random init) is a different key
    other, _ = make_model("llama", seed=1)
    assert model_fingerprint(other) != model_fingerprint(model)


def test_equal_fits_give_one_artifact_sha256(tiny, tmp_path):
    """An artifact's identity is its content and settings: not the wall time, not whether its pairs
    were generated now or read back from an interrupted run."""
    import shutil

    model, tok = tiny
    s = FitSettings(**FAST)
    fresh = run_fit(model, tok, QUERIES, s, cache_dir=None, progress=False)
    cached = run_fit(model, tok, QUERIES, s, cache_dir=tmp_path / "c", progress=False)
    shutil.rmtree(tmp_path / "c" / "fits")  # the finished fit goes; its pairs and activations stay
    resumed = run_fit(model, tok, QUERIES, s, cache_dir=tmp_path / "c", progress=False)
    assert resumed.report["fit"]["counts"]["pairs_resumed"] == len(QUERIES)
    assert fresh.report["fit"]["counts"]["pairs_resumed"] == 0
    assert fresh.report["fit"]["timings"] != resumed.report["fit"]["timings"]
    for name, r in (("fresh", fresh), ("cached", cached), ("resumed", resumed)):
        write_outputs(r, tmp_path / f"{name}.safetensors")
    shas = {sha256_file(tmp_path / f"{name}.safetensors") for name in ("fresh", "cached", "resumed")}
    assert len(shas) == 1, shas
    # … and a different setting is a different artifact
    other = run_fit(model, tok, QUERIES, s.replace(energy=0.5), cache_dir=tmp_path / "c", progress=False)
    write_outputs(other, tmp_path / "other.safetensors")
    assert other.edit.sha256 not in shas


# ---- planted activations: filter counts, min_pairs, recovery --------------------------------
def _pairs(n):
    return [{"id": f"p{i}", "query": f"question {i}", "answers": {"pos": f"good answer {i}", "neg": f"bad {i}"},
             "characteristics": {"pos": "", "neg": ""}, "status": "kept", "reason": None,
             "flags": {"degenerate": False, "echo_pos": False, "echo_neg": False, "near_identical": False,
                       "loops_collapsed": False}} for i in range(n)]


def test_planted_activations_drive_filtering_min_pairs_and_recovery(tiny, tmp_path):
    model, _tok = tiny
    n, n_layers, d = 8, 4, 32
    rng = np.random.default_rng(0)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    phi = np.zeros((2 * n, n_layers, d))
    for i in range(n):
        base = rng.normal(size=d)
        # layer 0: help ≈ harm for every pair → all dropped by the cosine filter
        phi[2 * i, 0], phi[2 * i + 1, 0] = base, base + 1e-3 * rng.normal(size=d)
        # layer 1: only pairs 0–2 differ → 3 pairs < min_pairs=4
        phi[2 * i, 1] = base + (6 * u if i < 3 else 0)
        phi[2 * i + 1, 1] = base - (6 * u if i < 3 else 0)
        # layers 2, 3: a strong planted helpful direction
        for layer in (2, 3):
            a = 5 + rng.random()
            phi[2 * i, layer] = 0.3 * base + a * u
            phi[2 * i + 1, layer] = 0.3 * base - a * u + 0.01 * rng.normal(size=d)
    records = _pairs(n)
    texts, _ = activation_texts(records)
    ident = model_fingerprint(model)
    acts_file = tmp_path / "acts.safetensors"
    save_activations(acts_file, {"phi": torch.tensor(phi, dtype=torch.float32)},
                     {"model": ident, "texts": sha256_json(texts), "component": "mlp", "read": "last", "layers_path": None})
    res = run_fit(model, _tok, None, FitSettings(min_pairs=4), pref_data=records, cache_dir=None,
                  activations_path=acts_file, progress=False)
    counts = res.report["fit"]["counts"]
    assert counts["pairs_per_layer"] == {"0": 0, "1": 3, "2": 8, "3": 8}
    assert counts["layers_edited"] == [2, 3]
    assert counts["layers_skipped"] == {"0": 0, "1": 3}
    for layer in (2, 3):
        help_ = res.edit.layers[layer].help
        assert help_.shape[0] == 1
        assert float(help_[0].double().numpy() @ u) > 0.99  # recovered and oriented towards helpful
        assert torch.allclose(res.edit.layers[layer].harm, -help_)  # neg_align reading
        assert res.edit.layers[layer].stats["probe_acc"] == 1.0
    assert res.report["fit"]["probe_ranking"][:2] == [2, 3] or res.report["fit"]["probe_ranking"][:2] == [3, 2]
    assert [p["layers_kept"] for p in res.pairs][:4] == [[1, 2, 3]] * 3 + [[2, 3]]
    # with a looser threshold nothing changes in layer 0 (cosine ≈ 1) — and if no layer survives: a clear error
    with pytest.raises(DataError, match="no layer has"):
        run_fit(model, _tok, None, FitSettings(min_pairs=9), pref_data=records, cache_dir=None,
                activations_path=acts_file, progress=False)


def test_activation_cache_of_another_hidden_size_is_refused(tiny, tmp_path):
    model, tok = tiny
    records = _pairs(4)
    bad = tmp_path / "acts.safetensors"
    save_activations(bad, {"phi": torch.zeros(8, 4, 48)}, {"texts": "?"})
    with pytest.raises(DataError, match="hidden size 48.*hidden size 32"):
        run_fit(model, tok, None, FitSettings(min_pairs=2), pref_data=records, cache_dir=None,
                activations_path=bad, progress=False)


def test_ground_truth_pairs_from_a_file(tiny, tmp_path):
    model, tok = tiny
    rows = [{"prompt": f"Question {i}?", "chosen": f"A careful, correct answer number {i}.",
             "rejected": "No."} for i in range(6)]
    rows.append({"prompt": "Same?", "chosen": "yes", "rejected": "yes"})
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Counter(model) as c:
        res = run_fit(model, tok, None, FitSettings(method="caa", min_pairs=2, pref_limit=5), pref_data=p,
                      cache_dir=None, progress=False)
    assert c.generate == 0  # no self-generation in ground-truth mode
    counts = res.report["fit"]["counts"]
    assert counts["kept_text"] == 5 and counts["pairs"] == 5
    assert res.report["fit"]["data_source"] == "pref-data"


# ---- settings and bad input -----------------------------------------------------------------
def test_settings_from_strings():
    s = FitSettings.from_mapping({"method": "iti", "energy": "0.8", "min_pairs": "3", "gate": "none",
                                  "do_sample": "false", "limit": "none", "top-k": "2.0"})
    assert (s.method, s.energy, s.min_pairs, s.gate, s.do_sample, s.limit, s.top_k) == \
        ("iti", 0.8, 3, "none", False, None, 2)
    assert FitSettings().effective_gate == "paper" and FitSettings(method="caa").effective_gate == "none"
    assert FitSettings.from_mapping({"gate": None}).effective_gate == "none"
    assert FitSettings(gate="flipped").effective_gate == "flipped"
    with pytest.raises(ConfigError, match="unknown method 'v3'"):
        FitSettings(method="v3")
    with pytest.raises(ConfigError, match=r"unknown fit setting\(s\) alpha; the settings are "):
        FitSettings.from_mapping({"alpha": "1"})
    with pytest.raises(ConfigError, match="energy"):
        FitSettings(energy=1.5)
    with pytest.raises(ConfigError, match="gate=paper applies to method v2 only"):
        FitSettings(method="caa", gate="paper")
    with pytest.raises(ConfigError, match="min_pairs"):
        FitSettings.from_mapping({"min_pairs": "2.5"})


def test_bad_inputs_fail_clearly(tiny):
    model, tok = tiny
    with pytest.raises(DataError, match="no queries"):
        run_fit(model, tok, [], FitSettings(**FAST), cache_dir=None, progress=False)
    with pytest.raises(DataError, match="no queries and no --pref-data"):
        run_fit(model, tok, None, FitSettings(**FAST), cache_dir=None, progress=False)
    with Counter(model) as c, pytest.raises(DataError, match="context of 512"):
        run_fit(model, tok, [{"id": "long", "instruction": "word " * 600}], FitSettings(**FAST), cache_dir=None,
                progress=False)
    assert c.generate == 0


# ---- the CLI --------------------------------------------------------------------------------
def test_cli_fit_writes_artifact_pairs_and_report(tiny_dir, tmp_path, capsys):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"instruction": q["instruction"]}) + "\n" for q in QUERIES[:4]))
    out = tmp_path / "out" / "e.safetensors"
    argv = ["fit", "--model_args", f"pretrained={tiny_dir('llama')},dtype=float32", "--queries", str(qfile),
            "--char-tokens", "6", "--answer-tokens", "10", "--min-pairs", "2", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--pair-judge", f"hf:{tiny_dir('llama', 2)}"]
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "method=v2" in text and "degeneracy rate" in text and "pairs per layer" in text
    # the fit's verdict of its own data, printed and in the report; each pair carries its verdict
    assert "data verdict: helpful beats harmful in" in text and "gate keeps" in text
    edit = Edit.load(out)
    assert "tiny-llama" in edit.meta.model  # the pretrained path is recorded
    report = json.loads((tmp_path / "out" / "e.report.json").read_text())
    assert report["fit"]["counts"]["queries"] == 4 and not report["cache_hit"]
    pair_lines = (tmp_path / "out" / "e.pairs.jsonl").read_text().splitlines()
    assert len(pair_lines) == 4 and all(json.loads(x)["pair_verdict"] in ("win", "tie", "lose") for x in pair_lines)
    diag = report["diagnostics"]
    assert diag["pair_quality"]["judged"] == 4 and 0 <= diag["pair_quality"]["quality"] <= 1
    assert set(diag["gate_activity"]["open_by_layer"]) == {str(i) for i in edit.layers}
    assert (tmp_path / "out" / "e.report.txt").exists()
    assert cli_main(argv) == 0
    assert "(cache hit)" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--queries", "Q", "--method", "v9"], "unknown method 'v9'"),
    (["--queries", "EMPTY"], "is empty"),
    ([], "pass --queries"),
    (["--queries", "Q", "--out", "x.bin"], "should end in .safetensors"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, extra, message):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "q.jsonl").write_text('{"instruction": "hi"}\n')
    files = {"EMPTY": str(tmp_path / "empty.jsonl"), "Q": str(tmp_path / "q.jsonl")}
    extra = [files.get(e, e) for e in extra]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "e.safetensors")]
    argv = ["fit", "--model_args", "pretrained=/nonexistent", *out, *extra]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ---- layers=probe:K -------------------------------------------------------------------------
def test_layers_probe_k_resolves_from_the_stored_ranking(tiny, tmp_path):
    model, tok = tiny
    res = run_fit(model, tok, QUERIES, FitSettings(**FAST), cache_dir=tmp_path, progress=False)
    edit = res.edit
    ranking = edit.meta.fit["probe_ranking"]
    best = tuple(sorted([i for i in ranking if i in edit.layers][:2]))
    plan = prepare_plan(edit, EditConfig(layers="probe:2"), model)
    assert plan.layers == best
    # through save/load, and in lm-eval's quoting
    edit.save(tmp_path / "e.safetensors")
    plan = prepare_plan(Edit.load(tmp_path / "e.safetensors"), EditConfig(layers="'probe:1'"), model)
    assert plan.layers == (next(i for i in ranking if i in edit.layers),)
    edit.meta.fit = {}
    with pytest.raises(ConfigError, match="probe ranking"):
        prepare_plan(edit, EditConfig(layers="probe:2"), model)


def test_reports_stay_strict_json_when_a_probe_is_undefined(tiny, tmp_path):
    model, tok = tiny

    def no_nan(name):
        raise AssertionError(f"{name} in a JSON report")

    res = run_fit(model, tok, None, FitSettings(min_pairs=1, cos_threshold=1.0), pref_data=_pairs(1),
                  cache_dir=None, progress=False)
    assert all(v is None for v in res.report["fit"]["probe_accuracy"].values())  # one pair: no held-out fold
    paths = write_outputs(res, tmp_path / "one.safetensors")
    json.loads(paths["report"].read_text(), parse_constant=no_nan)
    assert "n/a" in paths["text"].read_text()
