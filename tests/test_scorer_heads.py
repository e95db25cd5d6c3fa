"""The scorer beyond a linear head: the MLP head, the relevance gate, feature-store export/import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alignez_eval.errors import ArtifactError, DataError
from alignez_eval.scorer.features import (
    FeatureStore,
    export_store,
    features_for,
    import_store,
    store_dirs,
)
from alignez_eval.scorer.fit import PairData, fit_bt
from alignez_eval.scorer.head import ScorerHead, load_head, relevance_penalty
from alignez_eval.scorer.mlp import MLPSettings, PairIndex, fit_mlp, mlp_scores
from alignez_eval.scorer.relevance import RelevanceModel, RelevanceSpec, relevance_for
from alignez_eval.scorer.spec import FeatureSpec
from alignez_eval.scorer.train import TrainSettings, train_scorer


# -- the MLP head ----------------------------------------------------------------------------------
def _xor_pairs(n_answers: int = 600, n_pairs: int = 3000, seed: int = 0) -> tuple[PairIndex, np.ndarray]:
    """Quality = sign(x0 · x1): no linear function of the features orders these answers."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n_answers, 6))
    q = np.sign(Z[:, 0] * Z[:, 1])
    i1, i2 = rng.integers(0, n_answers, n_pairs), rng.integers(0, n_answers, n_pairs)
    keep = q[i1] != q[i2]
    i1, i2 = i1[keep], i2[keep]
    y = (q[i2] > q[i1]).astype(float)
    groups = np.array([f"g{k % 4}" for k in range(len(y))])
    return PairIndex(Z, i1, i2, y, np.ones(len(y)), groups), q


def test_mlp_head_recovers_a_preference_no_linear_head_can():
    data, _q = _xor_pairs()
    test, _ = _xor_pairs(seed=1)
    w_lin, _ = fit_bt(PairData(data.Z[data.i2] - data.Z[data.i1], np.zeros(len(data.y)), data.y,
                               data.weight, data.group), 1e-3, False)
    lin = test.Z @ w_lin
    lin_agree = np.mean((lin[test.i2] - lin[test.i1] > 0) == (test.y > 0.5))
    params = fit_mlp(data, MLPSettings(hidden=32, l2=1e-4, epochs=40, batch_size=64, lr=1e-2))
    s = mlp_scores(test.Z, params)
    mlp_agree = np.mean((s[test.i2] - s[test.i1] > 0) == (test.y > 0.5))
    assert lin_agree < 0.65, lin_agree  # chance, give or take
    assert mlp_agree > 0.9, mlp_agree
    # the head file's score is the trained function, and swapping a pair's answers flips it
    head = ScorerHead(features=FeatureSpec("x", layers=(0,)), w=params["w"], mu=np.zeros(6), sigma=np.ones(6),
                      kind="mlp", mlp={k: params[k] for k in ("W1", "b1", "v")})
    # (W1 held at its float16 storage precision: the same function to ~1e-3 of the scores' spread)
    stored = {**params, "W1": np.asarray(params["W1"]).astype(np.float16).astype(np.float64)}
    assert np.allclose(head.score(test.Z), mlp_scores(test.Z, stored))
    assert np.abs(head.score(test.Z) - s).max() < 1e-3 * s.std()


def test_mlp_fit_is_deterministic():
    data, _ = _xor_pairs(200, 600)
    a = fit_mlp(data, MLPSettings(hidden=8, epochs=3))
    b = fit_mlp(data, MLPSettings(hidden=8, epochs=3))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_an_mlp_head_without_its_tensors_is_refused():
    with pytest.raises(ArtifactError, match="W1, b1, v"):
        ScorerHead(features=FeatureSpec("x", layers=(0,)), w=np.zeros(3), mu=np.zeros(3), sigma=np.ones(3), kind="mlp")
    with pytest.raises(ArtifactError, match="do not fit"):
        ScorerHead(features=FeatureSpec("x", layers=(0,)), w=np.zeros(3), mu=np.zeros(3), sigma=np.ones(3),
                   kind="mlp", mlp={"W1": np.zeros((2, 4)), "b1": np.zeros(2), "v": np.zeros(2)})


def test_relevance_penalty_is_one_sided():
    r = np.array([-1.0, 0.0, 0.2, 3.0])
    assert np.allclose(relevance_penalty(r, 2.0, 0.2), [2.4, 0.4, 0.0, 0.0])


# -- training end to end on a tiny model -----------------------------------------------------------
WORDS = ["bread", "fox", "water", "dog", "flour", "yeast", "salt", "quick", "brown", "lazy", "bake", "jumps"]


def _rows(n_gen: int = 4, per: int = 12, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_gen):
        for i in range(per):
            w = WORDS[(i + g) % len(WORDS)]
            good, bad = f"{w} is clear and correct {i}", f"ignore the question {i} {g}"
            flip = bool(rng.integers(2))
            rows.append({"instruction": f"tell me about {w}", "output_1": good if flip else bad,
                         "output_2": bad if flip else good, "preference": 1 if flip else 2,
                         "generator_1": "reference", "generator_2": f"gen{g}"})
    return rows


