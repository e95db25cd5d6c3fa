"""wandb logging of sweep points and of the sweep summary.

Works without an account: with no `WANDB_MODE` set and no API key, runs are written offline under
`<dir>/wandb/offline-run-*` for a later `wandb sync`. One run per point (config = the point;
metrics = gap closed, net win, their CIs, answer lengths; the leaderboard as a table and its plot
as an image), grouped under the sweep's name; a summary run ranks the points.

Needs wandb >= 0.19.10, the first release with `wandb.init(reinit="create_new")` (wandb's v0.19.10
release notes, wandb/wandb#9562).
"""

from __future__ import annotations

import configparser
import csv
import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


DEFAULT_BASE_URL = "https://api.wandb.ai"


def wandb_base_url() -> str:
    """The server wandb will talk to: $WANDB_BASE_URL, else the `base_url` that `wandb login --host`
    saved in wandb's settings file, else wandb's cloud."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(config_dir / "settings", encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        logger.debug("unreadable wandb settings in %s: %s", config_dir, exc)
    return parser.get("default", "base_url", fallback="") or DEFAULT_BASE_URL


def _netrc_key(machine: str) -> bool:
    """Whether the netrc file wandb reads has an API key for `machine` (looked up as wandb does:
    $NETRC, else ~/.netrc; an unparsable file holds no key for wandb either)."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        creds = netrc.netrc(str(path)).authenticators(machine)
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError) as exc:
        if path.exists():
            logger.debug("wandb: cannot read %s (%s)", path, exc)
        return False
    return bool(creds and creds[2])


def wandb_mode() -> str:
    """`WANDB_MODE` if set; otherwise online only when wandb will find an API key for its server
    ($WANDB_API_KEY, or a netrc entry for the server of `wandb_base_url()`, self-hosted ones
    included), so nothing ever prompts."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    url = wandb_base_url()
    # wandb keys its netrc entries by the URL's host[:port] (`wandb login --host` writes them so).
    machine = urlsplit(url if "://" in url else f"https://{url}").netloc
    if machine and _netrc_key(machine):
        return "online"
    if url.rstrip("/") != DEFAULT_BASE_URL:
        logger.warning("wandb server %s is configured but no API key for it was found ($WANDB_API_KEY or a "
                       "netrc entry `machine %s`); writing offline runs (`wandb login --host %s`, then "
                       "`wandb sync` them)", url, machine, url)
    return "offline"


def init_run(*, project: str, group: str, name: str, config: dict[str, Any], job_type: str,
             directory: Path, entity: str | None = None, tags: list[str] | None = None) -> Any:
    # lazy: wandb costs 1.8 s to import (measured on AMD EPYC, 2 cores) and is optional
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    mode = wandb_mode()
    run = wandb.init(project=project, entity=entity, group=group, name=name, job_type=job_type,
                     config=config, dir=str(directory), mode=mode, tags=tags, reinit="create_new",
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    logger.info("wandb run %s (%s, %s): %s", name, job_type, mode, getattr(run, "dir", "?"))
    return run


def csv_table(path: Path) -> Any:
    """A leaderboard CSV as a wandb.Table (columns from the header)."""
    # lazy: wandb costs 1.8 s to import (measured on AMD EPYC, 2 cores) and is optional
    import wandb

    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return wandb.Table(columns=["empty"], data=[])
    return wandb.Table(columns=rows[0], data=rows[1:])


def log_point(run: Any, metrics: dict[str, float | int | None], *, leaderboard_csv: Path | None = None,
              plot_png: Path | None = None, prefix: str = "sweep") -> None:
    """Log one point's metrics (as `prefix/name`) and its leaderboard media; sets them as the summary."""
    # lazy: wandb costs 1.8 s to import (measured on AMD EPYC, 2 cores) and is optional
    import wandb

    clean = {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
    payload: dict[str, Any] = dict(clean)
    if leaderboard_csv is not None and leaderboard_csv.exists():
        payload["leaderboard"] = csv_table(leaderboard_csv)
    if plot_png is not None and plot_png.exists():
        payload["leaderboard_plot"] = wandb.Image(str(plot_png))
    run.log(payload)
    for k, v in clean.items():
        run.summary[k] = v


def log_summary(run: Any, ranking: list[dict[str, Any]], heldout: dict[str, Any] | None) -> None:
    """The summary run: every point ranked (a table), and the best point's held-out figures."""
    # lazy: wandb costs 1.8 s to import (measured on AMD EPYC, 2 cores) and is optional
    import wandb

    if ranking:
        cols = sorted({k for r in ranking for k in r}, key=lambda c: (c != "rank", c != "point", c))
        run.log({"ranking": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in ranking])})
    if heldout:
        for k, v in heldout.items():
            if isinstance(v, int | float):
                run.summary[f"heldout/{k}"] = v
        run.log({f"heldout/{k}": v for k, v in heldout.items() if isinstance(v, int | float)})
