"""The `openai` backend against a real OpenAI-compatible HTTP server on 127.0.0.1.

The server judges by a visible rule (the answer with more "good" words wins; single mode grades
1 + their count) and misbehaves on request: markers in the instruction make it answer 429 with
Retry-After, 500, 503 once, slow replies beyond the client timeout, garbage bodies, or replies
that ignore the output format. It counts every hit, so tests can check calls exactly.
Its `profile` says which request parameters it accepts, with OpenAI's own 400 bodies for the rest:
"compatible" (vLLM / llama.cpp server: `max_tokens`, any temperature), "openai" (current OpenAI
models: `max_completion_tokens` only), "reasoning" (that, and only the default temperature),
"neither" (rejects both token parameters: the adaptation must give up, not loop).
Also here: kill a judging subprocess with SIGKILL and resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alignez_eval.judge import judge_runs, load_run, parse_judge_spec
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.runner import load_judgments

FIX = Path(__file__).parent / "fixtures" / "runs"
_A = re.compile(r"\[The start of assistant A's answer\]\n(.*?)\n\[The end of assistant A's answer\]", re.S)
_B = re.compile(r"\[The start of assistant B's answer\]\n(.*?)\n\[The end of assistant B's answer\]", re.S)
_ONE = re.compile(r"\[The start of the assistant's answer\]\n(.*?)\n\[The end of the assistant's answer\]", re.S)


MAX_TOKENS_REJECTED = {"error": {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
               "instead.",
    "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}


def temperature_rejected(value: object) -> dict:
    return {"error": {
        "message": f"Unsupported value: 'temperature' does not support {value} with this model. Only the default "
                   "(1) value is supported.",
        "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}


class FakeJudgeServer:
    def __init__(self, delay: float = 0.0, profile: str = "compatible") -> None:
        self.delay = delay
        self.profile = profile
        self.seen: list[dict] = []  # every request body without its messages
        self.rejected: Counter[str] = Counter()  # parameter -> 400s sent for it
        self.hits: Counter[str] = Counter()  # request body hash -> hits
        self.markers: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def total(self) -> int:
        return sum(self.hits.values())

    def __enter__(self) -> FakeJudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, h: BaseHTTPRequestHandler, code: int, payload: bytes, headers: dict[str, str] | None = None):
        try:
            h.send_response(code)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) or was killed

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        req = json.loads(body)
        digest = hashlib.sha256(body).hexdigest()
        user = req["messages"][-1]["content"]
        with self.lock:
            self.hits[digest] += 1
            n = self.hits[digest]
            for marker in re.findall(r"\[(\w+)\]", user.split("\n")[1]):
                self.markers[marker] += 1
        instruction = user.split("\n")[1]
        with self.lock:
            self.seen.append({k: v for k, v in req.items() if k != "messages"})
        if self.profile == "neither" and "max_completion_tokens" in req:
            with self.lock:
                self.rejected["max_completion_tokens"] += 1
            return self._send(h, 400, json.dumps({"error": {
                "message": "Unsupported parameter: 'max_completion_tokens' is not supported with this model.",
                "type": "invalid_request_error", "param": "max_completion_tokens",
                "code": "unsupported_parameter"}}).encode())
        if self.profile in ("openai", "reasoning", "neither") and "max_tokens" in req:
            with self.lock:
                self.rejected["max_tokens"] += 1
            return self._send(h, 400, json.dumps(MAX_TOKENS_REJECTED).encode())
        if self.profile == "reasoning" and req.get("temperature", 1) != 1:
            with self.lock:
                self.rejected["temperature"] += 1
            return self._send(h, 400, json.dumps(temperature_rejected(req["temperature"])).encode())
        if "[e400]" in instruction:
            return self._send(h, 400, json.dumps({"error": {"message": "The model `fake` does not exist",
                                                            "type": "invalid_request_error", "param": None,
                                                            "code": "model_not_found"}}).encode())
        if self.delay:
            time.sleep(self.delay)
        if "[e500]" in instruction:
            return self._send(h, 500, b'{"error": "boom"}')
        if "[e429]" in instruction and n <= 2:
            return self._send(h, 429, b'{"error": "slow down"}', {"Retry-After": "1" if n == 1 else "0"})
        if "[e503once]" in instruction and n == 1:
            return self._send(h, 503, b"unavailable")
        if "[slow]" in instruction or ("[slowonce]" in instruction and n == 1):
            time.sleep(1.0)
        if "[garbage]" in instruction:
            return self._send(h, 200, b"this is {not json")
        if "[unparseable]" in instruction:
            content = "I think the first one is better."
        elif _A.search(user):
            a, b = _A.search(user).group(1).count("good"), _B.search(user).group(1).count("good")
            overall = "A" if a > b else "B" if b > a else "tie"
            content = json.dumps({"helpfulness": {"rationale": "counted", "choice": overall}, "overall": overall})
        else:
            grade = min(10, 1 + _ONE.search(user).group(1).count("good"))
            content = f"Looks fine.\nRating: [[{grade}]]"
        payload = {"choices": [{"message": {"role": "assistant", "content": content}}],
                   "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 7}}
        return self._send(h, 200, json.dumps(payload).encode())


def fast_spec(url: str, **kw):
    data = {"backend": "openai", "model": "fake-judge", "base_url": url, "api_key_env": "ALIGNEZ_TEST_NO_KEY",
            "concurrency": 4, "max_retries": 2, "timeout_s": 0.3, "backoff_base_s": 0.01, "backoff_max_s": 2.0,
            "input_cost_per_1m": 2.0, "output_cost_per_1m": 10.0}
    data.update(kw)
    return parse_judge_spec(data)


def item(doc: str, instruction: str, base: str, cand: str) -> PairItem:
    return PairItem(family="t", doc_id=doc, instruction=instruction, baseline=base, candidate=cand)


def test_pairwise_retries_errors_and_results(tmp_path):
    items = [
        item("win", "Question one?", "meh good", "fine good good"),
        item("lose", "Question two?", "great good good good", "bad"),
        item("tie", "Question three?", "x good", "y good"),
        item("same", "Question four?", "identical answer", "identical answer "),
        item("r429", "Question [e429] five?", "a", "b good"),
        item("r503", "Question [e503once] six?", "a good", "b"),
        item("slow1", "Question [slowonce] seven?", "a", "b good"),
        item("e500", "Question [e500] eight?", "a", "b good"),
        item("slow", "Question [slow] nine?", "a", "b good"),
        item("garbage", "Question [garbage] ten?", "a", "b good"),
        item("unparse", "Question [unparseable] eleven?", "a", "b good"),
    ]
    with FakeJudgeServer() as srv:
        spec = fast_spec(srv.url)
        cache = JudgmentCache(tmp_path / "c.sqlite")
        judge = Judge(spec, cache)
        t0 = time.monotonic()
        recs = {r["doc_id"]: r for r in judge.judge_pairs(items)}
        elapsed = time.monotonic() - t0
        judge.close()
        v = {k: r["verdict"] for k, r in recs.items()}
        assert v == {"win": "win", "lose": "lose", "tie": "tie", "same": "tie", "r429": "win", "r503": "lose",
                     "slow1": "win", "e500": "error", "slow": "error", "garbage": "error", "unparse": "error"}
        assert recs["same"]["identical"] and recs["same"]["judgments"] == {}
        assert "HTTP 500 after 3 attempts" in recs["e500"]["error"]
        assert "timeout" in recs["slow"]["error"]
        assert "not JSON" in recs["garbage"]["error"]
        assert "unparseable" in recs["unparse"]["error"]
        # hits per marker, both orders: 429 twice then ok; 503 once then ok; 500 and slow bounded at
        # 1 + max_retries attempts; garbage is not retried; identical answers never sent.
        assert srv.markers["e429"] == 2 * 3 and srv.markers["e503once"] == 2 * 2
        assert srv.markers["slowonce"] == 2 * 2
        assert srv.markers["e500"] == 2 * 3 and srv.markers["slow"] == 2 * 3
        assert srv.markers["garbage"] == 2 and srv.markers["unparseable"] == 2
        assert srv.total == 2 * 3 + 6 + 4 + 4 + 6 + 6 + 2 + 2  # 3 clean items + the above
        assert elapsed >= 1.0  # Retry-After: 1 was honoured
        assert judge.stats["call_errors"] == 2 * 4  # e500, slow, garbage, unparseable; both orders
        usage_cost = judge.stats["prompt_tokens"] * 2.0 / 1e6 + judge.stats["completion_tokens"] * 10.0 / 1e6
        assert judge.stats["cost_usd"] == pytest.approx(usage_cost) and judge.stats["cost_usd"] > 0

        # A re-run: everything judged or unparseable is cached; transient errors are tried again.
        before = srv.total
        judge2 = Judge(spec, JudgmentCache(tmp_path / "c.sqlite"))
        recs2 = {r["doc_id"]: r["verdict"] for r in judge2.judge_pairs(items)}
        assert recs2 == v
        retried = srv.total - before
        assert retried == 2 * 3 + 2 * 3 + 2  # e500, slow, garbage again; nothing else
        assert judge2.stats["cache_hits"] == 2 * 7


def test_single_mode_grades_each_answer_once(tmp_path):
    base, alignez, tuned = load_run(FIX / "base"), load_run(FIX / "alignez"), load_run(FIX / "tuned")
    with FakeJudgeServer() as srv:
        spec = fast_spec(srv.url, mode="single")
        out = judge_runs(base, {"alignez": alignez, "tuned": tuned}, spec, tmp_path / "j")
        # 6 baseline answers, 5 alignez answers (q2 is identical to the base: no call), 5 tuned
        # answers (tuned lacks q4): N+1 gradings per doc, not 2N comparisons.
        assert srv.total == 6 + 5 + 5
        manifest, records = load_judgments(out)
        assert manifest["mode"] == "single" and manifest["stats"]["calls"] == 16
        al = {r["doc_id"]: r for r in records["alignez"]}
        # grades are 1 + count("good"): q0 base 2 vs alignez 3 -> win; q3 2 vs 1 -> lose
        assert al["q0"]["verdict"] == "win" and al["q0"]["score"] == pytest.approx(1.0)
        assert al["q3"]["verdict"] == "lose" and al["q2"]["verdict"] == "tie" and al["q2"]["identical"]
        assert manifest["candidates"]["tuned"]["pairing"]["missing_in_candidate"] == [["alignez_fx", "q4"]]
        assert manifest["candidates"]["tuned"]["pairing"]["extra_in_candidate"] == [["alignez_fx", "q6"]]
        before = srv.total
        judge_runs(base, {"alignez": alignez, "tuned": tuned}, spec, tmp_path / "j")
        assert srv.total == before  # a re-run makes zero calls


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_run_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    out, cache = tmp_path / "j", tmp_path / "cache.sqlite"
    with FakeJudgeServer(delay=0.15) as srv:
        spec = (f"openai:fake-judge@{srv.url},api_key_env=ALIGNEZ_TEST_NO_KEY,concurrency=1,max_retries=1,"
                "timeout_s=5,backoff_base_s=0.01")
        cmd = [sys.executable, "-m", "alignez_eval", "judge", "--baseline", f"base={FIX / 'base'}",
               "--candidate", f"alignez={FIX / 'alignez'}", "--candidate", f"tuned={FIX / 'tuned'}",
               "--judge", spec, "--out", str(out), "--cache", str(cache)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _rows(cache) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        time.sleep(0.3)  # let the server finish a reply nobody reads
        committed, hits_first = _rows(cache), srv.total
        srv.delay = 0.0
        print(f"killed after {committed} committed judgments, {hits_first} server hits")
        assert committed >= 5
        assert not (out / "manifest.json").exists()
        # alignez: 5 non-identical docs x 2 orders; tuned: 5 paired docs x 2 orders
        total = 2 * 5 + 2 * 5
        assert committed < total
        assert hits_first - committed <= 1  # at most the one request in flight at the kill

        judge_runs(load_run(FIX / "base", name="base"),
                   {"alignez": load_run(FIX / "alignez"), "tuned": load_run(FIX / "tuned")},
                   parse_judge_spec(spec), out, cache_path=cache)
        assert srv.total - hits_first == total - committed  # nothing committed was asked again
        assert _rows(cache) == total
        manifest, records = load_judgments(out)
        assert sum(len(r) for r in records.values()) == 6 + 5
        assert all(r["verdict"] != "error" for recs in records.values() for r in recs)

        # same verdicts as an uninterrupted run with a fresh cache
        ref = judge_runs(load_run(FIX / "base", name="base"),
                         {"alignez": load_run(FIX / "alignez"), "tuned": load_run(FIX / "tuned")},
                         parse_judge_spec(spec), tmp_path / "ref", cache_path=tmp_path / "ref.sqlite")
        _, ref_records = load_judgments(ref)
        for cand in records:
            assert [r["verdict"] for r in records[cand]] == [r["verdict"] for r in ref_records[cand]]


# ---------------------------------------------------------------------------------------------
# request parameters: OpenAI's current models, reasoning models, vLLM / llama.cpp servers

PAIRS = [item(f"d{i}", f"Question number {i}?", "meh" + " good" * (i % 3), "fine" + " good" * (i % 2))
         for i in range(6)]
EXPECTED = {f"d{i}": "win" if i % 2 > i % 3 else "lose" if i % 3 > i % 2 else "tie" for i in range(6)}


def _judge(spec, items=PAIRS, cache=None):
    judge = Judge(spec, cache)
    try:
        return {r["doc_id"]: r for r in judge.judge_pairs(items)}, judge
    finally:
        judge.close()


def test_reasoning_model_rejections_switch_once_for_the_run(caplog):
    """max_tokens rejected -> max_completion_tokens; temperature 0.0 rejected -> not sent. One
    request pays both 400s; every later one is sent in the accepted form at once."""
    with FakeJudgeServer(profile="reasoning") as srv:
        recs, judge = _judge(fast_spec(srv.url, concurrency=1))
        assert {k: r["verdict"] for k, r in recs.items()} == EXPECTED
        assert srv.rejected == Counter({"max_tokens": 1, "temperature": 1})
        assert srv.total == 2 * len(PAIRS) + 2
        assert judge.stats["call_errors"] == 0
        first, *rest = srv.seen
        assert first["max_tokens"] == 1024 and first["temperature"] == 0.0
        assert srv.seen[1] == {"model": "fake-judge", "max_completion_tokens": 1024, "temperature": 0.0}
        assert all(s == {"model": "fake-judge", "max_completion_tokens": 1024} for s in rest[1:])
        raw = [r["judgments"][o] for r in recs.values() for o in ("AB", "BA")]
        assert all(j["request"] == {"token_param": "max_completion_tokens", "temperature": None} for j in raw)
        assert sorted(j["attempts"] for j in raw) == [1] * (len(raw) - 1) + [3]
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "rest of this run" in r.getMessage()]
        assert len(warnings) == 2 and "token_param: max_completion_tokens" in warnings[0]
        assert "temperature: none" in warnings[1]


def test_concurrent_requests_switch_without_flipping_back():
    with FakeJudgeServer(profile="reasoning") as srv:
        recs, judge = _judge(fast_spec(srv.url, concurrency=4))
        assert {k: r["verdict"] for k, r in recs.items()} == EXPECTED and judge.stats["call_errors"] == 0
        # At most the requests already in flight when the first 400 came back are rejected.
        assert 1 <= srv.rejected["max_tokens"] <= 4 and 1 <= srv.rejected["temperature"] <= 4
        assert srv.total == 2 * len(PAIRS) + sum(srv.rejected.values())
        assert all("max_tokens" not in s and "temperature" not in s for s in srv.seen[-4:])


def test_spec_options_send_the_accepted_form_first():
    with FakeJudgeServer(profile="reasoning") as srv:
        recs, _ = _judge(fast_spec(srv.url, token_param="max_completion_tokens", temperature="none"))
        assert {k: r["verdict"] for k, r in recs.items()} == EXPECTED
        assert srv.rejected == Counter() and srv.total == 2 * len(PAIRS)
    with FakeJudgeServer(profile="openai") as srv:  # non-reasoning: temperature 0 is fine
        recs, _ = _judge(fast_spec(srv.url, token_param="max_completion_tokens"))
        assert srv.rejected == Counter() and srv.total == 2 * len(PAIRS)
        assert all(s["temperature"] == 0.0 and s["max_completion_tokens"] == 1024 for s in srv.seen)


def test_vllm_and_llama_cpp_servers_get_plain_max_tokens():
    with FakeJudgeServer(profile="compatible") as srv:
        recs, judge = _judge(fast_spec(srv.url, max_tokens=77, temperature=0.3))
        assert {k: r["verdict"] for k, r in recs.items()} == EXPECTED and judge.stats["call_errors"] == 0
        assert srv.total == 2 * len(PAIRS)
        assert all(s == {"model": "fake-judge", "max_tokens": 77, "temperature": 0.3} for s in srv.seen)


def test_other_400s_fail_at_once_and_both_token_forms_rejected_is_an_error():
    with FakeJudgeServer() as srv:
        recs, _ = _judge(fast_spec(srv.url), [item("bad", "Question [e400] one?", "a", "b good")])
        assert recs["bad"]["verdict"] == "error" and "model_not_found" in recs["bad"]["error"]
        assert srv.total == 2  # one per order, no retry
    with FakeJudgeServer(profile="neither") as srv:
        recs, _ = _judge(fast_spec(srv.url, concurrency=1), PAIRS[:1])
        assert recs["d0"]["verdict"] == "error" and "'max_completion_tokens'" in recs["d0"]["error"]
        # order 1: max_tokens, then max_completion_tokens, then stop; order 2 starts at the switched form
        assert srv.rejected == Counter({"max_tokens": 1, "max_completion_tokens": 2}) and srv.total == 3


def test_extra_body_is_sent_and_keys_the_cache(tmp_path):
    with FakeJudgeServer() as srv:
        yaml_spec = tmp_path / "judge.yaml"
        yaml_spec.write_text(f"backend: openai\nmodel: fake-judge\nbase_url: {srv.url}\n"
                             "api_key_env: ALIGNEZ_TEST_NO_KEY\ntimeout_s: 5\ntoken_param: max_completion_tokens\n"
                             "temperature: none\nextra_body:\n  reasoning_effort: low\n"
                             "  chat_template_kwargs: {enable_thinking: false}\n")
        spec = parse_judge_spec(str(yaml_spec))
        assert spec.options.temperature is None and spec.options.token_param == "max_completion_tokens"
        cache = JudgmentCache(tmp_path / "c.sqlite")
        recs, _ = _judge(spec, cache=cache)
        assert {k: r["verdict"] for k, r in recs.items()} == EXPECTED
        assert all(s == {"model": "fake-judge", "max_completion_tokens": 1024, "reasoning_effort": "low",
                         "chat_template_kwargs": {"enable_thinking": False}} for s in srv.seen)
        n = srv.total
        as_dict = {"backend": "openai", "model": "fake-judge", "base_url": srv.url, "timeout_s": 5,
                   "api_key_env": "ALIGNEZ_TEST_NO_KEY", "temperature": None, "token_param": "max_completion_tokens"}
        # The same body written in another key order is the same judge: everything is cached.
        _judge(parse_judge_spec({**as_dict, "extra_body": {"chat_template_kwargs": {"enable_thinking": False},
                                                           "reasoning_effort": "low"}}), cache=cache)
        assert srv.total == n
        # Another body can change the judge's output: nothing is reused.
        _judge(parse_judge_spec({**as_dict, "extra_body": {"reasoning_effort": "high"}}), cache=cache)
        assert srv.total == 2 * n
        assert srv.seen[-1]["reasoning_effort"] == "high"


def test_identity_of_specs_without_the_new_options_is_unchanged():
    """Judgments cached before token_param / extra_body existed keep their keys."""
    spec = parse_judge_spec("openai:gpt-4o-mini")
    assert set(spec.identity()) == {"backend", "model", "mode", "prompt", "format", "base_url", "temperature",
                                    "max_tokens", "scale"}
    assert spec.identity() == parse_judge_spec("openai:gpt-4o-mini,token_param=max_completion_tokens").identity()
    assert parse_judge_spec("openai:o3,temperature=none").identity()["temperature"] is None
    assert parse_judge_spec("openai:o3,temperature=NONE").identity_hash() != parse_judge_spec("openai:o3").identity_hash()


@pytest.mark.parametrize(("spec", "message"), [
    ("openai:o3,token_param=max_output_tokens", "token_param 'max_output_tokens' is unknown"),
    ("openai:o3,extra_body=x", "extra_body must be a mapping"),
    ({"backend": "openai", "model": "o3", "extra_body": {"max_tokens": 5}}, "use max_tokens and token_param"),
    ({"backend": "openai", "model": "o3", "extra_body": {"stream": True}}, "'stream'"),
    ({"backend": "openai", "model": "o3", "extra_body": {"seed": float("nan")}}, "not plain JSON"),
    ("openai:o3,temperature=cold", "temperature='cold' is not a valid float"),
])
def test_bad_request_options_are_one_clear_error(spec, message):
    from alignez_eval.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_judge_spec(spec)
