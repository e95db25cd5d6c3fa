"""Content-addressed, resumable pipeline steps and the manifest that records them.

A step (one generation run, one fit, one judging pass, one report) is identified by the sha256 of
its inputs (canonical JSON: model identity, edit hash, task, limit, generation settings, package
versions). Its outputs live in `WORK/<kind>/<name>-<key[:12]>/`, produced in a temporary sibling and
renamed into place only when complete, with a `step.json` inside naming the key and the sha256 of
every output file. A directory without a matching `step.json` is a leftover of a killed run and is
rebuilt, never trusted; so is one whose files are missing or no longer match their recorded sha256
(truncated or changed on disk): the step is recomputed and the log says which file was wrong.

`WORK/manifest.json` indexes every step (inputs, outputs, seconds) and logs each run/skip, so a
second invocation can show — and tests can count — that nothing unchanged was recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_dir, atomic_write_json
from alignez_eval.hashing import sha256_file, sha256_json
from alignez_eval.package import __version__

logger = logging.getLogger(__name__)

STEP_FILE = "step.json"
MANIFEST = "manifest.json"


def software_versions() -> dict[str, str]:
    """Versions whose change can change an output (generation numerics, task rendering, judging)."""

    out = {"alignez-eval": __version__}
    for pkg in ("lm-eval", "torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[pkg] = "absent"
    return out


def slug(name: str) -> str:
    """A file-system-safe, still readable version of a step name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_")[:80] or "step"


def output_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file a step wrote, by path relative to its directory (step.json excluded)."""
    return {p.relative_to(directory).as_posix(): sha256_file(p)
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != STEP_FILE}


def damaged_output(directory: Path, recorded: Mapping[str, str]) -> str | None:
    """Why the outputs in `directory` are not the ones recorded (a missing file, or one whose bytes
    changed: a truncated artifact or samples file), or None when every file matches."""
    for rel, sha in sorted(recorded.items()):
        path = directory / rel
        if not path.is_file():
            return f"output {rel} is missing"
        if sha256_file(path) != sha:
            return f"output {rel} does not match its recorded sha256 (truncated or changed on disk)"
    return None


@dataclass
class StepResult:
    """Where a step's outputs are, what it recorded about them, and whether it was skipped."""

    kind: str
    name: str
    key: str
    path: Path
    meta: dict[str, Any]
    skipped: bool
    seconds: float


