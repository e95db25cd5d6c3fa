"""`alignez-eval sweep`: grid/random search over edit settings, each point a wandb run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from alignez_eval.commands.compare import add_include_path_arg
from alignez_eval.errors import ConfigError

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  WANDB_MODE=offline alignez-eval sweep --config sweeps/demo_alpha_layers.yaml
  alignez-eval sweep --config sweeps/demo_alpha_layers.yaml --emit-wandb-sweep sweep.yaml
  wandb sweep sweep.yaml && wandb agent ENTITY/PROJECT/SWEEP_ID     # runs `alignez-eval sweep-agent`

Points are ranked on the sweep split of the prompts; the best one is reported on the held-out
split (reports/NAME/). Without WANDB_MODE and without wandb credentials, runs are kept offline
under WORK_DIR/wandb/ (upload later with `wandb sync`).
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--config", required=True, type=Path, help="sweep YAML (see sweeps/)")
    p.add_argument("--emit-wandb-sweep", type=Path, metavar="OUT.yaml",
                   help="write a native `wandb sweep` config (program: alignez-eval sweep-agent) and exit")
    p.add_argument("--work-dir", type=Path, help="default runs/sweep-NAME")
    p.add_argument("--report-root", type=Path, default=Path("reports"))
    p.add_argument("--no-wandb", action="store_true", help="do not log to wandb at all")
    add_include_path_arg(p)  # added to the config's own `include_path:`


def main(args: argparse.Namespace) -> int:
    from alignez_eval.pipeline.sweep_config import load_sweep, wandb_sweep_config

    if args.emit_wandb_sweep:
        if args.include_path:
            raise ConfigError("--include_path does not reach `wandb agent` runs (they read only the sweep YAML); "
                              "put `include_path: [DIR]` in the sweep YAML instead")
        # Keep ${model:...} unexpanded: the agent resolves it on the machine that runs the point.
        cfg = load_sweep(args.config, resolve=False)
        native = wandb_sweep_config(cfg, args.config)
        args.emit_wandb_sweep.parent.mkdir(parents=True, exist_ok=True)
        args.emit_wandb_sweep.write_text(yaml.safe_dump(native, sort_keys=False), encoding="utf-8")
        print(f"wrote {args.emit_wandb_sweep}: {len(cfg.points()) if cfg.search == 'grid' else cfg.n_points} "
              f"points; next: wandb sweep {args.emit_wandb_sweep}")
        return 0

    from alignez_eval.commands.compare import print_report
    from alignez_eval.pipeline.sweep import SweepPipeline, rank_points

    cfg = load_sweep(args.config)
    if args.include_path:
        cfg.include_path = (*cfg.include_path, *args.include_path)
    res = SweepPipeline(cfg, work_dir=args.work_dir, report_root=args.report_root,
                        use_wandb=not args.no_wandb).run()
    print(f"\nsweep {cfg.name}: {len(res.points)} points ranked by {cfg.metric} on the sweep split")
    for r in rank_points(res.points, cfg.metric):
        v = r.metrics.get(cfg.metric)
        print(f"  {'undefined' if v is None else f'{v:+.1f}':>9}  {r.name}")
    if res.best is not None and res.report:
        print(f"\nbest point {res.best.name}, evaluated on the held-out split:")
        print_report(res.report, "report")
    return 0
