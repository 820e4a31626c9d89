"""The worker's parent process never initialises CUDA (worker/runner.py: a CUDA context does not
survive the fork of each work-horse), checked in a subprocess that runs a real worker and a real job.

The subprocess wraps `torch.cuda._lazy_init` — the one function every CUDA-initialising path of
torch goes through, from Python or C++ — so that each call records the calling pid. Any call from
the parent fails the test even on a machine without a GPU, where the call would merely raise: the
tripwire catches the attempt, not only its success. On a GPU machine the work-horse (another pid)
initialises CUDA itself, which is allowed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from spotlight.server.settings import Settings
from spotlight.server.store import ArtifactStore

from .helpers import (
    QUICK,
    REPO_ROOT,
    enqueue,
    make_spec,
    meta_status,
    worker_env,
    write_dataset,
)

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch

    record = sys.argv[1]
    real_lazy_init = torch.cuda._lazy_init

    def tripwire():
        with open(record, "a") as f:
            f.write(f"{os.getpid()}\\n")
        return real_lazy_init()

    torch.cuda._lazy_init = tripwire
    from spotlight.client.cli import main

    code = main(["worker", "--burst", "--no-callbacks", "--name", "cuda-parent"])
    print(json.dumps({"pid": os.getpid(), "code": code, "initialized": torch.cuda.is_initialized()}))
""")


def test_the_worker_parent_never_initialises_cuda(redis_url: str, store_dir: Path, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, store_url=str(store_dir))
    job = enqueue(
        redis_url, make_spec(write_dataset(ArtifactStore(str(store_dir))), {**QUICK, "device": "auto"}), settings
    )
    record = tmp_path / "lazy_init_calls"
    record.touch()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(record)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=worker_env(redis_url, store_dir),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    parent = json.loads(done.stdout.strip().splitlines()[-1])

    assert meta_status(job) == "finished", done.stderr  # the job ran, in a horse forked from this parent
    callers = {int(line) for line in record.read_text().split()}
    assert parent["pid"] not in callers, "the worker's parent tried to initialise CUDA"
    assert parent["initialized"] is False and parent["code"] == 0
    device = job.get_meta(refresh=True)["device"]
    assert device.startswith("cuda") == bool(callers)  # only a horse that computes on CUDA initialises it
    redis.Redis.from_url(redis_url).close()
