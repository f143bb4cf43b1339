"""The OpenAI-compatible chat API, driven by the official ``openai`` client against a real server
subprocess on loopback: media as content parts, streaming, multi-turn, batching, keys, retention."""

import base64
import threading
import time

import httpx
import openai
import pytest

from .conftest import IB, Server

KEY = "test-key-0123"


def data_url(path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


IMAGE = {"type": "image_url", "image_url": {"url": data_url(IB / "image_a.png", "image/png")}}
AUDIO = {"type": "input_audio", "input_audio": {"data": base64.b64encode((IB / "audio_16k.wav").read_bytes()).decode(),
                                                "format": "wav"}}
VIDEO = {"type": "file", "file": {"file_data": data_url(IB / "video.mp4", "video/mp4"), "filename": "clip.mp4"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("openai"), "--no-ui", "--max-batch", "8", "--batch-wait-ms", "50",
               "--queue-size", "16", "--api-key", KEY, "--outputs-ttl", "3", key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_models_and_a_multimodal_completion(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture, this sound and this clip?"}, IMAGE, AUDIO, VIDEO]}])
    message = r.choices[0].message
    extra = message.model_extra["modaverse"]
    assert message.role == "assistant" and message.content == extra["meta_response"]["text"]
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0


def test_streaming_is_incremental_and_equals_the_whole_answer(client):
    ask = [{"role": "user", "content": [{"type": "text", "text": "Describe"}, IMAGE]}]
    whole = client.chat.completions.create(model="tiny", messages=ask, extra_body={"render": False})
    pieces, last = [], None
    for chunk in client.chat.completions.create(model="tiny", messages=ask, stream=True, extra_body={"render": False}):
        delta = chunk.choices[0].delta
        if delta.content:
            pieces.append(delta.content)
        last = chunk
    assert len(pieces) > 1  # sent as it is decoded, not at the end
    assert "".join(pieces) == whole.choices[0].message.content
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.choices[0].delta.model_extra["modaverse"]["meta_response"] == \
        whole.choices[0].message.model_extra["modaverse"]["meta_response"]


def test_a_multi_turn_conversation_keeps_its_earlier_image(client, server):
    first = client.chat.completions.create(model="tiny", messages=[
        {"role": "user", "content": [{"type": "text", "text": "Look at this"}, IMAGE]}])
    echoed = first.choices[0].message.model_dump(exclude_none=True)  # what clients send back, extra field included
    ask = [{"role": "user", "content": [{"type": "text", "text": "Look at this"}, IMAGE]}, echoed,
           {"role": "user", "content": "Now make a video of it."}]
    before = httpx.get(server.url + "/healthz", headers=server.headers).json()["embedding_cache"]
    second = client.chat.completions.create(model="tiny", messages=ask)
    after = httpx.get(server.url + "/healthz", headers=server.headers).json()["embedding_cache"]
    assert second.choices[0].message.content is not None
    assert after["hits"] > before["hits"]  # the earlier image was not encoded again
    # the same conversation with the assistant turn as plain text (no extra field) is accepted too
    plain = [ask[0], {"role": "assistant", "content": echoed["content"]}, ask[2]]
    assert client.chat.completions.create(model="tiny", messages=plain).choices[0].message.content is not None


def test_concurrent_requests_are_batched_with_the_answers_they_get_alone(client, server):
    asks = [[{"role": "user", "content": [{"type": "text", "text": f"Describe {i}"}, IMAGE]}] if i % 2 else
            [{"role": "user", "content": f"Generate an image of a cat number {i}."}] for i in range(8)]
    alone = [client.chat.completions.create(model="tiny", messages=a, extra_body={"render": False}) for a in asks]
    steps_before = httpx.get(server.url + "/healthz", headers=server.headers).json()["batches"]["steps"]
    together: list = [None] * len(asks)

    def one(i: int) -> None:
        together[i] = client.chat.completions.create(model="tiny", messages=asks[i], extra_body={"render": False})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = httpx.get(server.url + "/healthz", headers=server.headers).json()["batches"]["steps"]
    grown = {int(k): v - steps_before.get(k, 0) for k, v in steps.items()}
    assert max(k for k, v in grown.items() if v > 0) > 1, steps  # some requests did decode together
    assert [t.choices[0].message.content for t in together] == [t.choices[0].message.content for t in alone]


def test_bad_requests_get_one_line_4xx(client, server):
    with pytest.raises(openai.UnprocessableEntityError, match="does not fetch URLs"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}]}])
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="not valid base64"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}])
    with pytest.raises(openai.UnprocessableEntityError, match="last message must be the user's"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "hello"}])
    with pytest.raises(openai.UnprocessableEntityError, match="cannot|not|decode"):  # a PNG that is not one
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"nope").decode()}}]}])
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=9)
    r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, json={"messages": []})
    assert r.status_code == 422 and "\n" not in r.json()["detail"]


def test_the_key_guards_every_route_and_outputs_expire(client, server):
    bare = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bare.models.list()
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Generate an image of a red cube."}])
    outputs = r.choices[0].message.model_extra["modaverse"]["outputs"]
    assert outputs, r.choices[0].message.model_extra
    url = outputs[0]["url"]
    assert httpx.get(url).status_code == 401 and httpx.get(url, headers=server.headers).status_code == 200
    assert httpx.get(server.url + "/healthz").status_code == 401
    deadline = time.time() + 15  # --outputs-ttl 3: pruned in the background
    while time.time() < deadline and httpx.get(url, headers=server.headers).status_code == 200:
        time.sleep(0.5)
    assert httpx.get(url, headers=server.headers).status_code == 404


def test_a_public_address_needs_a_key(tmp_path):
    from .conftest import run_cli

    r = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert r.returncode == 2 and "--api-key" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(tmp_path):
    """The chat API shares the bounded queue: a burst past it is refused at once, cleanly."""
    s = Server(tmp_path, "--no-ui", "--max-batch", "1", "--queue-size", "1")
    try:
        codes, lost = [], []

        def one(i: int) -> None:
            try:
                r = httpx.post(s.url + "/v1/chat/completions", timeout=120, json={
                    "messages": [{"role": "user", "content": f"Generate an image of a cube number {i}."}],
                    "render": False})
                codes.append((r.status_code, r.headers.get("retry-after"), r.json()))
            except Exception as e:
                lost.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        s.stop()
    assert not lost and len(codes) == 8
    assert {c for c, _, _ in codes} <= {200, 503} and any(c == 200 for c, _, _ in codes)
    refused = [(ra, body) for c, ra, body in codes if c == 503]
    assert refused and all(ra == "1" and "busy" in body["error"]["message"] for ra, body in refused)
