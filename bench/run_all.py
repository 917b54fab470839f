"""`make bench`: every benchmark, one after another; figures go to stdout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_node.py", "bench_delivery.py", "bench_grasping.py", "bench_owl_cache.py", "bench_clip.py",
           "bench_precision.py", "bench_precision_node.py", "bench_gpu.py", "bench_standing_load.py",
           "bench_lockstep.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in BENCHES:
        print(f"== {script}", flush=True)
        if subprocess.call([sys.executable, str(here / script)]) != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
