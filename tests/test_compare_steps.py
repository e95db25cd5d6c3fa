"""The step cache behind compare/sweep: keys, skips, atomicity, partial directories, manifest log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignez_eval.errors import ConfigError
from alignez_eval.hashing import canonical_json
from alignez_eval.pipeline.identity import model_identity, parse_model_args, queries_fingerprint
from alignez_eval.pipeline.steps import STEP_FILE, StepCache


def _writer(calls: list[str], text: str):
    def produce(out: Path) -> dict:
        calls.append(text)
        (out / "a.txt").write_text(text)
        return {"chars": len(text)}

    return produce


def test_same_inputs_skip_and_changed_inputs_rerun(tmp_path: Path) -> None:
    cache = StepCache(tmp_path)
    calls: list[str] = []
    r1 = cache.run("gen", "base/task", {"model": "m", "limit": 4}, _writer(calls, "x"))
    r2 = cache.run("gen", "base/task", {"limit": 4, "model": "m"}, _writer(calls, "y"))  # key order irrelevant
    assert calls == ["x"] and not r1.skipped and r2.skipped
    assert r2.path == r1.path and (r2.path / "a.txt").read_text() == "x" and r2.meta == {"chars": 1}
    r3 = cache.run("gen", "base/task", {"model": "m", "limit": 5}, _writer(calls, "z"))
    assert calls == ["x", "z"] and r3.path != r1.path and not r3.skipped
    assert cache.ran == ["gen/base/task", "gen/base/task"] and cache.skipped == ["gen/base/task"]
    # a fresh cache object (a second process) sees the same steps
    again = StepCache(tmp_path)
    assert again.run("gen", "base/task", {"model": "m", "limit": 5}, _writer(calls, "w")).skipped
    log = json.loads((tmp_path / "manifest.json").read_text())["log"]
    assert [e["event"] for e in log] == ["ran", "skipped", "ran", "skipped"]
    steps = json.loads((tmp_path / "manifest.json").read_text())["steps"]
    assert {s["inputs"]["limit"] for s in steps.values()} == {4, 5}


def test_versions_are_part_of_the_key(tmp_path: Path) -> None:
    a = StepCache(tmp_path, versions={"alignez-eval": "1"})
    b = StepCache(tmp_path, versions={"alignez-eval": "2"})
    assert a.key("gen", {"x": 1}) != b.key("gen", {"x": 1})


def test_failed_step_leaves_nothing_and_partial_dir_is_rebuilt(tmp_path: Path) -> None:
    cache = StepCache(tmp_path)

    def boom(out: Path) -> dict:
        (out / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.run("fit", "alignez", {"q": 1}, boom)
    assert not list((tmp_path / "fit").iterdir())  # the temp dir is gone, no final dir
    # simulate a directory left by a kill between rename and record: no step.json -> not trusted
    key = cache.key("fit", {"q": 1})
    stale = cache.path_for("fit", "alignez", key)
    stale.mkdir(parents=True)
    (stale / "half.txt").write_text("half")
    calls: list[str] = []
    res = cache.run("fit", "alignez", {"q": 1}, _writer(calls, "ok"))
    assert calls == ["ok"] and not (res.path / "half.txt").exists() and (res.path / STEP_FILE).exists()
    # a step.json of another key (e.g. hand-copied) is not trusted either
    (res.path / STEP_FILE).write_text(json.dumps({"key": "0" * 64}))
    assert cache.lookup("fit", "alignez", {"q": 1}) is None


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})


def test_model_identity_tracks_content_not_location(tmp_path: Path, tiny_dir) -> None:
    import shutil

    src = tiny_dir("llama")
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    assert model_identity(str(src)) == model_identity(str(copy))
    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(cfg))
    assert model_identity(str(src)) != model_identity(str(copy))
    assert model_identity("org/some-model") == {"hub_id": "org/some-model", "revision": "main"}


def test_parse_model_args() -> None:
    assert parse_model_args("pretrained=/m,dtype=bfloat16, alpha=2") == {"pretrained": "/m", "dtype": "bfloat16",
                                                                         "alpha": "2"}
    assert parse_model_args("/some/dir") == {"pretrained": "/some/dir"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_model_args("/a,/b")


def test_queries_fingerprint_sees_text_and_ids() -> None:
    q = [{"id": "1", "instruction": "a"}, {"id": "2", "instruction": "b"}]
    assert queries_fingerprint(q) != queries_fingerprint(q[:1])
    assert queries_fingerprint(q) != queries_fingerprint([{"id": "1", "instruction": "a"},
                                                          {"id": "2", "instruction": "B"}])


def test_same_inputs_under_another_name_are_found_by_key(tmp_path: Path) -> None:
    cache = StepCache(tmp_path)
    calls: list[str] = []
    first = cache.run("gen", "tuned/task", {"model": "m"}, _writer(calls, "x"))
    again = cache.run("gen", "smollm2/task", {"model": "m"}, _writer(calls, "y"))
    assert calls == ["x"] and again.skipped and again.path == first.path


def test_a_missing_or_truncated_output_is_recomputed_and_logged(tmp_path: Path, caplog) -> None:
    cache = StepCache(tmp_path)
    calls: list[str] = []

    def produce(out: Path) -> dict:
        calls.append("run")
        (out / "sub").mkdir()
        (out / "a.txt").write_text("content of a")
        (out / "sub" / "b.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
        return {}

    first = cache.run("gen", "base/task", {"m": 1}, produce)
    recorded = json.loads((first.path / STEP_FILE).read_text())["outputs"]
    assert set(recorded) == {"a.txt", "sub/b.jsonl"}
    assert cache.run("gen", "base/task", {"m": 1}, produce).skipped and calls == ["run"]
    for damage, why in ((lambda p: p.write_bytes(p.read_bytes()[:5]), "does not match its recorded sha256"),
                        (lambda p: p.unlink(), "is missing")):
        for rel in recorded:
            damage(first.path / rel)
            caplog.clear()
            with caplog.at_level("WARNING", logger="alignez_eval.pipeline.steps"):
                res = cache.run("gen", "base/task", {"m": 1}, produce)
            assert not res.skipped and res.path == first.path
            assert f"output {rel} {why}" in caplog.text and "recomputing" in caplog.text
            assert (res.path / "a.txt").read_text() == "content of a"
            assert (res.path / "sub" / "b.jsonl").read_text().count("\n") == 2
    assert len(calls) == 1 + 2 * len(recorded)
    log = json.loads((tmp_path / "manifest.json").read_text())["log"]
    recomputed = [e for e in log if e["event"] == "recomputed"]
    assert len(recomputed) == 4 and all("sha256" in e["reason"] or "missing" in e["reason"] for e in recomputed)


def test_published_steps_get_the_modes_of_a_model_directory(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        res = StepCache(tmp_path).run("fit", "x", {"q": 1}, _writer([], "x"))
    finally:
        os.umask(umask)
    assert res.path.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    assert (res.path / STEP_FILE).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o644
