"""SQLite store of raw judgments, keyed by a content hash.

WAL journal and one commit per judgment: a process killed at any moment (SIGKILL included) loses
at most the judgments still in flight, and a re-run finds every committed one and makes no call
for it. Only the main thread touches the connection; backends hand results back to it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from alignez_eval.hashing import sha256_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    prompt TEXT,
    judge_order TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def judgment_key(spec_hash: str, prompt_tag: str | None, instruction: str, answer_a: str, answer_b: str,
                 order: str) -> str:
    payload = json.dumps([spec_hash, prompt_tag, instruction, answer_a, answer_b, order], ensure_ascii=False)
    return sha256_text(payload)


class JudgmentCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against process death in WAL mode (only an OS crash could lose the tail).
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(SCHEMA)
        self.conn.commit()

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, result in self.conn.execute(f"SELECT key, result FROM judgments WHERE key IN ({marks})", chunk):
                out[key] = json.loads(result)
        return out

    def put(self, key: str, spec_hash: str, prompt_tag: str | None, order: str, result: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO judgments (key, spec_hash, prompt, judge_order, result, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, spec_hash, prompt_tag, order, json.dumps(result, ensure_ascii=False), time.time()),
        )
        self.conn.commit()

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> JudgmentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
