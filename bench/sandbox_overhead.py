"""What DockerSandbox costs next to LocalSandbox, measured side by side in one run.

1. Per-step overhead: a trivial script (`pass`), run alternately in each sandbox; the
   Docker figure covers create, start, wait, logs and remove of the container.
2. Throughput: a tiny BERT forward loop for a fixed time inside each sandbox; the script
   itself reports forward passes per second, so start-up is not counted.

    python bench/sandbox_overhead.py [--runs 10] [--rounds 3] [--seconds 5] [--threads 1]

Needs a Docker engine (bash scripts/start-dockerd.sh). Prints a small table and JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.base import Limits, Sandbox
from sandbox.docker import DockerSandbox
from sandbox.local import LocalSandbox

BERT_LOOP = """
import json, sys, time
import torch
from transformers import BertConfig, BertModel

seconds = float(sys.argv[1])
torch.manual_seed(0)
config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=256)
model = BertModel(config).eval()
batch = torch.randint(0, 1000, (16, 64))
with torch.inference_mode():
    for _ in range(3):
        model(input_ids=batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model(input_ids=batch)
        done += 1
    elapsed = time.perf_counter() - start
print(json.dumps({"forward_per_s": done / elapsed, "threads": torch.get_num_threads()}))
"""


def wall_ms(sandbox: Sandbox, script: Path, work: Path, limits: Limits) -> float:
    start = time.perf_counter()
    result = sandbox.run(script, [], inputs=[], output_dir=work / sandbox.name, limits=limits)
    elapsed = (time.perf_counter() - start) * 1000
    if not result.ok:
        raise SystemExit(f"{sandbox.name}: {result.reason()}")
    return elapsed


def forward_per_s(sandbox: Sandbox, script: Path, work: Path, limits: Limits, seconds: float):
    result = sandbox.run(
        script, [str(seconds)], inputs=[], output_dir=work / sandbox.name, limits=limits
    )
    if not result.ok:
        raise SystemExit(f"{sandbox.name}: {result.reason()}")
    return json.loads(result.stdout_tail.strip().splitlines()[-1])["forward_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="trivial-script runs per sandbox")
    parser.add_argument("--rounds", type=int, default=3, help="BERT loops per sandbox")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one BERT loop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the loop")
    args = parser.parse_args()

    local, docker = LocalSandbox(), DockerSandbox(device="cpu")
    limits = Limits(timeout_s=600, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        work = Path(tmp)
        trivial, bert = work / "trivial.py", work / "bert_loop.py"
        trivial.write_text("pass\n")
        bert.write_text(textwrap.dedent(BERT_LOOP))

        # Alternate the two so drift in the machine's load hits both alike.
        start_ms: dict[str, list[float]] = {"local": [], "docker": []}
        wall_ms(docker, trivial, work, limits)  # warm the engine and the page cache
        for _ in range(args.runs):
            for sandbox in (local, docker):
                start_ms[sandbox.name].append(wall_ms(sandbox, trivial, work, limits))

        throughput: dict[str, list[float]] = {"local": [], "docker": []}
        for _ in range(args.rounds):
            for sandbox in (local, docker):
                rate = forward_per_s(sandbox, bert, work, limits, args.seconds)
                throughput[sandbox.name].append(rate)

    local_ms, docker_ms = (statistics.median(start_ms[k]) for k in ("local", "docker"))
    local_rate, docker_rate = (statistics.median(throughput[k]) for k in ("local", "docker"))
    report = {
        "trivial_script_ms": {
            "local_median": round(local_ms, 1),
            "docker_median": round(docker_ms, 1),
            "docker_extra_ms": round(docker_ms - local_ms, 1),
            "ratio": round(docker_ms / local_ms, 2),
            "runs": args.runs,
            "local_all": [round(v, 1) for v in start_ms["local"]],
            "docker_all": [round(v, 1) for v in start_ms["docker"]],
        },
        "bert_forward_per_s": {
            "local_median": round(local_rate, 2),
            "docker_median": round(docker_rate, 2),
            "docker_slower_pct": round((1 - docker_rate / local_rate) * 100, 1),
            "rounds": args.rounds,
            "seconds_each": args.seconds,
            "threads": args.threads,
            "local_all": [round(v, 2) for v in throughput["local"]],
            "docker_all": [round(v, 2) for v in throughput["docker"]],
        },
    }
    print(
        f"trivial script: local {local_ms:.0f} ms, docker {docker_ms:.0f} ms "
        f"(+{docker_ms - local_ms:.0f} ms, x{docker_ms / local_ms:.2f}), median of {args.runs}"
    )
    print(
        f"BERT forward/s: local {local_rate:.1f}, docker {docker_rate:.1f} "
        f"({report['bert_forward_per_s']['docker_slower_pct']:+.1f}% slower in docker), "
        f"median of {args.rounds} x {args.seconds:.0f} s, {args.threads} thread(s)"
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
