"""Benchmark: a fresh install of a requirements file, as a new user does it.

    python3 benchmarks/bench_install.py                        # the lock, requirements.txt
    python3 benchmarks/bench_install.py --requirements old.txt # e.g. an earlier, unlocked file
    python3 benchmarks/bench_install.py --installer uv         # uv instead of pip (uv on PATH)

Standard library only (it runs before any environment exists). Creates a new virtual
environment with the given Python, installs FILE into it with an empty cache (every wheel is
downloaded): `pip install --no-cache-dir -r FILE`, or `uv pip install --no-cache
--compile-bytecode -r FILE` (pip compiles bytecode too). Prints a markdown row: the wall and CPU
time of the install, the distributions installed, how many of them the file does not pin with
`==`, and the lines of pip's log that say it backtracked. The environment is deleted afterwards
unless --keep.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pinned(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==", line)
        if m:
            names.add(normalise(m.group(1)))
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    ap.add_argument("--python", default=sys.executable, help="the Python of the new venv")
    ap.add_argument("--keep", type=Path, help="create the venv here and keep it")
    ap.add_argument("--installer", choices=("pip", "uv"), default="pip")
    args = ap.parse_args()

    venv = args.keep or Path(tempfile.mkdtemp(prefix="bench-install-")) / "venv"
    subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    install = ([*pip, "install", "--no-cache-dir", "--disable-pip-version-check"]
               if args.installer == "pip" else
               ["uv", "pip", "install", "-p", str(venv / "bin/python"), "--no-cache",
                "--compile-bytecode"])
    p = subprocess.run([*install, "-r", str(args.requirements)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"pip install failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    listed = json.loads(subprocess.run([*pip, "list", "--format=json"], capture_output=True,
                                       text=True, check=True).stdout)
    names = {normalise(d["name"]) for d in listed} - {"pip"}  # the venv's own installer
    unpinned = sorted(names - pinned(args.requirements))
    backtracks = len(re.findall(r"does not provide the extra|backtracking", p.stdout + p.stderr,
                                flags=re.IGNORECASE))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    version = subprocess.run([str(venv / "bin/python"), "-V"], capture_output=True,
                             text=True).stdout.strip()
    print(f"{args.requirements.name}, {version}, new venv, {args.installer}, empty cache\n")
    print("| file | installer | wall | CPU s | distributions | not pinned | backtracking lines |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    minutes, seconds = divmod(round(wall), 60)
    print(f"| {args.requirements.name} | {args.installer} | {minutes} min {seconds} s "
          f"| {cpu:.0f} | {len(names)} | {len(unpinned)} | {backtracks} |")
    if unpinned:
        print(f"\nnot pinned: {', '.join(unpinned)}")
    if not args.keep:
        shutil.rmtree(venv.parent)


if __name__ == "__main__":
    main()
