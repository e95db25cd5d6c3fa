"""The `openai` backend against a real OpenAI-compatible HTTP server on 127.0.0.1.

The server judges by a visible rule (the answer with more "good" words wins; single mode grades
1 + their count) and misbehaves on request: markers in the instruction make it answer 429 with
Retry-After, 500, 503 once, slow replies beyond the client timeout, garbage bodies, or replies
that ignore the output format. It counts every hit, so tests can check calls exactly.
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


class FakeJudgeServer:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
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
