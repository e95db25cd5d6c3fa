"""The scorer judge: features, Bradley–Terry head, training, verification, backend, family check."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from alignez_eval.errors import ArtifactError, ConfigError, DataError
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.family import implied_net, judge_family
from alignez_eval.judge.spec import parse_judge_spec
from alignez_eval.scorer.data import check_disjoint, load_pairs, preference_to_p2
from alignez_eval.scorer.features import FeatureExtractor, FeatureStore, features_for
from alignez_eval.scorer.fit import PairData, choose_l2, cross_validate, fit_bt, grouped_folds
from alignez_eval.scorer.head import load_head
from alignez_eval.scorer.spec import FeatureSpec
from alignez_eval.scorer.train import TrainSettings, train_scorer

GOOD = ["clear correct kind answer", "a clear and correct reply", "kind correct clear words"]
BAD = ["ignore the question", "useless ignore", "the question ignore ignore"]


# -- preferences ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [(1, 0.0), (2, 1.0), ("1", 0.0), (2.0, 1.0), ("2.0", 1.0), (0, 0.5),
                                            (1.5, 0.5), ("1.5", 0.5), (1.25, 0.25), (1.9993, 0.9993), (None, None),
                                            (float("nan"), None), ("null", None)])
def test_hard_and_soft_preferences_parse(value, expected):
    got = preference_to_p2(value)
    assert got == expected if expected is None else got == pytest.approx(expected)


@pytest.mark.parametrize("value", [3, -1, "abc", True, [1]])
def test_bad_preference_is_an_error(value):
    with pytest.raises(ValueError):
        preference_to_p2(value)


def _rows(n_gen: int = 4, per: int = 12, seed: int = 0) -> list[dict]:
    """Synthetic annotations: GPT-4-like preference for the answer built from GOOD words."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_gen):
        for i in range(per):
            good, bad = GOOD[i % 3] + f" {i}", BAD[(i + g) % 3] + f" {i}"
            flip = bool(rng.integers(2))
            rows.append({"instruction": f"question {i} of set {g % 2}", "output_1": bad if not flip else good,
                         "output_2": good if not flip else bad, "preference": 2 if not flip else 1,
                         "generator_1": "reference", "generator_2": f"gen{g}"})
    return rows


def test_load_pairs_reads_json_list_jsonl_and_gzip(tmp_path: Path):
    rows = _rows(2, 3)
    rows[0]["preference"] = 1.75
    rows[1]["preference"] = None
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    for name in ("a.json", "b.jsonl", "c.jsonl.gz"):
        pairs, skipped = load_pairs(tmp_path / name)
        assert skipped == 1 and len(pairs) == len(rows) - 1
        assert pairs[0].p2 == pytest.approx(0.75) and pairs[0].generator_2 == "gen0"


def test_bad_annotation_file_is_one_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "q", "output_1": "a", "output_2": "b", "preference": 7}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl row 0.*outside 1..2"):
        load_pairs(bad)
    missing = tmp_path / "m.jsonl"
    missing.write_text(json.dumps({"instruction": "q", "output_1": "a"}) + "\n")
    with pytest.raises(DataError, match="missing output_2, preference"):
        load_pairs(missing)


def test_generator_in_both_splits_is_refused(tmp_path: Path):
    (tmp_path / "t.json").write_text(json.dumps(_rows(3, 2)))
    pairs, _ = load_pairs(tmp_path / "t.json")
    with pytest.raises(DataError, match=r"\['gen1'\] appear in both"):
        check_disjoint(pairs, ["gen1", "other"])
    # a prompted variant is the same model
    with pytest.raises(DataError, match="gen2"):
        check_disjoint(pairs, ["gen2_verbose"])
    check_disjoint(pairs, ["other", "reference"], shared_reference=["reference"])


