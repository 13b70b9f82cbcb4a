"""How busy the machine is, for benchmarks that must not time a run disturbed by other work, and
what its CPU is."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_ticks() -> tuple[float, float]:
    """(busy, idle) seconds of all CPUs together since boot, from /proc/stat; busy counts the
    time the hypervisor gave to other machines (steal), which slows a run just as much."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, idle / hz


def wait_for_quiet(min_idle: float, max_wait: float) -> None:
    """Other work on the machine skews a timing: wait (a while) until the CPUs are idle."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        b0, i0 = cpu_ticks()
        time.sleep(1)
        b1, i1 = cpu_ticks()
        if (i1 - i0) / max(1e-9, b1 - b0 + i1 - i0) >= min_idle:
            return


def cpu_line() -> str:
    """The CPU's model name and which bfloat16 instructions it has, from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown")
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines()
                  if line.startswith("flags")), set())
    has = ", ".join(f"{f} {'yes' if f in flags else 'no'}"
                    for f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    return f"CPU: {model}, {os.cpu_count()} cores; {has}"
