"""Resumable JSONL of generated pairs: a header line, then one record per finished query.

Records are appended a batch at a time with flush + fsync, so a killed fit loses at most the batch in
flight; on restart a torn last line is cut off and finished queries are skipped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from alignez_eval.errors import DataError

logger = logging.getLogger(__name__)


class PairStore:
    """Append-only store keyed by query id. `header` describes what produced the records (model,
    keywords, sampling); reopening a file written with another header is refused."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]):
        self.path = Path(path)
        self.header = header
        self.records: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self._write_lines([{"kind": "header", **header}], truncate=True)

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            # A write torn by a kill: drop the partial line so later appends start on a clean line.
            keep = raw.rfind(b"\n") + 1
            logger.warning("%s: dropping a torn last line (%d bytes) from an interrupted run",
                           self.path, len(raw) - keep)
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
            raw = raw[:keep]
        lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip()]
        if not lines:
            self._write_lines([{"kind": "header", **self.header}], truncate=True)
            return
        try:
            head = json.loads(lines[0])
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path}: first line is not JSON ({exc}); delete the file to regenerate") from exc
        head.pop("kind", None)
        if head != json.loads(json.dumps(self.header)):
            raise DataError(
                f"{self.path} was generated with other settings ({_diff(head, self.header)}); "
                "delete it or choose another path to regenerate"
            )
        for n, ln in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.path}:{n}: corrupt record ({exc}); delete the file to regenerate") from exc
            if rec.get("kind") == "pair":
                self.records[str(rec["id"])] = rec

    def _write_lines(self, objs: list[dict[str, Any]], truncate: bool = False) -> None:
        with self.path.open("w" if truncate else "a", encoding="utf-8") as fh:
            for o in objs:
                fh.write(json.dumps(o, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def done(self, qid: str) -> bool:
        return qid in self.records

    def append(self, records: list[dict[str, Any]]) -> None:
        recs = [{"kind": "pair", **r} for r in records]
        self._write_lines(recs)
        for r in recs:
            self.records[str(r["id"])] = r


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    b = json.loads(json.dumps(b))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:4]) or "?"
