"""50 concurrent REST requests against `modaverse serve` on the tiny profile.

Starts the real server (a subprocess on loopback), fires ``--requests`` requests at once
(each a text-to-image request with its own seed, half of them with an image upload), and
reports how many were answered (200) or cleanly refused (503 + Retry-After), that none was
lost, and the latency of the answered ones (p50/p95), plus the refusal latency.

    python benchmarks/serve.py                          # 50 requests, queue 8
    python benchmarks/serve.py --requests 200 --queue-size 32
    python benchmarks/serve.py --hostile 12             # 12 concurrent decompression bombs
    python benchmarks/serve.py --throughput             # 32 chat requests: one at a time, then 16 at a time
    python benchmarks/serve.py --throughput --config smol
    python benchmarks/serve.py --overhead 8             # grammar cost per decoding step at batch 8

Throughput mode sends the same 32 ``/v1/chat/completions`` requests (half with an image, half
text-only, greedy, ``render: false``: rendering is not batched) first one at a time and then 16
at a time to one server (``--max-batch 16``), and reports requests/s, p50/p95 latency and the
batch sizes the server formed. Overhead mode decodes a batch in-process with and without the
meta-response grammar for the same number of steps (``max_new_tokens``, end tokens suppressed
for both) and reports ms per step.

Hostile mode sends ``--hostile`` uploads at once of a 1-bit PNG of ``--bomb-side`` squared pixels
(a few kB on disk; the default 9000 is 81 MP, under Pillow's own 89 MP warning, and costs about
320 MB once converted to RGB; 7000 is 49 MP, under media.max_pixels, so it is decoded) and reports the server's peak RSS growth over its idle RSS, sampled every 20 ms, with the
status codes the uploads got.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/serve-tiny-cpu[-hostile].json)")
    ap.add_argument("--hostile", type=int, default=0, metavar="N", help="send N bomb uploads at once instead")
    ap.add_argument("--bomb-side", type=int, default=9000, metavar="PX", help="side of the hostile 1-bit PNG")
    ap.add_argument("--throughput", action="store_true", help="sequential vs 16 concurrent chat requests")
    ap.add_argument("--batch-wait-ms", type=float, default=100.0, metavar="MS",
                    help="the server's --batch-wait-ms in throughput mode (default 100)")
    ap.add_argument("--overhead", type=int, metavar="B", help="grammar cost per step at batch B (in-process)")
    ap.add_argument("--source", help="serve another checkout's package (its root folder), for before/after figures")
    args = ap.parse_args()
    if args.overhead:
        return overhead(args)
    if args.throughput:
        args.out = args.out or ROOT / "benchmarks" / "results" / f"serve-{args.config}-cpu-throughput.json"
        return throughput(args)
    suffix = "-hostile" if args.hostile else ""
    args.out = args.out or ROOT / "benchmarks" / "results" / f"serve-tiny-cpu{suffix}.json"

    from modaverse.data.synth import write_benchmark_set

    tmp = Path(tempfile.mkdtemp(prefix="modaverse-bench-serve-"))
    picture = write_benchmark_set(tmp / "data", "image", num=1) / "image" / "00000.png"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "modaverse"
    server = subprocess.Popen([str(exe), "serve", "--config", args.config, "--port", str(port), "--no-ui",
                               "--queue-size", str(args.queue_size), "--outputs", str(tmp / "outputs"),
                               "--log-level", "warning"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        start = time.time()
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() - start > 300:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        ready_s = time.time() - start
        if args.hostile:
            return hostile(args, url, server.pid, tmp, ready_s)
        results: list[tuple[int, float, str | None]] = []
        lost: list[str] = []
        barrier = threading.Barrier(args.requests)

        def one(i: int) -> None:
            data = {"instruction": "Draw a picture like <media>." if i % 2 else "Draw a red circle.", "seed": str(i)}
            files = [("files", ("p.png", picture.read_bytes(), "image/png"))] if i % 2 else []
            barrier.wait()
            t = time.perf_counter()
            try:
                r = httpx.post(url + "/v1/generate", data=data, files=files, timeout=600)
                results.append((r.status_code, time.perf_counter() - t, r.headers.get("retry-after")))
            except Exception as e:
                lost.append(f"{type(e).__name__}: {e}")

        wall = run_all([threading.Thread(target=one, args=(i,)) for i in range(args.requests)])
    finally:
        server.terminate()
        server.wait(timeout=30)
    ok = [s for code, s, _ in results if code == 200]
    refused = [s for code, s, ra in results if code == 503 and ra]
    other = [code for code, _, ra in results if code != 200 and not (code == 503 and ra)]
    report = {
        "requests": args.requests, "queue_size": args.queue_size, "server_ready_s": round(ready_s, 1),
        "answered": len(ok), "refused_503": len(refused), "other_status": other, "lost": lost,
        "answered_p50_s": percentile(ok, 50), "answered_p95_s": percentile(ok, 95),
        "refused_p50_s": percentile(refused, 50), "refused_p95_s": percentile(refused, 95),
        "wall_s": round(wall, 2),
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if lost or other or len(results) != args.requests:
        raise SystemExit("some requests were lost or got an unexpected status")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hostile(args, url: str, pid: int, tmp: Path, ready_s: float) -> None:
    from PIL import Image

    bomb = tmp / "bomb.png"
    Image.new("1", (args.bomb_side, args.bomb_side)).save(bomb, format="PNG", optimize=True)
    payload = bomb.read_bytes()
    time.sleep(1.0)
    idle = rss_mb(pid)
    peak, done = idle, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            time.sleep(0.02)

    codes: list[int] = []
    barrier = threading.Barrier(args.hostile)

    def one(i: int) -> None:
        barrier.wait()
        try:
            r = httpx.post(url + "/v1/generate", data={"instruction": "Describe <media>."},
                           files=[("files", ("bomb.png", payload, "image/png"))], timeout=600)
            codes.append(r.status_code)
        except Exception as e:
            codes.append(-1)
            print(f"lost: {type(e).__name__}: {e}", file=sys.stderr)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.hostile)]
    wall = run_all(threads)
    time.sleep(0.5)
    done.set()
    sampler.join()
    report = {"hostile_uploads": args.hostile, "bomb": f"1-bit PNG {args.bomb_side}x{args.bomb_side}, "
              f"{len(payload)} bytes", "server_ready_s": round(ready_s, 1), "idle_rss_mb": round(idle),
              "peak_rss_mb": round(peak), "peak_growth_mb": round(peak - idle),
              "status_codes": {str(c): codes.count(c) for c in sorted(set(codes))}, "wall_s": round(wall, 2),
              "alive_after": httpx.get(url + "/healthz", timeout=10).status_code == 200}
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")




def _start(args, tmp: Path, *extra: str) -> tuple[subprocess.Popen, str, float]:
    """``modaverse serve`` on a free port, up once /healthz answers; with ``args.source``, the package of
    another checkout (a worktree of an earlier commit) serves, for before/after figures."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env, source = {**os.environ, "OMP_NUM_THREADS": "1"}, getattr(args, "source", None)
    if source:  # its folder comes first on the path (``-m`` puts the working directory there)
        env["PYTHONPATH"] = str(Path(source).resolve())
    server = subprocess.Popen([sys.executable, "-m", "modaverse", "serve", "--config", args.config, "--port", str(port),
                               "--no-ui", "--outputs", str(tmp / "outputs"), "--log-level", "warning", *extra], env=env,
                              cwd=Path(source).resolve() if source else ROOT)
    start = time.time()
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return server, url, time.time() - start
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.time() - start > 300:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def throughput(args) -> None:
    import base64

    from modaverse.data.synth import write_benchmark_set

    tmp = Path(tempfile.mkdtemp(prefix="modaverse-bench-serve-"))
    pictures = sorted((write_benchmark_set(tmp / "data", "image", num=16) / "image").glob("*.png"))
    asks = []
    for i in range(32):
        if i % 2:
            b64 = base64.b64encode(pictures[i // 2].read_bytes()).decode()
            content = [{"type": "text", "text": "What is in this picture?"},
                       {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}]
        else:
            content = f"Generate an image of a {['red', 'green', 'blue', 'yellow'][i % 4]} shape number {i}."
        asks.append({"messages": [{"role": "user", "content": content}], "render": False, "temperature": 0})
    server, url, ready_s = _start(args, tmp, "--max-batch", "16", "--batch-wait-ms", str(args.batch_wait_ms),
                                  "--queue-size", "32")

    def send(body) -> float:
        t = time.perf_counter()
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
        if r.status_code != 200:
            raise SystemExit(f"status {r.status_code}: {r.text}")
        return time.perf_counter() - t

    def sizes() -> dict:
        b = httpx.get(url + "/healthz").json()["batches"]
        return {**{f"start {k}": v for k, v in b["sizes"].items()}, **{f"steps at {k}": v for k, v in b["steps"].items()},
                "joined": b["joined"]}

    try:
        send(asks[0])  # warm-up: first-call costs (grammar build, allocations) are not the figure
        report = {"config": args.config, "requests": len(asks), "server_ready_s": round(ready_s, 1),
                  "max_batch": 16, "batch_wait_ms": args.batch_wait_ms}
        for name, concurrency in (("sequential", 1), ("concurrent_16", 16)):
            before = sizes()
            latencies: list[float] = []
            lock = threading.Lock()
            todo = list(range(len(asks)))

            def worker(lock=lock, todo=todo, latencies=latencies) -> None:
                while True:
                    with lock:
                        if not todo:
                            return
                        i = todo.pop(0)
                    spent = send(asks[i])
                    with lock:
                        latencies.append(spent)

            wall = run_all([threading.Thread(target=worker) for _ in range(concurrency)])
            after = sizes()
            formed = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
            report[name] = {"requests_per_s": round(len(asks) / wall, 2), "wall_s": round(wall, 2),
                            "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
                            "batches": formed}  # sizes at start, decoding steps per batch size, joins mid-decode
        report["speed_up"] = round(report["concurrent_16"]["requests_per_s"] / report["sequential"]["requests_per_s"], 2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def overhead(args) -> None:
    """Decoding steps timed one by one, free and constrained, over the same number of tokens: the steps
    where all B rows are still decoding in both (rows that end early would make the batches differ)."""
    import statistics

    import torch

    from modaverse.pipeline.assistant import ModaVerse
    from modaverse.pipeline.turn import Decoding

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    pipe = ModaVerse.from_config(args.config)
    batch = args.overhead
    prompts = [pipe.prepare(f"Generate an image of a {c} circle on a white background, number {i}.").inputs_embeds
               for i, c in enumerate(["red", "green", "blue", "yellow"] * (batch // 4 + 1))][:batch]

    def full_steps(constrained: bool) -> list[float]:
        session = pipe.session(Decoding(constrained, 96, 0.0, 0))
        session.join(range(batch), prompts, [None] * batch)
        times = []
        while len(session) == batch:
            t = time.perf_counter()
            session.step()
            times.append(time.perf_counter() - t)
        while len(session):
            session.step()
        return times[1:]  # the first step chooses from the prefill's logits: the same either way, left out

    runs: dict[bool, list[list[float]]] = {False: [], True: []}
    for constrained in (False, True) * 4:  # interleaved; the first pair warms up
        runs[constrained].append(full_steps(constrained))
    tokens = min(len(t) for r in runs.values() for t in r[1:])
    ms = {c: statistics.median(1000 * statistics.mean(t[:tokens]) for t in r[1:]) for c, r in runs.items()}
    report = {"config": args.config, "batch": batch, "steps_compared": tokens,
              "free_ms_per_step": round(ms[False], 2), "constrained_ms_per_step": round(ms[True], 2),
              "overhead_pct": round(100 * (ms[True] / ms[False] - 1), 1)}
    write_report(report, args.out or ROOT / "benchmarks" / "results" / f"grammar-batch{batch}-{args.config}-cpu.json")


def run_all(threads: list[threading.Thread]) -> float:
    """Starts the threads together and waits for them all; returns the seconds that took."""
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - wall


def write_report(report: dict, out: Path) -> None:
    """Prints a benchmark's figures and writes them where the docs quote them from."""
    print(json.dumps(report, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