@dataclass
class StepCache:
    """The step store of one work directory (single writer: the main process, or rank 0)."""

    root: Path
    versions: dict[str, str] = field(default_factory=software_versions)
    command: str | None = None  # recorded with every step this process runs, for the report
    # Data parallel (accelerate launch / torchrun): every rank shares the work dir; only rank 0 writes.
    rank: int = field(default_factory=lambda: int(os.environ.get("RANK", "0")))
    world_size: int = field(default_factory=lambda: int(os.environ.get("WORLD_SIZE", "1")))
    wait_timeout_s: float = 24 * 3600.0
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # key -> why its recorded outputs were not trusted

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- keys and paths -------------------------------------------------------------------------
    def key(self, kind: str, inputs: Mapping[str, Any]) -> str:
        return sha256_json({"kind": kind, "inputs": inputs, "versions": self.versions})

    def path_for(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / f"{slug(name)}-{key[:12]}"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    # -- manifest -------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {"steps": {}, "log": []}
        data.setdefault("steps", {})
        data.setdefault("log", [])
        return data

    def _record(self, event: str, res: StepResult, inputs: Mapping[str, Any] | None,
                reason: str | None = None) -> None:
        if self.rank != 0:
            return
        data = self.manifest()
        entry = data["steps"].get(res.key, {})
        entry.update(kind=res.kind, name=res.name, path=str(res.path.relative_to(self.root)),
                     meta=res.meta, versions=self.versions)
        if inputs is not None:
            entry["inputs"] = inputs
            entry["seconds"] = round(res.seconds, 3)
            entry["command"] = self.command
        data["steps"][res.key] = entry
        data["log"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, "kind": res.kind,
                            "name": res.name, "key": res.key[:12], "seconds": round(res.seconds, 3)}
                           | ({"reason": reason} if reason else {}))
        atomic_write_json(self.manifest_path, data)

    # -- lookup and run -------------------------------------------------------------------------
    def lookup(self, kind: str, name: str, inputs: Mapping[str, Any]) -> StepResult | None:
        """The finished step for these inputs, or None: a partial directory counts as absent, and so
        does one whose outputs are missing or changed since they were recorded (logged)."""
        key = self.key(kind, inputs)
        paths = [self.path_for(kind, name, key)]
        # The same inputs under another name (e.g. an instruct model that is also the tuned
        # reference) are the same step: find it through the manifest's index by key.
        other = self.manifest()["steps"].get(key, {}).get("path")
        if other and self.root / other != paths[0]:
            paths.append(self.root / other)
        for path in paths:
            try:
                rec = json.loads((path / STEP_FILE).read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
                continue
            if rec.get("key") != key:
                continue
            # steps recorded before output hashes existed carry none: nothing to check them against
            problem = damaged_output(path, rec.get("outputs") or {})
            if problem is not None:
                logger.warning("step %s/%s: %s in %s; recomputing", kind, name, problem, path)
                self.damaged[key] = problem
                continue
            return StepResult(kind, name, key, path, rec.get("meta", {}), True, float(rec.get("seconds", 0.0)))
        return None

    def run(
        self,
        kind: str,
        name: str,
        inputs: Mapping[str, Any],
        produce: Callable[[Path], Mapping[str, Any] | None],
        *,
        force: bool = False,
        collective: bool = False,
    ) -> StepResult:
        """Return the cached outputs of (kind, inputs), or call `produce(tmp_dir)` to make them.

        `produce` writes its files into the directory it is given and returns small JSON-able
        metadata (hashes, counts) that later steps may key on; the directory is moved into place
        only after `produce` returns, so an interrupted step leaves nothing that looks finished.

        With several ranks, a `collective` step (data-parallel generation) runs on every rank but
        only rank 0 keeps its outputs; any other step runs on rank 0 alone while the other ranks
        wait for its result to appear (a file poll, not a collective, so a long fit cannot hit the
        process group's timeout).
        """
        if self.world_size > 1 and self.rank != 0:
            return self._run_follower(kind, name, inputs, produce, collective)
        if not force and (hit := self.lookup(kind, name, inputs)) is not None:
            logger.info("step %s/%s: unchanged (key %s), skipped", kind, name, hit.key[:12])
            self.skipped.append(f"{kind}/{name}")
            self._record("skipped", hit, None)
            return hit
        key = self.key(kind, inputs)
        final = self.path_for(kind, name, key)
        logger.info("step %s/%s: running (key %s)", kind, name, key[:12])
        t0 = time.perf_counter()
        with atomic_dir(final) as tmp:
            meta = dict(produce(tmp) or {})
            seconds = time.perf_counter() - t0
            atomic_write_json(tmp / STEP_FILE, {"key": key, "kind": kind, "name": name, "inputs": inputs,
                                                "meta": meta, "seconds": seconds, "versions": self.versions,
                                                "outputs": output_hashes(tmp)})
        logger.info("step %s/%s: done in %.1f s", kind, name, seconds)
        res = StepResult(kind, name, key, final, meta, False, seconds)
        self.ran.append(f"{kind}/{name}")
        reason = self.damaged.pop(key, None)
        self._record("recomputed" if reason else "ran", res, inputs, reason)
        return res

    def _run_follower(self, kind: str, name: str, inputs: Mapping[str, Any],
                      produce: Callable[[Path], Mapping[str, Any] | None], collective: bool) -> StepResult:
        key = self.key(kind, inputs)
        if collective:
            if (hit := self.lookup(kind, name, inputs)) is not None:
                self.skipped.append(f"{kind}/{name}")
                return hit
            # Our share of the work; rank 0 gathers every rank's results and writes the step.
            scratch = Path(tempfile.mkdtemp(prefix=f".rank{self.rank}-", dir=self.root))
            t0 = time.perf_counter()
            try:
                meta = dict(produce(scratch) or {})
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            self.ran.append(f"{kind}/{name}")
            return StepResult(kind, name, key, self.path_for(kind, name, key), meta, False, time.perf_counter() - t0)
        logger.info("rank %d: waiting for rank 0 to finish step %s/%s", self.rank, kind, name)
        deadline = time.monotonic() + self.wait_timeout_s
        while (hit := self.lookup(kind, name, inputs)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {self.rank}: step {kind}/{name} did not appear in "
                                   f"{self.wait_timeout_s:.0f} s; did rank 0 fail? see its log")
            time.sleep(1.0)
        self.skipped.append(f"{kind}/{name}")
        return hit