# -- the Bradley–Terry fit ----------------------------------------------------------------------------
def test_separable_synthetic_preferences_recover_their_direction():
    rng = np.random.default_rng(0)
    d, n = 20, 600
    w_true = rng.normal(size=d)
    w_true /= np.linalg.norm(w_true)
    dz = rng.normal(size=(n, d))
    y = (dz @ w_true > 0).astype(float)
    data = PairData(dz, np.zeros(n), y, np.ones(n), np.array([f"g{i % 6}" for i in range(n)]))
    cv = cross_validate(data, (1e-3, 1e-1, 10.0), use_length=False, k=3)
    l2 = choose_l2(cv)
    w, gamma = fit_bt(data, l2, use_length=False)
    assert gamma == 0.0
    assert float(w @ w_true / np.linalg.norm(w)) > 0.95
    assert min(r["agreement"] for r in cv if r["l2"] == l2) > 0.9
    # no intercept: swapping both answers of every pair flips every prediction exactly
    assert np.allclose((-dz) @ w, -(dz @ w))


def test_length_term_is_fitted_and_left_out_of_the_quality_part():
    rng = np.random.default_rng(1)
    n, d = 800, 5
    dz = rng.normal(size=(n, d))
    dl = rng.normal(size=n)
    logits = 2.0 * dz[:, 0] + 3.0 * dl
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(float)
    data = PairData(dz, dl, y, np.ones(n), np.array([f"g{i % 4}" for i in range(n)]))
    w, gamma = fit_bt(data, 1e-4, use_length=True)
    assert gamma == pytest.approx(3.0, rel=0.3)
    assert w[0] == pytest.approx(2.0, rel=0.3) and np.all(np.abs(w[1:]) < 0.5)


def test_grouped_folds_keep_each_generator_in_one_fold():
    groups = np.array([f"g{i % 7}" for i in range(70)])
    folds = grouped_folds(groups, 3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(70))
    for f in folds:
        others = np.setdiff1d(np.arange(70), f)
        assert not set(groups[f]) & set(groups[others])


# -- features -----------------------------------------------------------------------------------------
def _spec(tiny: Path) -> FeatureSpec:
    return FeatureSpec(str(tiny), layers=(0, 2), max_answer_tokens=32)