def _spec(tiny: Path) -> FeatureSpec:
    return FeatureSpec(str(tiny), layers=(0, 2), max_answer_tokens=32)


def test_exported_then_imported_store_gives_a_byte_identical_head(tiny_dir, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows()))
    settings = TrainSettings(features=_spec(tiny_dir("llama")), l2_grid=(1e-2,), folds=2, length_term="none")
    first = train_scorer([data], tmp_path / "a.safetensors", settings, store_root=tmp_path / "store-a")
    (store,) = store_dirs(tmp_path / "store-a")
    n = export_store(store, tmp_path / "features.safetensors")
    assert n == first["answers"]
    where, added = import_store(tmp_path / "features.safetensors", tmp_path / "store-b")
    assert added == n and where.name == store.name
    assert import_store(tmp_path / "features.safetensors", tmp_path / "store-b")[1] == 0  # nothing twice

    class NoModel:  # a forward pass would be a failure: every vector must come from the import
        def extract(self, *a, **k):
            raise AssertionError("features were recomputed")

    second = train_scorer([data], tmp_path / "b.safetensors", settings, store_root=tmp_path / "store-b",
                          extractor=NoModel())  # type: ignore[arg-type]
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert second["sha256"] == first["sha256"]


def test_a_damaged_export_is_one_clear_error(tiny_dir, tmp_path: Path):
    spec = _spec(tiny_dir("llama"))
    features_for([("q", "an answer"), ("q", "another")], spec, store_root=tmp_path / "s", progress=False)
    export_store(FeatureStore(spec, tmp_path / "s").dir, tmp_path / "x.safetensors")
    raw = bytearray((tmp_path / "x.safetensors").read_bytes())
    raw[-2] ^= 0x01
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="fails its checksum"):
        import_store(tmp_path / "bad.safetensors", tmp_path / "t")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable scorer feature export"):
        import_store(tmp_path / "junk.safetensors", tmp_path / "t")


def test_mlp_and_auto_heads_train_and_load(tiny_dir, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows()))
    base = dict(features=_spec(tiny_dir("llama")), l2_grid=(1e-2,), folds=2, length_term="none",
                mlp_grid=(MLPSettings(hidden=4, epochs=20, lr=1e-2),))
    rep = train_scorer([data], tmp_path / "m.safetensors", TrainSettings(head_kind="mlp", **base))
    head = load_head(tmp_path / "m.safetensors")
    assert head.kind == "mlp" and rep["kind"] == "mlp" and head.mlp["W1"].shape == (4, len(head.w))
    assert head.provenance["mlp_cv"][0]["hidden"] == 4 and rep["train_agreement"] > 0.9
    auto = train_scorer([data], tmp_path / "auto.safetensors", TrainSettings(head_kind="auto", **base))
    best_lin = min(r["log_loss"] for r in auto["cv"])
    assert auto["kind"] == ("mlp" if auto["mlp_cv"][0]["log_loss"] < best_lin else "linear")
    # a tampered MLP weight fails the checksum like any other
    raw = (tmp_path / "m.safetensors").read_bytes()
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "m.safetensors"))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors["W1"][0, 0] += 1.0
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata=meta)
    with pytest.raises(ArtifactError, match="fails its checksum"):
        load_head(tmp_path / "t.safetensors")
    assert raw == (tmp_path / "m.safetensors").read_bytes()


