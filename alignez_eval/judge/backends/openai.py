"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama) over httpx.

Requests run on a bounded thread pool (`concurrency`); results are yielded to the caller's thread
as they complete, so the cache is written from one thread. 429, 5xx, timeouts and connection
errors are retried with exponential backoff and jitter, honouring Retry-After; after
`max_retries` retries the judgment is an error (transient: not cached, retried by a later run).
A reply that does not follow the prompt's format is an error too (cached: the judge said it).

Request parameters adapt to the server once per run: current OpenAI models answer HTTP 400
`unsupported_parameter` to `max_tokens` (they take `max_completion_tokens`), and reasoning models
answer `unsupported_value` to any temperature but their default. On that 400 the request is sent
again at once with the other token parameter, or without `temperature`, and every later request of
the run uses that form. Each result records what was sent under `request`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

import httpx

from alignez_eval.judge.backends.base import JudgeRequest, empty_result
from alignez_eval.judge.parse import ParseError, parse_grade_reply, parse_pairwise_reply
from alignez_eval.judge.spec import JudgeSpec

logger = logging.getLogger(__name__)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Equal-jitter exponential backoff (half fixed, half random, so concurrent clients spread
    out), never shorter than the server's Retry-After (which is itself capped at `cap`)."""
    step = min(cap, base * (2 ** attempt))
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def _error_fields(resp: httpx.Response) -> tuple[str, str, str]:
    """(param, code, lower-cased message) of an OpenAI-style error body; empty strings if absent."""
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return "", "", resp.text.lower()
    if not isinstance(err, dict):
        return "", "", str(err or resp.text).lower()
    return (str(err.get("param") or ""), str(err.get("code") or ""), str(err.get("message") or "").lower())


def rejected_parameter(resp: httpx.Response, sent: dict[str, Any]) -> str | None:
    """Which of the adaptable parameters we sent (`max_tokens`, `max_completion_tokens`,
    `temperature`) a 400 rejects as unsupported, if that is what it says; else None.

    OpenAI names it in `error.param` with code `unsupported_parameter` / `unsupported_value`;
    compatible servers that copy only the message are recognised by its wording."""
    if resp.status_code != 400:
        return None
    param, code, message = _error_fields(resp)
    for name in ("max_tokens", "max_completion_tokens", "temperature"):
        if name not in sent:
            continue
        if param == name and code in ("unsupported_parameter", "unsupported_value"):
            return name
        if f"'{name}'" in message and ("unsupported parameter" in message or "unsupported value" in message):
            return name
    return None


