"""`alignez-eval sweep-agent`: run the one point `wandb agent` hands over in `wandb.config`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Started by `wandb agent` from the config written by `alignez-eval sweep --emit-wandb-sweep`; "
                "evaluates the point on the sweep split of the prompts (report the winner on the held-out "
                "split with `alignez-eval sweep --config CONFIG`, which reuses every cached step).")
    p.add_argument("--config", required=True, type=Path, help="the sweep YAML the native config came from")
    p.add_argument("--work-dir", type=Path, help="default runs/sweep-NAME (shared by all agents on a machine)")


def main(args: argparse.Namespace) -> int:
    import wandb

    from alignez_eval.pipeline import tracking
    from alignez_eval.pipeline.sweep import SweepPipeline
    from alignez_eval.pipeline.sweep_config import SWEEP_PARAMS, load_sweep

    cfg = load_sweep(args.config)
    pipe = SweepPipeline(cfg, work_dir=args.work_dir, use_wandb=False)
    pipe.work_dir.mkdir(parents=True, exist_ok=True)
    # Under `wandb agent`, init() merges the point the controller chose (WANDB_SWEEP_PARAM_PATH) into config.
    run = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, group=cfg.name, job_type="sweep-point",
                     dir=str(pipe.work_dir), mode=tracking.wandb_mode())
    point = {**cfg.fixed, **{k: v for k, v in dict(run.config).items() if k in SWEEP_PARAMS}}
    run.name = pipe.label(point)
    try:
        pipe.prepare_baselines()
        res = pipe.run_point(point, run=run)
    finally:
        pipe.base_slot.close()
        run.finish()
    print(f"{res.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in res.metrics.items() if isinstance(v, int | float)))
    return 0
