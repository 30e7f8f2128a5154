"""The Prefect server a stage talks to: one server shared by every stage of `affectflow repro`, gone when
it ends; a clear error when the configured server does not answer."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from pipeline.flows import run_with_server, wait_for_api

pytestmark = pytest.mark.slow

STAGE = """
import pipeline
from pipeline.flows import ensure_prefect_api
print("api", ensure_prefect_api())
"""


@pytest.fixture
def no_api(tmp_path, monkeypatch):
    """No Prefect API configured, here or in subprocesses, whatever settings are in force (the session's
    test harness)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@pytest.mark.usefixtures("no_api")
def test_repro_shares_one_server_between_stages_and_stops_it(tmp_path):
    script = tmp_path / "two_stages.sh"
    log = tmp_path / "stages.log"
    # two "stages", one after the other, as `dvc repro` runs them
    script.write_text(f"{sys.executable} -c '{STAGE}' >> {log}\n{sys.executable} -c '{STAGE}' >> {log}\n")
    assert run_with_server(["sh", str(script)]) == 0
    printed = log.read_text()
    urls = {line.split()[1] for line in printed.splitlines() if line.startswith("api ")}
    assert len(urls) == 1, printed  # both stages used the one server
    assert "temporary server" not in printed  # neither started its own
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{urls.pop()}/health", timeout=2)  # stopped with the command


@pytest.mark.usefixtures("no_api")
def test_repro_returns_the_commands_exit_code():
    assert run_with_server([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_an_unreachable_api_is_a_clear_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    with pytest.raises(RuntimeError, match=f"{url}.*did not answer.*within 1 s"):
        wait_for_api(url, timeout=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(RuntimeError, match="exited with code 0"):
        wait_for_api(url, timeout=30, process=dead)
