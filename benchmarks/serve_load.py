"""The chat API under load: rendering beside decoding, and a flood of clients.

    python benchmarks/serve_load.py --render-stall --config smol
    python benchmarks/serve_load.py --render-stall --config smol --source /tmp/before   # an earlier checkout
    python benchmarks/serve_load.py --flood 64 --config smol

**Render stall.** A stream's gaps between events (the role chunk, each piece of text, the end)
on a server that renders nothing, then while another request's text-to-video output renders:
that request (V) is sent first, and the stream (S) starts once V's decoding has ended (the
server's decoding steps stop growing), when V's render begins. The video
is made heavy (``--video-steps``, ``--video-frames``, 128 px) so its render lasts seconds. Each
setting runs ``--rounds`` times; the figure is S's longest gap, against its longest gap alone.

**Flood.** ``--flood N`` clients each send chat requests in a closed loop for ``--seconds``
(half with an image; greedy; ``render: false``); a client refused with 503 waits its
``Retry-After``. Meanwhile a probe asks ``/healthz`` every 100 ms. Reports every status code
seen (the goal: only 200 and 503), requests answered per second, and the probe's latency.

Results go to ``benchmarks/results/serve-<config>-cpu-<mode>.json``.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import _start, percentile, run_all, write_report  # noqa: E402


def picture_part(tmp: Path, i: int = 0) -> dict:
    from modaverse.data.synth import write_benchmark_set

    pictures = sorted((write_benchmark_set(tmp / "data", "image", num=max(1, i + 1)) / "image").glob("*.png"))
    b64 = base64.b64encode(pictures[i].read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}


def stream_events(url: str, body: dict, on_first_text=None) -> list[float]:
    """Arrival times of a stream's events (comments left out); calls ``on_first_text`` at the first text."""
    times, told = [], False
    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=600) as r:
        if r.status_code != 200:
            raise SystemExit(f"status {r.status_code}: {r.read().decode()}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            times.append(time.perf_counter())
            if on_first_text and not told and '"content": "' in line and '"content": ""' not in line:
                told = True
                on_first_text()
    return times


def decode_steps(url: str) -> int:
    return sum(httpx.get(url + "/healthz").json()["batches"]["steps"].values())


def longest_gap(times: list[float]) -> float:
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def render_stall(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="modaverse-bench-stall-"))
    image = picture_part(tmp)
    s_body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe this picture."}, image]}],
              "render": False, "temperature": 0}
    v_body = {"messages": [{"role": "user", "content": "Make a video of waves crashing at night."}], "temperature": 0}
    video = [f"zoo.text-to-video.defaults.{k}={v}" for k, v in (("steps", args.video_steps),
                                                                   ("frames", args.video_frames), ("width", 128),
                                                                   ("height", 128))]
    server, url, ready_s = _start(args, tmp, *[a for kv in video for a in ("--set", kv)])
    report: dict = {"config": args.config, "source": args.source or "this checkout", "server_ready_s": round(ready_s, 1),
                    "video": dict(kv.split("=", 1) for kv in video), "rounds": args.rounds}
    try:
        stream_events(url, s_body)  # warm-up
        alone = [longest_gap(stream_events(url, s_body)) for _ in range(args.rounds)]
        beside, renders = [], []
        for _ in range(args.rounds):
            box: dict = {}
            started = threading.Event()

            def send_v(box=box, started=started) -> None:
                t = time.perf_counter()
                box["v"] = stream_events(url, v_body, on_first_text=started.set)
                box["v_s"] = time.perf_counter() - t

            thread = threading.Thread(target=send_v)
            thread.start()
            if not started.wait(300):
                raise SystemExit("the video request sent no text")
            steps = decode_steps(url)
            while True:  # V's decode has ended (no step for 0.2 s): its render is starting
                time.sleep(0.2)
                steps, before = decode_steps(url), steps
                if steps == before:
                    break
            beside.append(longest_gap(stream_events(url, s_body)))
            thread.join()
            renders.append(box["v_s"])
        report |= {"alone_longest_gap_s": [round(g, 3) for g in alone],
                   "beside_render_longest_gap_s": [round(g, 3) for g in beside],
                   "video_request_s": [round(r, 2) for r in renders],
                   "ratio_worst": round(max(beside) / max(alone), 2)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    return report


def flood(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="modaverse-bench-flood-"))
    image = picture_part(tmp)
    server, url, ready_s = _start(args, tmp)
    codes: Counter = Counter()
    answered: list[float] = []
    probe: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + args.seconds

    def client(i: int) -> None:
        content = ([{"type": "text", "text": f"What is in this picture? ({i})"}, image] if i % 2
                   else f"Generate an image of a shape number {i}.")
        body = {"messages": [{"role": "user", "content": content}], "render": False, "temperature": 0}
        with httpx.Client(timeout=600) as http:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = http.post(url + "/v1/chat/completions", json=body)
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    codes[r.status_code] += 1
                    if r.status_code == 200:
                        answered.append(time.perf_counter() - t)
                if r.status_code == 503:
                    time.sleep(float(r.headers.get("retry-after", "1")))

    def health() -> None:
        with httpx.Client(timeout=30) as http:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = http.get(url + "/healthz")
                probe.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"/healthz: {r.status_code}")
                time.sleep(0.1)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.flood)] + [threading.Thread(target=health)]
        wall = run_all(threads)
        stats = httpx.get(url + "/healthz").json()["batches"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"config": args.config, "clients": args.flood, "seconds": args.seconds, "server_ready_s": round(ready_s, 1),
            "status_codes": {str(k): v for k, v in sorted(codes.items())}, "client_errors": errors[:5],
            "answered_per_s": round(len(answered) / wall, 2), "answered_p50_s": percentile(answered, 50),
            "answered_p95_s": percentile(answered, 95), "healthz_probes": len(probe),
            "healthz_p50_s": percentile(probe, 50), "healthz_max_s": round(max(probe), 3) if probe else None,
            "batches": {k: stats.get(k) for k in ("sizes", "joined", "cancelled")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="smol")
    ap.add_argument("--source", help="serve another checkout's package (its root folder), for before/after figures")
    ap.add_argument("--render-stall", action="store_true", help="a stream's gaps beside a video render")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--video-steps", type=int, default=10)
    ap.add_argument("--video-frames", type=int, default=16)
    ap.add_argument("--flood", type=int, metavar="N", help="N clients in a closed loop")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not args.render_stall and not args.flood:
        ap.error("choose --render-stall or --flood N")
    mode = "render-stall" if args.render_stall else f"flood{args.flood}"
    report = render_stall(args) if args.render_stall else flood(args)
    write_report(report, args.out or ROOT / "benchmarks" / "results" / f"serve-{args.config}-cpu-{mode}.json")


if __name__ == "__main__":
    main()
