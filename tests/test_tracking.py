"""pipeline/tracking: when runs go online (credentials wandb will find, self-hosted servers included)
and real offline runs through the installed wandb with the arguments init_run passes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from alignez_eval.pipeline import tracking

CORP = "wandb.corp.example"


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no wandb settings and no netrc, and no wandb variables: the offline baseline."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_CONFIG_DIR", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    return home


def _netrc(path: Path, *hosts: str) -> Path:
    path.write_text("".join(f"machine {h}\n  login user\n  password k{i:039d}\n" for i, h in enumerate(hosts)))
    path.chmod(0o600)
    return path


def test_no_credentials_is_offline(clean_env: Path) -> None:
    assert tracking.wandb_mode() == "offline"
    _netrc(clean_env / ".netrc", "github.com")  # a netrc, but nothing for wandb
    assert tracking.wandb_mode() == "offline"


def test_wandb_mode_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode() == "disabled"


def test_api_key_is_logged_in(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"https://{CORP}")
    monkeypatch.setenv("WANDB_API_KEY", "local-" + "x" * 40)
    assert tracking.wandb_mode() == "online"


def test_cloud_netrc_in_home_is_logged_in(clean_env: Path) -> None:
    _netrc(clean_env / ".netrc", "github.com", "api.wandb.ai")
    assert tracking.wandb_mode() == "online"


def test_self_hosted_base_url_with_its_netrc_entry(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"https://{CORP}/")
    monkeypatch.setenv("NETRC", str(_netrc(tmp_path / "netrc", CORP)))
    assert tracking.wandb_mode() == "online"
    # wandb keys netrc entries by host:port when the URL has a port (`wandb login --host` writes that).
    monkeypatch.setenv("WANDB_BASE_URL", f"http://{CORP}:8080")
    assert tracking.wandb_mode() == "offline"
    monkeypatch.setenv("NETRC", str(_netrc(tmp_path / "netrc-port", f"{CORP}:8080")))
    assert tracking.wandb_mode() == "online"
    # A key for the cloud is no key for this server: offline, and the log says what to do.
    monkeypatch.setenv("NETRC", str(_netrc(tmp_path / "netrc-cloud", "api.wandb.ai")))
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        assert tracking.wandb_mode() == "offline"
    assert f"machine {CORP}:8080" in caplog.text and "wandb login --host" in caplog.text


def test_netrc_entry_for_the_host_wandb_login_saved(clean_env: Path) -> None:
    """`wandb login --host URL` leaves the URL in wandb's settings file and the key in ~/.netrc
    under that other host; no variable is set."""
    settings = clean_env / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(f"[default]\nbase_url = https://{CORP}\n")
    _netrc(clean_env / ".netrc", CORP)
    assert tracking.wandb_base_url() == f"https://{CORP}"
    assert tracking.wandb_mode() == "online"
    settings.write_text("[default]\n")
    assert tracking.wandb_mode() == "offline"


def test_init_run_offline_runs_side_by_side(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed wandb takes init_run's arguments (reinit="create_new" needs wandb >= 0.19.10,
    the bound in pyproject.toml): two runs open at once, each logged and finished."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    csv = tmp_path / "lb.csv"
    csv.write_text("system,net_win\nalignez,0.25\n")
    runs = [tracking.init_run(project="p", group="g", name=f"point-{i}", config={"alpha": i}, job_type="sweep-point",
                              directory=tmp_path / "w") for i in range(2)]
    try:
        assert runs[0].id != runs[1].id
        for i, run in enumerate(runs):
            tracking.log_point(run, {"net_win": 0.25 * i, "n": 4, "skip": None}, leaderboard_csv=csv)
            assert run.summary["sweep/net_win"] == 0.25 * i and "sweep/skip" not in dict(run.summary)
    finally:
        for run in runs:
            run.finish()
    assert len(list((tmp_path / "w" / "wandb").glob("offline-run-*"))) == 2
    assert isinstance(tracking.csv_table(csv), wandb.Table)
