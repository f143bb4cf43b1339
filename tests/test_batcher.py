"""The server's batching worker on the tiny profile: rendering beside decoding, clients that go away,
sampled requests sharing batches, and first come first served."""

import time
from concurrent.futures import wait

import pytest

from modaverse.pipeline.turn import Request
from modaverse.serve.batcher import Batcher, Job
from modaverse.serve.service import Cancelled

from .conftest import IB, seeded_texts


def job(pipe, instruction, inputs=(), **request) -> Job:
    return Job(lambda: list(inputs), Request(instruction, (), **request), pipe.settings())


def test_rendering_runs_beside_decoding(tiny_pipe, tmp_path):
    """A request whose outputs are being rendered does not hold up another request's decoding."""
    batcher = Batcher(tiny_pipe, max_batch=4, wait_ms=0)
    video = job(tiny_pipe, "Generate a video of waves at night.", output_dir=tmp_path / "v")
    batcher.submit(video)
    deadline = time.time() + 60
    while batcher.stats()["rendering"] == 0 and not video.future.done() and time.time() < deadline:
        time.sleep(0.001)
    assert batcher.stats()["rendering"] == 1, "the video's answer never reached the render worker"
    text = job(tiny_pipe, "hi")
    batcher.submit(text)
    text.future.result(timeout=60)
    assert not video.future.done()  # answered while the video was still rendering
    assert video.future.result(timeout=120).outputs


def test_a_client_that_goes_away_leaves_the_queue_or_the_batch(tiny_pipe):
    alone = tiny_pipe("What is in <media>?", [IB / "image_a.png"])
    batcher = Batcher(tiny_pipe, max_batch=4, wait_ms=200, arriving=lambda: 1)  # a batch forms from all three
    jobs: list[Job] = []
    seen: list[str] = []

    def first_piece_then_leave(piece: str) -> None:
        seen.append(piece)
        batcher.cancel(jobs[0])

    image = tiny_pipe.load_inputs([IB / "image_a.png"])
    jobs += [job(tiny_pipe, "Generate a video of waves at night.", on_text=first_piece_then_leave),
             job(tiny_pipe, "What is in <media>?", image), job(tiny_pipe, "hi")]
    for j in jobs:
        batcher.submit(j)
    batcher.cancel(jobs[2])  # still waiting for its batch: it leaves the queue
    wait([j.future for j in jobs], timeout=60)
    for gone in (jobs[0], jobs[2]):
        with pytest.raises(Cancelled, match="went away"):
            gone.future.result()
    assert len(seen) == 1  # its row left the batch after its first piece of text
    assert jobs[1].future.result().raw == alone.raw  # the row left decodes as it would alone
    assert batcher.stats()["cancelled"] == 2


def test_a_seeded_request_samples_the_same_alone_and_in_any_batch(tiny_pipe):
    image = tiny_pipe.load_inputs([IB / "image_a.png"])
    alone, together, joined = seeded_texts(tiny_pipe, "What is in <media>?", image)
    assert together == alone and joined == alone
    assert alone != tiny_pipe("What is in <media>?", [IB / "image_a.png"]).raw  # it did sample


def test_first_come_first_served_and_sampled_requests_share_batches(tiny_pipe):
    """A request that cannot join the running batch (here: unconstrained, behind a constrained one) is
    next in line; nobody behind it overtakes it. A sampled, seeded request batches with a greedy one."""
    s = tiny_pipe.settings
    batcher = Batcher(tiny_pipe, max_batch=4, wait_ms=200, arriving=lambda: 1)  # every batch waits for more
    jobs = [Job(list, Request("hello", ()), s()), Job(list, Request("hi", ()), s(constrained=False)),
            Job(list, Request("Generate an image of a cat.", ()), s(temperature=1.0, seed=3)),
            Job(list, Request("hello there", ()), s())]
    for j in jobs:
        batcher.submit(j)
    time.sleep(0.05)
    assert batcher.oldest_wait() > 0  # the unconstrained one waits for the first batch to end
    wait([j.future for j in jobs], timeout=120)
    assert all(j.future.result().raw for j in jobs)
    assert dict(batcher.sizes) == {1: 2, 2: 1}  # [hello], then [hi], then the sampled one with the greedy one
    assert jobs[0].started < jobs[1].started < jobs[2].started
    assert batcher.oldest_wait() == 0


def test_a_batch_that_never_drains_holds_only_its_live_rows(tiny_pipe):
    """Under steady load newcomers keep joining and the running batch never ends: its key/value cache
    and its grammar state must not grow with the requests it has served."""
    session = tiny_pipe.session(tiny_pipe.settings(max_new_tokens=24))
    longest, served, most_rows = 0, 0, 0
    for step in range(150):
        if step % 3 == 0 and len(session) < 4:
            session.admit([(step, Request(f"Tell me about shape number {step}.", ()))])
        served += len(session.step())
        decoder = session.decoder
        if len(session):
            longest = max(longest, decoder.mask.shape[1])
        most_rows = max(most_rows, len(decoder.constraint.rows))
    prompt = tiny_pipe.prepare("Tell me about shape number 100.", []).inputs_embeds.shape[1]
    assert served > 20
    assert longest <= prompt + 24 + 8  # one row's prompt and answer, not the whole history
    assert most_rows <= 5
