"""A soak test of ``modaverse serve``: a fixed mix of requests for many minutes, and what the server's
memory, file descriptors and outputs folder do meanwhile.

    python benchmarks/soak.py --minutes 10 --config tiny            # the issue's goal: 8 clients
    python benchmarks/soak.py --minutes 30 --config smol --clients 8

Each client sends, in a closed loop, the kinds below in turn (so every kind is sent by every client):

- ``greedy``: a text question, temperature 0, not streamed;
- ``greedy-image-stream``: a question about a picture, temperature 0, streamed;
- ``seeded``: a picture question with ``temperature`` 0.7 and a ``seed``;
- ``sampled``: a text question with ``temperature`` 0.7 and no seed (what LangChain sends by default);
- ``render``: a drawing request whose picture the server renders (``render: true``);
- ``generate-upload``: ``POST /v1/generate`` with the picture uploaded as a file.

A 503 is counted as a refusal and retried after its ``Retry-After``; a client's own timeout
(``--timeout``, default 120 s) is counted as a timeout. Every 2 s the server's resident memory
(``/proc/PID/status``), open file descriptors and the outputs folder's size are sampled; the
server runs with ``--outputs-ttl`` (default 60 s). Reports per kind: count, p50, p95, p99 and
maximum latency, refusals, timeouts, errors; the longest wait against 10x its kind's p50; RSS after
the warm-up against the end. Results: ``benchmarks/results/soak-<config>-<minutes>min.json``.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import _start, percentile, run_all, write_report  # noqa: E402

KINDS = ("greedy", "greedy-image-stream", "seeded", "sampled", "render", "generate-upload")


def _picture(tmp: Path) -> Path:
    from modaverse.data.synth import write_benchmark_set

    return sorted((write_benchmark_set(tmp / "data", "image", num=1) / "image").glob("*.png"))[0]


def _chat(content, **extra) -> dict:
    return {"messages": [{"role": "user", "content": content}], "render": False, "max_tokens": 96, **extra}


def _send(http: httpx.Client, url: str, kind: str, picture: Path, n: int) -> int:
    """One request of ``kind``; returns its HTTP status (a stream is read to its end)."""
    image = {"type": "image_url",
             "image_url": {"url": "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()}}
    ask = [{"type": "text", "text": "What is in this picture?"}, image]
    if kind == "generate-upload":
        with picture.open("rb") as f:
            return http.post(url + "/v1/generate", data={"instruction": "What is in <media>?"},
                             files={"files": (picture.name, f, "image/png")}).status_code
    body = {"greedy": _chat(f"Tell me about shape number {n}.", temperature=0),
            "greedy-image-stream": _chat(ask, temperature=0, stream=True),
            "seeded": _chat(ask, temperature=0.7, seed=n),
            "sampled": _chat(f"Describe a colour, please ({n}).", temperature=0.7),
            "render": {**_chat("Generate an image of a red circle.", temperature=0), "render": True}}[kind]
    if body.get("stream"):
        with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
            for _ in r.iter_lines():
                pass
            return r.status_code
    return http.post(url + "/v1/chat/completions", json=body).status_code


def _proc(pid: int) -> tuple[float, int]:
    """The process's resident memory (MB) and open file descriptors."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def _size_mb(folder: Path) -> float:
    """The folder's size; what ``--outputs-ttl`` prunes during the walk counts as gone."""
    total = 0
    for root, _, files in os.walk(folder):  # os.walk skips folders removed under it; rglob raises
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total / 2**20


def soak(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="modaverse-soak-"))
    picture = _picture(tmp)
    server, url, ready_s = _start(args, tmp, "--outputs-ttl", str(args.outputs_ttl))
    latencies: dict[str, list[float]] = defaultdict(list)
    refused: dict[str, int] = defaultdict(int)
    timeouts: dict[str, int] = defaultdict(int)
    errors: dict[str, list[str]] = defaultdict(list)
    samples: list[dict] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop = start + args.minutes * 60

    def client(i: int) -> None:
        n = i  # client i starts at kind i and goes through all of them in turn; n also varies the prompts
        with httpx.Client(timeout=args.timeout) as http:
            while time.perf_counter() < stop:
                kind = KINDS[n % len(KINDS)]
                n += 1
                t = time.perf_counter()
                try:
                    status = _send(http, url, kind, picture, n)
                except httpx.TimeoutException:
                    with lock:
                        timeouts[kind] += 1
                    continue
                except httpx.HTTPError as e:
                    with lock:
                        errors[kind].append(f"{type(e).__name__}: {e}")
                    continue
                took = time.perf_counter() - t
                with lock:
                    if status == 200:
                        latencies[kind].append(took)
                    elif status == 503:
                        refused[kind] += 1
                    else:
                        errors[kind].append(f"HTTP {status}")
                if status == 503:
                    time.sleep(1.0)

    def monitor() -> None:
        while time.perf_counter() < stop:
            rss, fds = _proc(server.pid)
            health = httpx.get(url + "/healthz", timeout=30).json()
            samples.append({"t": round(time.perf_counter() - start, 1), "rss_mb": round(rss, 1), "fds": fds,
                            "outputs_mb": round(_size_mb(tmp / "outputs"), 2),
                            "oldest_wait_s": health["queue"]["oldest_wait_s"]})
            time.sleep(2.0)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        wall = run_all([*threads, threading.Thread(target=monitor)])
        health = httpx.get(url + "/healthz", timeout=30).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    per_kind = {}
    for kind in KINDS:
        lat = latencies[kind]
        p50 = percentile(lat, 50)
        per_kind[kind] = {"answered": len(lat), "p50_s": p50, "p95_s": percentile(lat, 95), "p99_s": percentile(lat, 99),
                          "max_s": round(max(lat), 3) if lat else None, "refused": refused[kind],
                          "timeouts": timeouts[kind], "errors": len(errors[kind]), "first_errors": errors[kind][:3],
                          "max_over_p50": round(max(lat) / p50, 2) if lat and p50 else None}
    warm = [s for s in samples if s["t"] >= args.warmup_minutes * 60] or samples
    rss_warm, rss_end = warm[0]["rss_mb"], samples[-1]["rss_mb"]
    return {"config": args.config, "clients": args.clients, "minutes": args.minutes, "wall_s": round(wall, 1),
            "server_ready_s": round(ready_s, 1), "outputs_ttl_s": args.outputs_ttl, "per_kind": per_kind,
            "worst_max_over_p50": max((k["max_over_p50"] or 0) for k in per_kind.values()),
            "timeouts": sum(timeouts.values()),
            "rss_mb": {"peak": max(s["rss_mb"] for s in samples), "after_warmup": rss_warm, "end": rss_end,
                       "growth_after_warmup_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2)},
            "fds": {"max": max(s["fds"] for s in samples), "end": samples[-1]["fds"]},
            "outputs_mb": {"max": max(s["outputs_mb"] for s in samples), "end": samples[-1]["outputs_mb"]},
            "oldest_wait_s_max": max(s["oldest_wait_s"] for s in samples),
            "batches": {k: health["batches"].get(k) for k in ("sizes", "joined", "cancelled")},
            "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=120.0, help="a client's wait for one answer, in seconds")
    ap.add_argument("--outputs-ttl", type=int, default=60)
    ap.add_argument("--warmup-minutes", type=float, default=5.0, help="RSS growth is measured from here to the end")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    minutes = f"{args.minutes:g}".replace(".", "_")
    report = soak(args)
    write_report(report, args.out or ROOT / "benchmarks" / "results" / f"soak-{args.config}-{minutes}min.json")


if __name__ == "__main__":
    main()
