"""generate-instructions throughput: records/s against a server of fixed latency, by concurrency.

The server is the tests' OpenAI-compatible fake (real HTTP on loopback) answering every
request after ``--latency`` seconds, as a hosted model would; the client side is the real
run (openai client, validation, near-duplicate index, flushed appends). Also times the
start of a resumed run, which re-reads and re-indexes every record already written.

    python benchmarks/instructions.py                     # concurrency 1 and 16, 0.25 s latency
    python benchmarks/instructions.py --concurrency 1 4 16 64 --latency 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_openai import FakeOpenAI  # noqa: E402


def _captions(folder: Path, n: int = 300) -> Path:
    """Caption lines for ``n`` files; the files need not exist (the media check is off)."""
    path = folder / "captions.jsonl"
    kinds = ("image", "video", "audio")
    path.write_text("".join(json.dumps({"modality": kinds[i % 3], "media": f"media/{i}.{kinds[i % 3]}",
                                        "caption": f"caption number {i} of a {kinds[i % 3]}"}) + "\n"
                            for i in range(n)))
    return path


def run(concurrency: int, latency: float, num: int, folder: Path) -> dict:
    from modaverse.instruct.engine import generate
    from modaverse.instruct.settings import Settings

    out = folder / f"c{concurrency}.jsonl"
    with FakeOpenAI(latency=latency) as server:
        settings = Settings(captions=_captions(folder), output=out, num=num, base_url=server.base_url,
                            concurrency=concurrency, check_media=False)
        start = time.perf_counter()
        counts = generate(settings, progress=False)
        seconds = time.perf_counter() - start
    return {"concurrency": concurrency, "records": counts.accepted, "rejected": counts.rejected,
            "seconds": round(seconds, 2), "records_per_second": round(counts.accepted / seconds, 2),
            "ideal_records_per_second": round(concurrency / latency, 2)}


def resume_start(folder: Path, records: int) -> dict:
    """Seconds to re-read and re-index ``records`` existing records before the first request."""
    from modaverse.instruct.dedup import NearDuplicates
    from modaverse.instruct.engine import Journal
    from modaverse.instruct.settings import Settings

    out = folder / "big.jsonl"
    with out.open("w") as f:
        for i in range(records):
            rec = {"id": f"gen-s0-{i:07d}", "source": "bench", "messages": [
                {"role": "user", "text": f"Describe attachment {i} and say what stands out about item {i * 7}.",
                 "media": [{"path": f"media/{i % 5000}.png", "modality": "image"}]},
                {"role": "assistant", "meta_response": {"text": f"It shows scene {i}, with detail {i * 3}.",
                                                        "invocations": []}}]}
            f.write(json.dumps(rec) + "\n")
    journal = Journal(Settings(captions=out, output=out, num=records))
    start = time.perf_counter()
    journal.load(NearDuplicates(), progress=False)
    seconds = time.perf_counter() - start
    return {"records": records, "seconds": round(seconds, 2), "records_per_second": round(records / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--latency", type=float, default=0.25, help="server seconds per reply")
    parser.add_argument("--seconds", type=float, default=12.0, help="about how long each run should take")
    parser.add_argument("--resume-records", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "instructions.json")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.concurrency:
            num = max(8, int(args.seconds * c / args.latency))
            rows.append(run(c, args.latency, num, Path(tmp)))
            print(json.dumps(rows[-1]))
        resume = resume_start(Path(tmp), args.resume_records)
        print(json.dumps({"resume": resume}))
    base = rows[0]["records_per_second"]
    for r in rows:
        r["speed_up"] = round(r["records_per_second"] / base, 2)
    doc = {"latency_s": args.latency, "runs": rows, "resume": resume, "machine": platform.machine(),
           "cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
