"""A private Ray head on this machine, for tests and benchmarks of the cluster path.

`LocalHead` runs ``ray start --head --block`` with every port chosen free,
its own RAY_TMPDIR (no other Ray on the machine finds it, joins it, or is
stopped with it) and token authentication with a token made for it. Its
``env`` is the environment for clients (``ray job submit``, drivers).
Stopping it (SIGTERM to the blocking ``ray start``) stops every process it
started; ``ray stop``, which stops every Ray on the machine, is never used.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalHead:
    """``with LocalHead(num_cpus=2) as head: …`` — head.dashboard_url, head.env."""

    def __init__(self, num_cpus: int, num_gpus: int = 0, base_env: dict | None = None):
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.tmp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: socket paths are limited
        token = Path(self.tmp) / "token"
        token.write_text(secrets.token_hex(32))
        bin_dir = str(Path(sys.executable).parent)
        env = dict(os.environ if base_env is None else base_env)
        env.pop("RAY_ADDRESS", None)
        env.update(RAY_TMPDIR=self.tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                   RAY_USAGE_STATS_ENABLED="0", PATH=f"{bin_dir}:{env.get('PATH', '')}")
        self.env = env
        self.ray = str(Path(bin_dir) / "ray")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.log = Path(self.tmp) / "head.log"
        self.proc: subprocess.Popen | None = None

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def start(self, timeout: float = 180) -> "LocalHead":
        ports = {"--port": self.gcs_port, "--dashboard-port": self.dashboard_port,
                 "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port()}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [self.ray, "start", "--head", "--block", f"--num-cpus={self.num_cpus}",
                 f"--num-gpus={self.num_gpus}", "--node-ip-address=127.0.0.1",
                 "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
                 *[f"{k}={v}" for k, v in ports.items()]],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start failed:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2)
                return self
            except urllib.error.HTTPError:
                return self  # it answers (asking for the token): it is up
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the head's dashboard did not answer in {timeout:.0f} s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "LocalHead":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