class OpenAIBackend:
    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.prompt = spec.load_prompt()
        self.calls = 0  # judgments sent (each may take several HTTP attempts)
        self.http_attempts = 0
        self._lock = threading.Lock()
        self._rng = random.Random()
        # What the server accepts, learned from its 400s; shared by the worker threads.
        self.token_param = spec.options.token_param
        self.send_temperature = spec.options.temperature is not None
        self.adaptations: list[str] = []
        key = os.environ.get(spec.options.api_key_env)
        if not key:
            logger.warning("judge: $%s is not set; calling %s without an API key", spec.options.api_key_env, spec.options.base_url)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(
            base_url=spec.options.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(spec.options.timeout_s),
            limits=httpx.Limits(max_connections=spec.options.concurrency, max_keepalive_connections=spec.options.concurrency),
        )

    def _messages(self, req: JudgeRequest) -> list[dict[str, str]]:
        fmt = self.spec.output_format
        if req.kind == "pair":
            return self.prompt.messages(fmt, instruction=req.instruction, answer_a=req.answer_a,
                                        answer_b=req.answer_b)
        return self.prompt.messages(fmt, instruction=req.instruction, answer=req.answer_a,
                                    max_grade=int(self.spec.scale or 10))

    def _interpret(self, req: JudgeRequest, body: dict[str, Any]) -> dict[str, Any]:
        usage_raw = body.get("usage") or {}
        usage = {"prompt_tokens": int(usage_raw.get("prompt_tokens") or 0),
                 "completion_tokens": int(usage_raw.get("completion_tokens") or 0)}
        cost = (usage["prompt_tokens"] * self.spec.options.input_cost_per_1m
                + usage["completion_tokens"] * self.spec.options.output_cost_per_1m) / 1e6
        try:
            content = body["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError) as exc:
            return empty_result(usage=usage, cost_usd=cost, error=f"malformed response: {exc!r}", transient=True)
        try:
            if req.kind == "pair":
                label, aspects = parse_pairwise_reply(content)
                return empty_result(label=label, aspects=aspects, reply=content, usage=usage, cost_usd=cost)
            grade = parse_grade_reply(content, int(self.spec.scale or 10))
            return empty_result(grade=grade, reply=content, usage=usage, cost_usd=cost)
        except ParseError as exc:
            return empty_result(reply=content, usage=usage, cost_usd=cost, error=f"unparseable reply: {exc}")

    def _payload(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        spec = self.spec
        payload: dict[str, Any] = {**(spec.options.extra_body or {}), "model": spec.model, "messages": messages}
        with self._lock:
            payload[self.token_param] = spec.options.max_tokens
            if self.send_temperature:
                payload["temperature"] = spec.options.temperature
        return payload

    def _adapt(self, rejected: str, sent: dict[str, Any]) -> bool:
        """Switch what later requests send after the server rejected `rejected`; False when the
        rejected form is already the fallback (nothing left to try)."""
        with self._lock:
            if rejected == "temperature":
                if self.send_temperature:
                    self.send_temperature = False
                    note = (f"{self.spec.options.base_url} rejects temperature={sent['temperature']} for "
                            f"{self.spec.model}; sending none (the server's default) for the rest of this run "
                            "(set temperature: none in the judge spec to skip the failed call)")
                    self.adaptations.append(note)
                    logger.warning("judge: %s", note)
                return True
            if rejected != self.token_param:
                return True  # another thread switched already
            if rejected != self.spec.options.token_param:
                return False  # both forms rejected
            self.token_param = next(p for p in ("max_tokens", "max_completion_tokens") if p != rejected)
            note = (f"{self.spec.options.base_url} rejects {rejected} for {self.spec.model}; sending "
                    f"{self.token_param} for the rest of this run (set token_param: {self.token_param} in the "
                    "judge spec to skip the failed call)")
            self.adaptations.append(note)
            logger.warning("judge: %s", note)
            return True

    def _one(self, req: JudgeRequest) -> dict[str, Any]:
        spec = self.spec
        messages = self._messages(req)
        with self._lock:
            self.calls += 1
        last_error = "no attempt made"
        t0 = time.monotonic()
        adapted: set[str] = set()  # one immediate resend per rejected parameter
        attempt = 0
        while attempt <= spec.options.max_retries:
            retry_after = None
            payload = self._payload(messages)
            with self._lock:
                self.http_attempts += 1
            try:
                resp = self.client.post("/chat/completions", json=payload)
            except httpx.TimeoutException as exc:
                last_error = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last_error = f"connection error ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    last_error = f"HTTP {resp.status_code}"
                    retry_after = retry_after_seconds(resp.headers.get("retry-after"))
                elif resp.status_code >= 400:
                    rejected = rejected_parameter(resp, payload)
                    if rejected is not None and rejected not in adapted and self._adapt(rejected, payload):
                        adapted.add(rejected)
                        continue  # the same request in the accepted form; not a retry of a failure
                    # Bad key, unknown model, bad request: retrying cannot help; a later run may.
                    return empty_result(error=f"HTTP {resp.status_code}: {resp.text[:300]}", transient=True,
                                        latency_s=time.monotonic() - t0)
                else:
                    try:
                        body = resp.json()
                    except ValueError:
                        return empty_result(error=f"response is not JSON: {resp.text[:200]!r}", transient=True,
                                            latency_s=time.monotonic() - t0)
                    if not isinstance(body, dict):
                        return empty_result(error="response JSON is not an object", transient=True,
                                            latency_s=time.monotonic() - t0)
                    result = self._interpret(req, body)
                    result["latency_s"] = time.monotonic() - t0
                    result["attempts"] = attempt + 1 + len(adapted)
                    result["request"] = {"token_param": next(p for p in ("max_tokens", "max_completion_tokens")
                                                             if p in payload),
                                         "temperature": payload.get("temperature")}
                    return result
            if attempt < spec.options.max_retries:
                delay = backoff_delay(attempt, spec.options.backoff_base_s, spec.options.backoff_max_s, retry_after, self._rng)
                logger.debug("judge request failed (%s); retry %d/%d in %.2fs", last_error, attempt + 1,
                             spec.options.max_retries, delay)
                time.sleep(delay)
            attempt += 1
        return empty_result(error=f"{last_error} after {spec.options.max_retries + 1} attempts", transient=True,
                            latency_s=time.monotonic() - t0, attempts=spec.options.max_retries + 1)

    def run(self, requests: list[JudgeRequest]) -> Iterator[tuple[JudgeRequest, dict[str, Any]]]:
        pool = ThreadPoolExecutor(max_workers=self.spec.options.concurrency, thread_name_prefix="judge")
        try:
            futures: dict[Future[dict[str, Any]], JudgeRequest] = {pool.submit(self._one, r): r for r in requests}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.client.close()
