"""answers.html in a real headless Chromium: rows render, filters and search change the visible
count, and nothing is fetched — not even an address planted inside an answer."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alignez_eval.judge import judge_runs
from alignez_eval.judge.runner import load_judgments
from alignez_eval.judge.runs import load_run
from alignez_eval.report.viewer import write_viewer

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="Debian's chromium + chromium-driver are not installed (make install "
                                          "installs them where apt can run)")

INSTRUCTIONS = [f"Question {i}: how does {topic} work?" for i, topic in
                enumerate(["bread", "rain", "a bicycle", "memory", "a compass", "tea"])]


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        type(self).hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def trap():
    """A loopback server an answer points at: any request to it would be a fetch the page made."""
    handler = type("T", (_Counter,), {"hits": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run(path: Path, outputs: list[str]) -> Path:
    """An lm-eval output directory with two tasks (two prompt sets): the first four docs and the rest."""
    path.mkdir()
    for task, docs in (("set-a", range(4)), ("set-b", range(4, 6))):
        lines = [json.dumps({"doc_id": i, "doc": {"id": f"d{i}", "instruction": INSTRUCTIONS[i]},
                             "arguments": [[INSTRUCTIONS[i]]], "resps": [[outputs[i]]], "filtered_resps": [outputs[i]],
                             "filter": "none"}) for i in docs]
        (path / f"samples_{task}_2026-12-08T00-00-00.000000.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def judged(tiny_dir, tmp_path, trap) -> tuple[Path, Path]:
    url, _ = trap
    base = _run(tmp_path / "base", [f"It works by {w}." for w in "abcdef"])
    sys_a = _run(tmp_path / "a", [f"It works by {w}, in detail, step by step." for w in "abcdef"])
    planted = [f"<img src='{url}/img'> <script src='{url}/js'></script> see {url}/link", *"uvwxy"]
    sys_b = _run(tmp_path / "b", planted)
    out = tmp_path / "judgments"
    judge_runs(load_run(base, "base"), {"sys-a": load_run(sys_a, "sys-a"), "sys-b": load_run(sys_b, "sys-b")},
               f"hf:{tiny_dir('llama', 2)},mode=single", out, cache_path=tmp_path / "c.sqlite")
    return out, write_viewer([out], tmp_path / "answers.html", "viewer test")


def test_viewer_page_is_self_contained(judged) -> None:
    _, html = judged
    text = html.read_text()
    assert "default-src 'none'" in text
    assert "<script src" not in text.split('id="data"')[0] and "<link" not in text  # no outside script or style
    assert "\\u003cimg" in text and "<img" not in text  # a planted tag stays text inside the JSON


@needs_browser
def test_viewer_in_headless_chromium(judged, trap) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    jdir, html = judged
    _, records = load_judgments(jdir)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(html.as_uri())

        def count() -> str:
            return driver.find_element(By.ID, "count").text

        def visible(css: str) -> int:
            return sum(e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, css))

        assert count() == "6 of 6 prompts" and visible("article.prompt") == 6
        assert visible("div.card.system") == 12  # two systems per prompt, all shown
        Select(driver.find_element(By.ID, "f-set")).select_by_value("set-b")
        assert count() == "2 of 6 prompts"
        Select(driver.find_element(By.ID, "f-set")).select_by_value("")
        wins = sum(r["verdict"] == "win" for r in records["sys-a"])
        Select(driver.find_element(By.ID, "f-system")).select_by_value("sys-a")
        Select(driver.find_element(By.ID, "f-verdict")).select_by_value("win")
        assert count() == f"{wins} of 6 prompts" and visible("div.card.system") == wins
        Select(driver.find_element(By.ID, "f-verdict")).select_by_value("")
        Select(driver.find_element(By.ID, "f-length")).select_by_value("longer")  # sys-a's answers are all longer
        assert count() == "6 of 6 prompts"
        Select(driver.find_element(By.ID, "f-system")).select_by_value("")
        Select(driver.find_element(By.ID, "f-length")).select_by_value("")
        driver.find_element(By.ID, "f-search").send_keys("compass")
        assert count() == "1 of 6 prompts"
        assert "q=compass" in driver.current_url  # the filtered view is a link
        # the planted address is shown as text, and the browser fetched nothing at all
        assert "/img" in driver.page_source and visible("img") == 0
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
    assert trap[1].hits == []