# -- relevance --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama trained for a few seconds to answer with the word its instruction names: the
    answer is predictable from the instruction, so r(original) > r(another instruction's answer)."""
    from tiny import make_model

    model, tok = make_model("llama", seed=1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        texts = []
        for w in rng.choice(WORDS, 16):
            prefix = tok.apply_chat_template([{"role": "user", "content": f"tell me about {w}"}], tokenize=False,
                                             add_generation_prompt=True)
            texts.append(prefix + " ".join([w] * int(rng.integers(3, 12))))
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("copier")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_relevance_equals_a_hand_computation(copier: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = RelevanceSpec(str(copier), max_answer_tokens=16)
    rm = RelevanceModel(spec, batch_size=3)
    items = [("tell me about fox", "fox fox fox"), ("tell me about salt", "a longer answer about salt here")]
    got = rm.compute(items)
    tok = AutoTokenizer.from_pretrained(copier)
    model = AutoModelForCausalLM.from_pretrained(copier, dtype=torch.float32).eval()
    for row, (q, a) in enumerate(items):
        ids = tok(a, add_special_tokens=False)["input_ids"][:16]
        for col, instr in enumerate((q, "")):
            head = tok(tok.apply_chat_template([{"role": "user", "content": instr}], tokenize=False,
                                               add_generation_prompt=True), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([head + ids])).logits[0].float(), -1)
            want = np.mean([float(logp[len(head) + t - 1, ids[t]]) for t in range(len(ids))])
            assert got[row, col] == pytest.approx(want, abs=1e-4)


def test_swapped_answer_loses_under_the_relevance_signal(copier: Path, tmp_path: Path):
    spec = RelevanceSpec(str(copier), max_answer_tokens=16)
    words = WORDS[:8]
    own = [(f"tell me about {w}", f"{w} {w} {w}") for w in words]
    swapped = [(f"tell me about {w}", f"{o} {o} {o}") for w, o in zip(words, words[4:] + words[:4], strict=True)]
    r, model = relevance_for(own + swapped, spec, store_root=tmp_path, progress=False)
    assert np.all(r[: len(own)] > r[len(own):]), r  # each instruction: its own answer above the swapped one
    passes = model.forward_passes
    assert passes == 2 * len(own + swapped)  # with and without the instruction
    again, model2 = relevance_for(own + swapped, spec, store_root=tmp_path, progress=False)
    assert model2 is None and np.allclose(again, r)  # a re-run makes no forward pass
    # a gated head, τ at the lowest on-topic r: equal quality, no on-topic answer is penalised and every
    # off-topic one below τ scores lower
    tau = float(np.min(r[: len(own)]))
    head = ScorerHead(features=FeatureSpec("x", layers=(0,)), w=np.zeros(2), mu=np.zeros(2), sigma=np.ones(2),
                      gate=(1.0, tau), relevance=spec.identity())
    s = head.score(np.zeros((len(r), 2)), relevance=r)
    n = len(own)
    assert np.all(s[:n] == 0) and np.all(s[n:][r[n:] < tau] < 0) and np.sum(r[n:] < tau) >= n // 2
    with pytest.raises(ArtifactError, match="relevance gate"):
        head.score(np.zeros((2, 2)))


def test_a_gated_head_trains_and_judges_an_off_topic_answer_down(copier: Path, tmp_path: Path, monkeypatch):
    """train-scorer with a relevance gate on the copier model: off-topic (swapped) answers lose in the
    synthetic pairs, and the scorer judge reads the gate (relevance computed, then cached)."""
    from alignez_eval.judge.cache import JudgmentCache
    from alignez_eval.judge.engine import Judge, PairItem
    from alignez_eval.judge.spec import parse_judge_spec

    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    rows = []
    for g in range(4):
        for i, w in enumerate(WORDS):
            rows.append({"instruction": f"tell me about {w}", "output_1": f"ignore the question {i} {g}",
                         "output_2": " ".join([w] * (8 + g)), "preference": 2,
                         "generator_1": "reference", "generator_2": f"gen{g}"})
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = FeatureSpec(str(copier), layers=(0, 2), max_answer_tokens=32)
    settings = TrainSettings(features=spec, l2_grid=(1e-2,), folds=2, length_term="none", augment=12,
                             relevance=RelevanceSpec(str(copier), max_answer_tokens=16), relevance_pairs=20)
    report = train_scorer([data], tmp_path / "gated.safetensors", settings)
    gate = report["relevance_gate"]
    assert gate["swapped_pairs"] > 0 and gate["log_loss"] <= gate["log_loss_without"]
    head = load_head(tmp_path / "gated.safetensors")
    assert head.reads_relevance and head.gate == (gate["kappa"], gate["tau"])
    # the synthetic off-topic pairs: the gate turns them the right way round
    from alignez_eval.scorer.augment import degraded_pairs
    from alignez_eval.scorer.data import load_pairs

    swaps = [p for p in degraded_pairs(load_pairs(data)[0], 12, 0) if p.generator_1.endswith(":swapped")]
    items = [(p.instruction, a) for p in swaps for a in (p.output_2, p.output_1)]
    phi, _ = features_for(items, spec, progress=False)
    r, _ = relevance_for(items, settings.relevance, progress=False)
    gated = head.score(phi, relevance=r)
    plain = head.quality(phi)
    won_gated, won_plain = np.mean(gated[0::2] > gated[1::2]), np.mean(plain[0::2] > plain[1::2])
    assert won_gated > won_plain, (won_gated, won_plain)
    # the judge reads the gate: its verdicts are the gated scores' signs, relevance computed once
    judge = Judge(parse_judge_spec(f"scorer:{tmp_path / 'gated.safetensors'}"), JudgmentCache(tmp_path / "j.sqlite"))
    recs = judge.judge_pairs([PairItem("f", str(k), q, good, bad) for k, (q, good, bad)
                              in enumerate((p.instruction, p.output_2, p.output_1) for p in swaps)])
    want = ["tie" if g == b else "lose" if g > b else "win"  # equal after the 32-token cut: a tie
            for x, g, b in zip(recs, gated[0::2], gated[1::2], strict=True)]
    assert [x["verdict"] for x in recs] == want
    assert judge.backend.relevance_model is None  # every relevance value came from the store