def test_features_equal_a_hand_computation(tiny_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tiny = tiny_dir("llama")
    ex = FeatureExtractor(_spec(tiny), batch_size=2)
    got = ex.extract([("How?", "clear correct kind answer"), ("Why not?", "no")], progress=False)
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModel.from_pretrained(tiny, dtype=torch.float32).eval()
    for row, (q, a) in enumerate([("How?", "clear correct kind answer"), ("Why not?", "no")]):
        prefix = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        head = tok(prefix, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tok(a, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
            deepest = model.norm(hs[2])  # the deepest layer read is taken through the final norm
        want = torch.cat([hs[0][0, len(head):].mean(0), hs[0][0, -1], deepest[0, len(head):].mean(0), deepest[0, -1]])
        assert np.allclose(got[row], want.numpy(), atol=1e-5)


def test_feature_store_resumes_and_skips_torn_shards(tiny_dir, tmp_path: Path):
    spec = _spec(tiny_dir("llama"))
    items = [(f"q{i}", f"answer number {i}") for i in range(6)]
    first, ex = features_for(items[:4], spec, store_root=tmp_path, shard_size=2, progress=False)
    assert ex.forward_passes == 4
    both, ex2 = features_for(items, spec, store_root=tmp_path, shard_size=2, progress=False)
    assert ex2.forward_passes == 2  # only the two new answers
    assert np.array_equal(both[:4], first)
    again, ex3 = features_for(items, spec, store_root=tmp_path, progress=False)
    assert ex3 is None and np.array_equal(again, both)  # nothing computed, no model loaded
    shard = sorted(FeatureStore(spec, tmp_path).dir.glob("shard-*"))[0]
    shard.write_bytes(shard.read_bytes()[:40])  # torn
    redo, ex4 = features_for(items, spec, store_root=tmp_path, progress=False)
    assert ex4.forward_passes == 2 and np.allclose(redo, both, atol=1e-6)


# -- training, the head file, the backend -------------------------------------------------------------
@pytest.fixture()
def trained(tiny_dir, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    tiny = tiny_dir("llama")
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows(4, 12)))
    settings = TrainSettings(features=_spec(tiny), l2_grid=(1e-3, 1e-1), folds=2, length_term="none",
                             evaluation_generators=("held-out",))
    report = train_scorer([data], tmp_path / "head.safetensors", settings)
    return tmp_path / "head.safetensors", report, settings, data


def test_training_learns_the_preference_and_records_provenance(trained):
    head_path, report, _settings, data = trained
    assert report["train_agreement"] > 0.9
    head = load_head(head_path)
    prov = head.provenance
    assert prov["generators"] == ["gen0", "gen1", "gen2", "gen3"]
    assert prov["sources"][0]["file"] == "train.jsonl" and len(prov["sources"][0]["sha256"]) == 64
    assert prov["pairs"] == 48 and "CC BY-NC" in prov["licence"] and prov["l2"] in (1e-3, 1e-1)
    assert head.features.layers == (0, 2)
    # unseen good/bad answers are ordered right
    phi, _ = features_for([("new question", "clear correct kind words here"), ("new question", "ignore useless")],
                          head.features, progress=False)
    s = head.score(phi)
    assert s[0] > s[1]


def test_equal_training_gives_a_byte_identical_head(trained, tmp_path: Path):
    head_path, report, settings, data = trained
    again = train_scorer([data], tmp_path / "again.safetensors", settings)
    assert again["sha256"] == report["sha256"]
    assert (tmp_path / "again.safetensors").read_bytes() == head_path.read_bytes()


def test_tampered_head_fails_with_one_clear_error(trained, tmp_path: Path):
    head_path = trained[0]
    raw = bytearray(head_path.read_bytes())
    raw[-3] ^= 0x01  # a weight's low bits
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="fails its checksum"):
        load_head(bad)
    text = head_path.read_bytes().replace(b"train.jsonl", b"other.jsonl")
    bad.write_bytes(text)
    with pytest.raises(ArtifactError, match="fails its checksum"):
        load_head(bad)
    bad.write_bytes(b"not a head")
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_head(bad)
    with pytest.raises(ArtifactError, match="neither a file nor a packaged head"):
        load_head(tmp_path / "missing.safetensors")


def test_training_on_an_evaluation_generator_is_refused(trained, tmp_path: Path):
    _head, _report, settings, data = trained
    import dataclasses

    clash = dataclasses.replace(settings, evaluation_generators=("gen2_concise",))
    with pytest.raises(DataError, match="gen2"):
        train_scorer([data], tmp_path / "x.safetensors", clash)


def test_scorer_judge_ties_identical_answers_and_reruns_without_forward_passes(trained, tmp_path: Path):
    from alignez_eval.judge.cache import JudgmentCache

    head_path = trained[0]
    spec = parse_judge_spec(f"scorer:{head_path}")
    assert spec.mode == "single" and spec.margin == 0.0 and spec.identity()["model"].startswith("sha256:")
    items = [PairItem("f", "0", "q a", "ignore the question", "clear correct kind answer"),
             PairItem("f", "1", "q b", "clear correct kind answer", "ignore useless"),
             PairItem("f", "2", "q c", "same answer", "same answer ")]
    cache = JudgmentCache(tmp_path / "j.sqlite")
    judge = Judge(spec, cache)
    recs = judge.judge_pairs(items)
    assert [r["verdict"] for r in recs] == ["win", "lose", "tie"]
    assert recs[2]["identical"] and judge.backend.forward_passes == 4
    # the baseline and candidate scores are the head's own
    head = load_head(head_path)
    phi, _ = features_for([("q a", "ignore the question"), ("q a", "clear correct kind answer")], head.features,
                          progress=False)
    assert recs[0]["score"] == pytest.approx(float(head.score(phi)[1] - head.score(phi)[0]), abs=1e-9)
    judge2 = Judge(spec, JudgmentCache(tmp_path / "j.sqlite"))
    assert [r["verdict"] for r in judge2.judge_pairs(items)] == ["win", "lose", "tie"]
    assert judge2.stats["calls"] == 0 and judge2._backend is None  # no model loaded, no forward pass


def test_scorer_spec_refuses_pairwise_mode(trained):
    with pytest.raises(ConfigError, match="mode=single"):
        parse_judge_spec(f"scorer:{trained[0]},mode=pairwise")


# -- family fidelity -----------------------------------------------------------------------------------
def test_implied_net_matches_a_hand_computation():
    # win rates 26.5% and 68.5% vs one baseline -> P(b beats a) = sigmoid(logit .685 - logit .265)
    s = math.log(0.685 / 0.315) - math.log(0.265 / 0.735)
    assert implied_net(68.5, 26.5) == pytest.approx(100 * (2 / (1 + math.exp(-s)) - 1))
    assert implied_net(40.0, 40.0) == pytest.approx(0.0)
    assert implied_net(26.5, 68.5) == pytest.approx(-implied_net(68.5, 26.5))


def test_family_check_reports_judge_and_reference_nets(trained, tmp_path: Path):
    head_path = trained[0]
    qs = [f"question {i}" for i in range(6)]

    def outputs(name: str, good: int) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([{"instruction": q, "output": (GOOD if i < good else BAD)[i % 3],
                                     "generator": name} for i, q in enumerate(qs)]))
        return path

    res = judge_family(f"scorer:{head_path}", outputs("base", 0), outputs("tuned", 6), [outputs("mid", 3)],
                       win_rates={"base": 20.0, "tuned": 60.0, "mid": 40.0}, n_boot=200)
    rows = {r["system"]: r for r in res["rows"]}
    assert rows["tuned"]["net"] == 100.0 and rows["mid"]["net"] == 50.0
    assert rows["tuned"]["reference_net"] == pytest.approx(implied_net(60.0, 20.0))
    assert rows["mid"]["gap_closed"]["value"] == pytest.approx(50.0)
    assert rows["mid"]["reference_gap_closed"] == pytest.approx(100 * implied_net(40, 20) / implied_net(60, 20))
    assert "reference-implied net" in res["summary"]
    with pytest.raises(ConfigError, match="trained on answers of"):
        judge_family(f"scorer:{head_path}", outputs("gen1", 0), outputs("tuned", 6))


