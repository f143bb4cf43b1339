"""Training's feature table beyond one process: encoding rate with 1 and 2 processes, and each
process's memory with the lazy table against the whole table loaded.

    python benchmarks/features.py encode          # the default synthetic set (6,000 conversations)
    python benchmarks/features.py encode --num 600
    python benchmarks/features.py table           # 20,000 and 100,000 cached 1024-d features

``encode`` runs ``modaverse train`` on a fresh feature cache (one step whose batch reaches every
conversation, so every file is encoded), once as one process and once under ``accelerate launch
--num_processes 2`` (two CPU processes over gloo), reads the encoding time the run logs ("newly
encoded by N process(es) in S s") and stops the run there: the files each process hashes and
encodes are its share. Run it on an otherwise idle machine.

``table`` fills a cache with N random features (the shard layout ``modaverse train`` writes), then
in a fresh process per case reads 2,000 random batches of 8 rows, as training does, either through
:class:`~modaverse.encoder.features.LazyTable` or from the whole table loaded first (what every
process did before), and reports the peak resident memory above the process's baseline.
Results go to benchmarks/results/features-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DIM, BATCHES, ROWS = 1024, 2000, 8

#: The reader each ``table`` case runs in a fresh process: peak RSS (kB) after imports, then after reading.
READER = """
import json, random, resource, sys, time
from modaverse.encoder.features import FeatureCache, LazyTable
cache, keys = FeatureCache(sys.argv[1], "bench"), json.loads(open(sys.argv[2]).read())
cache.index()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
table = LazyTable(cache, keys) if sys.argv[3] == "lazy" else cache.get(keys)
rng = random.Random(0)
batches, size = int(sys.argv[4]), int(sys.argv[5])
t = time.perf_counter()
for _ in range(batches):
    batch = table[[rng.randrange(len(keys)) for _ in range(size)]]
took = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_mb": base / 1024, "peak_mb": peak / 1024, "seconds": took}))
"""


def _fill(folder: Path, n: int) -> list[str]:
    import torch
    from safetensors.torch import save_file

    from modaverse.encoder.features import SHARD_SIZE

    folder.mkdir(parents=True, exist_ok=True)
    keys = [f"image-{i:064x}" for i in range(n)]
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n, SHARD_SIZE):
        chunk = keys[start : start + SHARD_SIZE]
        feats = torch.randn(len(chunk), DIM, generator=gen)
        save_file({k: f.contiguous() for k, f in zip(chunk, feats, strict=True)},
                  str(folder / f"shard-0-{start // SHARD_SIZE:05d}.safetensors"))
    return keys


def table(sizes: list[int]) -> dict:
    out = {"dim": DIM, "batches": BATCHES, "rows_per_batch": ROWS, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            keys = _fill(Path(tmp) / "bench", n)
            (Path(tmp) / "keys.json").write_text(json.dumps(keys))
            for mode in ("whole", "lazy"):
                r = subprocess.run([sys.executable, "-c", READER, tmp, str(Path(tmp) / "keys.json"), mode, str(BATCHES),
                                    str(ROWS)],
                                   capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                if r.returncode:
                    sys.exit(r.stderr[-2000:])
                m = json.loads(r.stdout)
                case = {"features": n, "table_mb": round(n * DIM * 4 / 2**20), "reader": mode,
                        "peak_rss_mb": round(m["peak_mb"]), "above_baseline_mb": round(m["peak_mb"] - m["baseline_mb"]),
                        "ms_per_batch": round(1000 * m["seconds"] / BATCHES, 3)}
                print(json.dumps(case), flush=True)
                out["cases"].append(case)
    return out


def encode(num: int) -> dict:
    out = {"conversations": num, "runs": []}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "modaverse", "data", "synth", "--output", str(data), "--num", str(num),
                        "--seed", "0"], check=True, capture_output=True, env=env)
        for procs in (1, 2):
            launcher = [sys.executable] if procs == 1 else [
                sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
            # one step whose batch reaches every conversation, so every file is encoded; the run is stopped
            # once it logs its features line (the encoding is what is measured)
            cmd = [*launcher, "-m", "modaverse", "train", "--config", "tiny-train", "--max-steps", "1",
                   "--output-dir", str(Path(tmp) / f"run{procs}"), "--set", f"train.data={data / 'train.jsonl'}",
                   "--set", f"train.batch_size={num}", "--set", f"train.feature_cache={Path(tmp) / f'cache{procs}'}",
                   "--set", "train.eval_data=null"]
            t = time.perf_counter()
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                                    start_new_session=True)
            pattern = re.compile(r"features: (\d+) distinct files, (\d+) newly encoded by (\d+) process\(es\) in "
                                 r"([0-9.]+) s")
            m, tail = None, []
            for line in proc.stderr:
                tail = [*tail[-20:], line]
                m = pattern.search(line)
                if m:
                    break
            wall = time.perf_counter() - t
            os.killpg(proc.pid, 9)
            proc.wait()
            if m is None:
                sys.exit("".join(tail))
            run = {"processes": procs, "files": int(m[2]), "encode_seconds": float(m[4]),
                   "files_per_second": round(int(m[2]) / float(m[4]), 1), "command_seconds_to_encoded": round(wall, 1)}
            print(json.dumps(run), flush=True)
            out["runs"].append(run)
    one, two = out["runs"]
    out["speedup"] = round(two["files_per_second"] / one["files_per_second"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["encode", "table"])
    p.add_argument("--num", type=int, default=6000, help="encode: conversations in the synthetic set")
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000], help="table: features cached")
    args = p.parse_args()
    result = encode(args.num) if args.what == "encode" else table(args.sizes)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"features-{args.what}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
