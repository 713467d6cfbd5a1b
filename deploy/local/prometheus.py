"""A real Prometheus server (Debian package ``prometheus``) for the operations end-to-end test.

``ensure_prometheus_installed`` installs the package when ``prometheus``/``promtool`` are missing (a fresh
machine); :class:`PrometheusServer` runs one on a loopback port with a generated scrape configuration."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from deploy.local._proc import tail

RULES = Path(__file__).resolve().parents[1] / "prometheus" / "alerts.yml"


class PrometheusSetupError(RuntimeError):
    pass


def ensure_prometheus_installed() -> None:
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "prometheus"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PrometheusSetupError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    # the package starts a system service on :9090; we run our own on a free port
    subprocess.run(["systemctl", "disable", "--now", "prometheus"], capture_output=True, check=False)


class PrometheusServer:
    def __init__(self, data_dir: Path, port: int, targets: dict[str, str], scrape_interval: str = "1s") -> None:
        self.data_dir, self.port, self.targets, self.scrape_interval = data_dir, port, targets, scrape_interval
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        ensure_prometheus_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(RULES, self.data_dir / "alerts.yml")
        jobs = "\n".join(
            f"  - job_name: odc-{name}\n    static_configs:\n      - targets: ['{target}']"
            for name, target in self.targets.items()
        )
        config = self.data_dir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: {self.scrape_interval}\n"
            f"rule_files:\n  - alerts.yml\nscrape_configs:\n{jobs}\n"
        )
        log = open(self.data_dir / "prometheus.log", "ab")  # noqa: SIM115 - kept open for the child
        self._proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self._proc.poll() is not None:
                break
            time.sleep(0.2)
        raise PrometheusSetupError(f"prometheus not ready:\n{tail(self.data_dir / 'prometheus.log', 30)}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise PrometheusSetupError(f"query {expr!r} failed: {doc}")
        return list(doc["data"]["result"])

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
