"""Systems from outside this package on one leaderboard: an unedited run made by lm-eval's own
`local-completions` against a real OpenAI-compatible server on loopback, an AlpacaEval
model_outputs.json, and a GGUF control vector applied to the base model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFWriter
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignez_eval.errors import ConfigError
from alignez_eval.pipeline.compare import CompareConfig, run_compare
from alignez_eval.pipeline.generate import task_manager
from alignez_eval.queries import load_queries

TASK = "alignez_embedded"
MAX_NEW = 6


class _Completions(BaseHTTPRequestHandler):
    """POST /v1/completions as OpenAI's legacy completions API answers it: greedy, with stop strings."""

    model: torch.nn.Module
    tok: object
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
        pass

    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        if self.path != "/v1/completions":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for i, prompt in enumerate(prompts):
            ids = self.tok(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                out = self.model.generate(ids, max_new_tokens=int(body.get("max_tokens", 16)), do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
            text = self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            for s in body.get("stop") or []:
                text = text.split(s)[0]
            choices.append({"index": i, "text": text, "finish_reason": "length", "logprobs": None})
        payload = json.dumps({"id": "cmpl-test", "object": "text_completion", "model": body.get("model"),
                              "choices": choices, "usage": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server(tiny_dir):
    path = tiny_dir("llama")
    handler = type("H", (_Completions,), {"model": AutoModelForCausalLM.from_pretrained(path).eval(),
                                          "tok": AutoTokenizer.from_pretrained(path), "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/completions", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _served_run(url: str, out: Path) -> Path:
    """lm-eval's own local-completions model against the server: the unedited base served elsewhere."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    results = simple_evaluate(model="local-completions",
                              model_args=f"base_url={url},model=tiny,tokenizer_backend=None,"
                                         "tokenized_requests=False,max_retries=1,num_concurrent=1",
                              tasks=[f"{TASK}_base"], log_samples=True, evaluation_tracker=tracker,
                              gen_kwargs=f"max_gen_toks={MAX_NEW}", task_manager=task_manager((f"{TASK}_base",), ()),
                              bootstrap_iters=0)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    tracker.save_results_samples(task_name=f"{TASK}_base", samples=samples[f"{TASK}_base"])
    return out


def _control_vector(path: Path, d: int) -> Path:
    w = GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_uint32("controlvector.layer_count", 2)
    g = np.random.default_rng(0)
    for layer in (1, 2):
        w.add_tensor(f"direction.{layer}", (4 * g.standard_normal(d)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_outside_systems_enter_one_leaderboard(tiny_dir, tmp_path, monkeypatch, server) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    url, handler = server
    served = _served_run(url, tmp_path / "served")
    assert handler.requests and handler.requests[0]["max_tokens"] == MAX_NEW  # lm-eval really asked the server
    queries = load_queries(TASK)
    alpaca = tmp_path / "model_outputs.json"
    alpaca.write_text(json.dumps([{"instruction": q["instruction"], "output": f"Answer: {q['instruction'][:20]}",
                                   "generator": "elsewhere"} for q in queries]))
    d = AutoModelForCausalLM.from_pretrained(tiny_dir("llama")).config.hidden_size
    cv = _control_vector(tmp_path / "cv.gguf", d)
    cfg = CompareConfig(
        base=f"pretrained={tiny_dir('llama')}", tasks=[TASK], judge=f"hf:{tiny_dir('llama', 2)}", name="outside",
        methods=[], limit=4, gen_kwargs={"max_gen_toks": MAX_NEW}, batch_size=4, work_dir=tmp_path / "runs",
        report_root=tmp_path / "reports", judge_check=False, command="test",
        edit_files=[("cv", str(cv))], external_runs=[("served", str(served)), ("alpaca", str(alpaca))])
    res = run_compare(cfg)
    results = json.loads((tmp_path / "reports" / "outside" / "results.json").read_text())
    assert {f"{s}:{TASK}" for s in ("cv", "served", "alpaca")} <= set(results["results"])
    md = (tmp_path / "reports" / "outside" / "leaderboard.md").read_text()
    assert "served" in md and "alpaca" in md and "cv" in md
    # the served run's answers are the base model's own greedy answers (same weights, same prompts)
    ours = {json.loads(line)["doc"]["id"]: json.loads(line)["filtered_resps"][0]
            for line in next(res.gens[("base", TASK)].path.rglob("samples_*.jsonl")).read_text().splitlines()}
    theirs = {json.loads(line)["doc"]["id"]: json.loads(line)["filtered_resps"][0]
              for line in next(res.gens[("served", TASK)].path.glob("samples_*.jsonl")).read_text().splitlines()}
    assert theirs.keys() == ours.keys() and len(ours) == 4
    assert theirs == ours
    # where each came from is recorded with it
    meta = res.gens[("served", TASK)].meta
    assert meta["source"]["kind"] == "lm-eval" and meta["missing"] == []
    assert res.gens[("alpaca", TASK)].meta["source"]["kind"] == "alpaca_eval"
    rjson = json.loads(next(res.gens[("cv", TASK)].path.rglob("results_*.json")).read_text())
    assert rjson["config"]["alignez_edit"]["method"] == "control-vector"
    assert rjson["config"]["alignez_edit"]["positions"] == "all"
    assert f"'served': '{served}'" in md and f"'cv': '{cv}'" in md  # the report's settings say where from
    # identical answers are ties: the served base against our base is 0 wins / 100% ties / 0 losses
    assert "| served | alignez_embedded | pairwise | 4 | 0/100/0 |" in md
    # unchanged, nothing runs again
    again = run_compare(cfg)
    assert not [s for s in again.ran if s.startswith(("external", "import-edit", "gen"))]


def test_outside_system_errors_name_the_fix(tiny_dir, tmp_path) -> None:
    base = dict(base=f"pretrained={tiny_dir('llama')}", tasks=[TASK], judge=f"hf:{tiny_dir('llama', 2)}",
                name="x", methods=[], work_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match="no such file"):
        CompareConfig(**base, external_runs=[("served", str(tmp_path / "nowhere"))])
    with pytest.raises(ConfigError, match="names another system"):
        CompareConfig(**base, edit_files=[("base", str(tmp_path))])
    (tmp_path / "v.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"\.gguf"):
        CompareConfig(**base, edit_files=[("v", str(tmp_path / "v.bin"))])
