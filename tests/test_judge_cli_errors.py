"""`alignez-eval judge` exits non-zero when the judge failed: against a real OpenAI-compatible HTTP
server on 127.0.0.1 that rejects every request (or the first few), in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FIX = Path(__file__).parent / "fixtures" / "runs"
BAD_KEY = {"error": {"message": "Incorrect API key provided: sk-test. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.",
                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}


class RejectingServer:
    """Answers 401 (OpenAI's body for a wrong key) to the first `reject` requests, then judges
    every pair a tie."""

    def __init__(self, reject: int) -> None:
        self.reject = reject
        self.hits = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    server.hits += 1
                    refuse = server.hits <= server.reject
                if refuse:
                    code, body = 401, BAD_KEY
                else:
                    content = json.dumps({"helpfulness": {"rationale": "same", "choice": "tie"}, "overall": "tie"})
                    code, body = 200, {"choices": [{"message": {"role": "assistant", "content": content}}],
                                       "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> RejectingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _judge(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    # concurrency=1: requests arrive in a fixed order, so "the first request" is one pair's
    spec = f"openai:fake-judge@{url},api_key_env=ALIGNEZ_TEST_NO_KEY,concurrency=1,max_retries=0,timeout_s=5"
    cmd = [sys.executable, "-m", "alignez_eval", "judge", "--baseline", f"base={FIX / 'base'}",
           "--candidate", f"alignez={FIX / 'alignez'}", "--judge", spec, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_every_request_rejected_exits_non_zero_with_the_first_error(tmp_path: Path) -> None:
    with RejectingServer(reject=10**9) as srv:
        proc = _judge(srv.url, tmp_path / "j", "--max-error-rate", "1")  # even at 1: nothing succeeded
    line = _error_line(proc)
    assert "no judgment succeeded (5 failed)" in line
    assert "HTTP 401" in line and "Incorrect API key provided" in line
    assert srv.hits >= 5
    manifest = json.loads((tmp_path / "j" / "manifest.json").read_text())  # what ran is still on disk
    assert manifest["candidates"]["alignez"]["counts"]["error"] == 5


def test_error_share_against_max_error_rate(tmp_path: Path) -> None:
    # 6 paired docs, one with identical answers (a tie without a call): the first request failing
    # makes 1 of 6 judgments an error.
    with RejectingServer(reject=1) as srv:
        ok = _judge(srv.url, tmp_path / "a")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "error 1" in ok.stdout
    with RejectingServer(reject=1) as srv:
        strict = _judge(srv.url, tmp_path / "b", "--max-error-rate", "0.1")
    line = _error_line(strict)
    assert "alignez: 1 of 6" in line and "--max-error-rate 0.1" in line and "Incorrect API key" in line


@pytest.mark.parametrize("rate", ["-0.1", "1.5"])
def test_max_error_rate_outside_0_1_is_refused(tmp_path: Path, rate: str) -> None:
    proc = _judge("http://127.0.0.1:9/v1", tmp_path / "j", "--max-error-rate", rate)
    assert "--max-error-rate" in _error_line(proc) and "0..1" in proc.stderr
