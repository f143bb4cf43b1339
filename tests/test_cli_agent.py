"""`modaverse generate` and `modaverse chat`, run as a user would: real subprocesses, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

from modaverse.config import load_config
from modaverse.meta import schema as meta

from . import media_factory as mf
from .conftest import IB, one_line_error, run_cli

TINY_CAPS = meta.capabilities(load_config("tiny").zoo)
THREE = ["-i", IB / "image_a.png", "-i", IB / "audio_44k.wav", "-i", IB / "video.mp4"]


def test_generate_with_image_audio_and_video(tmp_path):
    out = tmp_path / "run"
    r = run_cli("generate", "What connects these three?", *THREE, "--output-dir", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "response.json").read_text())
    meta.validate(doc["meta_response"], TINY_CAPS)
    assert [i["modality"] for i in doc["inputs"]] == ["image", "audio", "video"]
    assert doc["config"] == "tiny" and doc["constrained"] is True
    rendered = [Path(p) for p in doc["outputs"]]  # every invocation rendered or reported
    assert len(rendered) + len(doc["render_errors"]) >= len(doc["meta_response"]["invocations"])
    assert all(p.parent == out and p.exists() for p in rendered)
    assert r.stdout.startswith("reply: ") and f"wrote {out / 'response.json'}" in r.stdout
    # --json prints exactly what was written; an existing response is never overwritten silently
    before = (out / "response.json").read_bytes()
    r = run_cli("generate", "Again", "--output-dir", out)
    one_line_error(r, "response.json", "already exists", "--force")
    assert (out / "response.json").read_bytes() == before
    r = run_cli("generate", "Again", "--output-dir", out, "--force", "--json", "--seed", "3", "--temperature", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads((out / "response.json").read_text())
    assert json.loads(r.stdout)["instruction"] == "Again"
    # --force replaces the run: the files only the replaced response listed go, so reruns do not pile up
    now = {Path(p) for p in json.loads(r.stdout)["outputs"]}
    assert {p for p in out.iterdir() if p.suffix != ".json"} == now
    assert all(p.exists() for p in now)


def test_generate_unconstrained_reports_the_fallback(tmp_path):
    r = run_cli("generate", "Hi", "--unconstrained", "--temperature", "1", "--max-new-tokens", "100",
                "-o", tmp_path, "--json", "--set", "checkpoint=null")  # the untrained model writes non-JSON
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["constrained"] is False and "plain text reply" in doc["fallback"]


def test_generate_errors_are_one_line_and_write_nothing(tmp_path):
    bad = tmp_path / "sound.jpg"
    bad.write_bytes(mf.audio(tmp_path / "a.wav").read_bytes())
    cases = [
        (["generate", "x", "-i", bad, "-o", tmp_path / "a"], [bad, "mislabelled"]),
        (["generate", "x", "-i", tmp_path / "none.png", "-o", tmp_path / "b"], ["none.png", "no such file"]),
        (["generate", "x", "--set", "generation.max_new_tokens=10", "-o", tmp_path / "c"],
         ["--set generation.max_new_tokens=10: generation.max_new_tokens: 10 is below 96"]),
        (["generate", "x", "--temperature", "9", "-o", tmp_path / "d"], ["temperature: Input should be less than or equal to 5"]),
        (["generate", "x", "--max-new-tokens", "9000", "-o", tmp_path / "f"], ["max_new_tokens: 9000 is outside 1..8192"]),
        (["generate", "see <media>", "-i", IB / "image_a.png", "-i", IB / "image_b.jpg", "-o", tmp_path / "e"],
         ["1 <media> placeholder(s) but 2 input(s)"]),
    ]
    for args, needles in cases:
        one_line_error(run_cli(*args), *needles)
    assert not list(tmp_path.glob("*/response.json"))


def test_chat_over_stdin_with_attachments_commands_and_errors(tmp_path):
    script = "\n".join([
        f"/attach {IB / 'image_a.png'}",
        f"/attach {tmp_path / 'missing.png'}",
        "Describe <media> please",
        "/bogus",
        f"/attach {IB / 'audio_16k.wav'}",
        "And now this one?",
        f"/save {tmp_path / 'talk.json'}",
        f"/save {tmp_path / 'talk.json'}",
        "/reset",
        "A new start",
        "/quit",
        "never sent",
    ]) + "\n"
    exe = Path(sys.executable).parent / "modaverse"
    r = subprocess.run([exe, "chat", "-o", tmp_path / "session"], input=script, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "attached image:" in out and "attached audio:" in out
    assert f"error: {tmp_path / 'missing.png'}: no such file" in out
    assert "error: unknown command /bogus" in out
    assert out.count("assistant> ") == 3
    assert "already exists; choose a new name" in out and "conversation cleared" in out
    talk = json.loads((tmp_path / "talk.json").read_text())
    assert [t["instruction"] for t in talk["turns"]] == ["Describe <media> please", "And now this one?"]
    assert [i["modality"] for i in talk["turns"][0]["inputs"]] == ["image"]
    assert [i["modality"] for i in talk["turns"][1]["inputs"]] == ["audio"]  # attachments go with one message
    for n in (1, 2, 3):  # /reset starts a new conversation but never reuses a turn file's name
        meta.validate(json.loads((tmp_path / "session" / f"turn-00{n}.json").read_text())["meta_response"], TINY_CAPS)
    assert json.loads((tmp_path / "session" / "turn-001.json").read_text())["instruction"] == "Describe <media> please"
    assert json.loads((tmp_path / "session" / "turn-003.json").read_text())["instruction"] == "A new start"
    assert "never sent" not in out and "Traceback" not in r.stderr


def test_chat_on_a_terminal_prompts_and_streams(tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    exe = Path(sys.executable).parent / "modaverse"
    proc = subprocess.Popen([exe, "chat", "-o", tmp_path / "s"], stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout=120):
        nonlocal seen
        end = time.time() + timeout
        while marker not in seen and time.time() < end:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        assert marker in seen, seen[-500:]

    read_until(b"you> ")
    os.write(master, b"Tell me something\n")
    read_until(b"[saved ")
    read_until(b"you> ")
    os.write(master, b"/quit\n")
    assert proc.wait(timeout=60) == 0
    os.close(master)
    assert b"assistant> " in seen and b"Traceback" not in seen
