import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MODAVERSE_OFFLINE"] = "1"

import httpx  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
IB = FIXTURES / "imagebind"


@pytest.fixture(scope="session")
def expected():
    from safetensors.torch import load_file

    return load_file(str(IB / "expected.safetensors"))


@pytest.fixture(scope="session")
def fixture_model():
    """The reference ImageBind with its weights, loaded through the project's own loader."""
    import json

    from modaverse.encoder.embed import build_imagebind
    from modaverse.encoder.imagebind.config import ImageBindConfig

    kwargs = json.loads((IB / "config.json").read_text())["model_kwargs"]
    return build_imagebind(ImageBindConfig(**kwargs), IB / "weights.safetensors")


def run_cli(*args, cwd=None, env=None, timeout=300):
    """Runs the real console script in a subprocess (as a user would)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    exe = Path(sys.executable).parent / "modaverse"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def run_on_terminal(*args, env=None, timeout=300):
    """Runs the console script with stderr on a 160-column pseudo-terminal, as a user at a
    terminal sees it; returns (exit code, what the terminal showed, stdout)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    exe = Path(sys.executable).parent / "modaverse"
    proc = subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the other end closed: the process is done writing
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=timeout)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace"), out.decode()


@pytest.fixture(scope="session")
def random_pipe():
    """The tiny profile without its trained checkpoint: random weights, for behaviour only an
    untrained model shows (greedy loops that need the grammar's wrap-up, non-JSON text)."""
    from modaverse.pipeline.assistant import ModaVerse

    return ModaVerse.from_config("tiny", ["checkpoint=null"])


@pytest.fixture(scope="session")
def tiny_pipe():
    """The offline default profile, built once: tiny ImageBind, tiny Llama, trained checkpoint."""
    from modaverse.pipeline.assistant import ModaVerse

    return ModaVerse.from_config("tiny")


def greedy_tokens(pipe, prompts, prefix):
    """Each prompt's greedy tokens, all decoded in one batch, with or without the shared-prefix cache."""
    from modaverse.llm.decode import Decoder, Sampling

    tokens: dict[int, list[int]] = {}
    decoder = Decoder(pipe.llm.model, Sampling(24), stop_ids=pipe.stop_ids, prefix=prefix,
                      on_token=lambda row, t: tokens.setdefault(row, []).append(t) and False)
    ids = decoder.join(prompts)
    while len(decoder):
        decoder.step()
    return [tokens[i] for i in ids]


def seeded_texts(pipe, instruction: str, inputs=(), seed: int = 11) -> tuple[str, str, str]:
    """A sampled, seeded request's text decoded alone, inside a batch of greedy and sampled neighbours,
    and joining that batch three steps in: each row samples with its own generator, so all three agree."""
    from modaverse.pipeline.turn import Request

    mine, greedy = pipe.settings(temperature=1.5, seed=seed), pipe.settings(temperature=0.0)
    others = [(Request("hello"), greedy), (Request("Generate an image of a cat in the snow."),
                                          pipe.settings(temperature=0.8, top_p=0.9, seed=5))]
    alone = pipe.answer([Request(instruction, inputs)], mine)[0].raw
    texts = [alone]
    for joins_after in (0, 3):
        session, replies = pipe.session(greedy), {}
        first = [(k, r) for k, (r, _) in enumerate(others)]
        session.admit(first, [s for _, s in others])
        for _ in range(joins_after):
            replies |= {k: r for k, r, _ in session.step()}
        session.admit([("mine", Request(instruction, inputs))], [mine])
        while len(session):
            replies |= {k: r for k, r, _ in session.step()}
        texts.append(replies["mine"].raw)
    return tuple(texts)


def one_line_error(result, *needles):
    """A user error: exit status 2 and one line on stderr holding every needle, never a traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for n in needles:
        assert str(n) in lines[0], lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``modaverse serve`` as a real subprocess on a free loopback port, up once /healthz answers."""

    def __init__(self, tmp: Path, *args: str, key: str | None = None):
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.outputs = tmp / "outputs"
        self.log = (tmp / "server.log").open("w+")
        exe = Path(sys.executable).parent / "modaverse"
        self.proc = subprocess.Popen([str(exe), "serve", "--port", str(self.port), "--outputs", str(tmp / "outputs"),
                                      *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/healthz", timeout=2, headers=self.headers).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("server did not come up:\n" + self.output())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
