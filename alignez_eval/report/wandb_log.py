"""Log a report to Weights & Biases through lm-eval's own `WandbLogger` (so it looks like any
lm-eval run there), plus the leaderboard table and figure. Honours WANDB_MODE=offline."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def log_report(results: dict[str, Any], paths: dict[str, Path], name: str, project: str | None = None,
               wandb_dir: str | Path | None = None) -> str:
    """-> the wandb run directory."""
    # lazy: wandb costs 1.8 s to import (measured on AMD EPYC, 2 cores) and is optional
    import wandb
    from lm_eval.loggers import WandbLogger

    init = {"project": project or "alignez-eval", "name": name, "job_type": "alignez-report", "reinit": True}
    # wandb reads WANDB_DIR once per process: after an earlier run in the same process (a sweep, a
    # test) a changed WANDB_DIR is ignored with a warning, so it is passed on explicitly
    wandb_dir = wandb_dir if wandb_dir is not None else os.environ.get("WANDB_DIR")
    if wandb_dir:
        init["dir"] = str(wandb_dir)
    wl = WandbLogger(init_args=init)
    try:
        wl.post_init(results)
        wl.log_eval_result()
        with open(paths["csv"], encoding="utf-8") as f:
            rows = list(csv.reader(f))
        table = wandb.Table(columns=rows[0], data=rows[1:])
        wl.run.log({"alignez/leaderboard": table, "alignez/leaderboard_png": wandb.Image(str(paths["png"]))})
        art = wandb.Artifact(f"report-{name}".replace("/", "_"), type="alignez_report")
        for key in ("md", "csv", "png", "json"):
            art.add_file(str(paths[key]))
        wl.run.log_artifact(art)
        run_dir = str(Path(wl.run.dir).parent)
    finally:
        wl.run.finish()
    logger.info("logged report %s to wandb (%s)", name, run_dir)
    return run_dir