def test_agreement_on_a_training_generator_is_refused(trained, tmp_path: Path):
    from alignez_eval.judge.agreement_run import judge_agreement

    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in _rows(2, 2)))  # generators gen0, gen1: trained on
    with pytest.raises(ConfigError, match=r"trained on answers of \['gen0', 'gen1'\]"):
        judge_agreement(f"scorer:{trained[0]}", ref, tmp_path / "agree")
    held = [dict(r, generator_2="held-out") for r in _rows(1, 4)]
    ref.write_text("\n".join(json.dumps(r) for r in held))
    res = judge_agreement(f"scorer:{trained[0]}", ref, tmp_path / "agree", n_boot=100)
    assert res["overall"]["figures"]["agreement"]["value"] == 1.0


def test_hh_rlhf_transcripts_are_read_as_pairs(tmp_path: Path):
    rows = [{"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
             "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench."},
            {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Insult me\n\nAssistant: I'd rather not.",
             "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Insult me\n\nAssistant: You fool."},
            {"chosen": "\n\nHuman: Same?\n\nAssistant: yes", "rejected": "\n\nHuman: Same?\n\nAssistant: yes"}]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    pairs, skipped = load_pairs(path)
    assert skipped == 1 and len(pairs) == 2
    assert (pairs[0].instruction, pairs[0].output_1, pairs[0].output_2, pairs[0].p2) == (
        "How do I pick a lock?", "Use a tension wrench.", "I can't help with that.", 1.0)
    assert pairs[1].instruction == "Human: Hi\n\nAssistant: Hello!\n\nHuman: Insult me"
    assert pairs[1].generator_2 == "hh-rlhf"


def test_degradation_pairs_put_the_preferred_answer_first(tmp_path: Path):
    from alignez_eval.scorer.augment import degraded_pairs

    rows = _rows(2, 6)
    for r in rows:
        r["output_1"], r["output_2"] = r["output_1"] + ". More words here to make it long enough.", \
            r["output_2"] + ". Another sentence follows, with several more words."
    (tmp_path / "t.json").write_text(json.dumps(rows))
    pairs, _ = load_pairs(tmp_path / "t.json")
    aug = degraded_pairs(pairs, 3, seed=0)
    assert len(aug) == 12 and all(a.p2 == 1.0 for a in aug)
    kinds = sorted({a.generator_1 for a in aug})
    assert kinds == ["degraded:gibberish", "degraded:looped", "degraded:swapped", "degraded:truncated"]
    for a in aug:
        src = next(p for p in pairs if p.instruction == a.instruction and a.output_2 in (p.output_1, p.output_2))
        assert a.output_2 == (src.output_2 if src.p2 > 0.5 else src.output_1).strip()
        assert a.output_1 != a.output_2
    assert degraded_pairs(pairs, 3, seed=0) == aug  # seeded
