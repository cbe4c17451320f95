"""Shared helpers of the benchmark scripts: medians of repeated timings, peak memory, reports."""

import datetime
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

import analytic_denoisers as ad
from analytic_denoisers.sampling import seeded_noise

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Context manager: peak resident memory above the starting level, sampled every 1 ms.

    ``with PeakRSS() as mem: work()`` then ``mem.peak_mib``. Linux only (reads /proc/self/statm).
    """

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mib(self):
        return (self.peak - self.start) / 2**20


def median_time(fn, repeats=7, warmup=1):
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_line():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def report_header(title):
    """Markdown lines: title, the exact command, date and machine."""
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"# {title}", "", f"Command: `{command}`", "", f"Run: {now} on {machine_line()}.", ""]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def fashion_mnist_inputs(root, batch):
    """Full Fashion-MNIST train set, the first ``batch`` test images and their seeded noise."""
    X = ad.datasets.load("fashion-mnist", "train", root)
    test = ad.datasets.load("fashion-mnist", "test", root)[:batch]
    return X, test, seeded_noise(range(batch), test.shape[1:])


def write_report(lines, out=None):
    """Print the markdown report and, if ``out`` is given, write it there."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
