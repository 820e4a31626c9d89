"""Peak resident memory of another process, sampled from a thread while a benchmark drives it."""

from __future__ import annotations

import threading

import psutil


class RssSampler(threading.Thread):
    """Samples `pid`'s RSS every `interval` seconds until `stop` is set (or the process is gone).

    `before` is the RSS when the sampler was made, `peak` the largest seen since.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.before = self.proc.memory_info().rss
        self.peak = self.before
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
