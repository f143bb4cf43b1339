"""The OpenAI-compatible chat API, driven by the official ``openai`` client against a real server
subprocess on loopback: media as content parts, streaming, multi-turn, batching, keys, retention."""

import base64
import io
import json
import os
import re
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

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
               "--queue-size", "16", "--api-key", KEY, "--outputs-ttl", "3", "--sse-keepalive", "0.001",
               "--cors-origin", "http://chat.example.org", key=KEY)
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
    # the reply's text, then a link to each rendered output (none when the model invoked nothing)
    assert message.role == "assistant" and message.content.startswith(extra["meta_response"]["text"])
    assert message.content.count("](http") == len(extra["outputs"])
    assert all(o["url"] in message.content for o in extra["outputs"])
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


def _refused(client, status, param, match, **kwargs):
    """A request refused with ``status``, OpenAI's error object naming ``param``, and one line."""
    kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=kwargs.pop("model", "tiny"), **kwargs)
    error = e.value.body
    assert e.value.status_code == status, error
    assert error["param"] == param and re.search(match, error["message"]) and "\n" not in error["message"], error
    assert error["type"] == "invalid_request_error" and "/tmp" not in error["message"]


def test_bad_requests_get_400_with_the_field_named(client, server):
    user = {"role": "user", "content": "hi"}
    png = base64.b64encode(b"nope").decode()
    cases = [
        ("messages[0].content[0]", "does not fetch URLs",
         {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x.org/a.png"}}]}]}),
        ("messages[0].content[0]", "not valid base64",
         {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}]}),
        ("messages[1]", "last message must be the user's .*prefill",
         {"messages": [user, {"role": "assistant", "content": "hello"}]}),
        ("messages[0].content[0]", r"^messages\[0\]\.content\[0\]: .*(decode|not|cannot)",  # a PNG that is not one
         {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}}]}]}),
        ("temperature", "less than or equal to 5", {"temperature": 9}),
        ("tools", "calls no tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
        ("tool_choice", "calls no tools", {"tool_choice": "required"}),
        ("response_format", "structured output", {"response_format": {"type": "json_object"}}),
        ("n", "n must be 1", {"n": 2}),
        ("logprobs", "not returned", {"logprobs": True}),
        ("stop", "at most 4", {"stop": ["a", "b", "c", "d", "e"]}),
        ("messages[1].role", "tool", {"messages": [user, {"role": "tool", "content": "42", "tool_call_id": "c1"}, user]}),
    ]
    for param, match, kwargs in cases:
        _refused(client, 400, param, match, **kwargs)
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[user])
    r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, json={"messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages" and "\n" not in r.json()["detail"]
    r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


def test_what_clients_send_by_default_is_answered(client):
    """A system and a developer message, two user messages in a row, n and stream_options set to null,
    max_tokens of 5, stop strings and top_p: all answered, none refused."""
    ask = [{"role": "user", "content": [{"type": "text", "text": "Describe"}, IMAGE]}]
    plain = client.chat.completions.create(model="tiny", messages=ask, extra_body={"render": False})
    told = client.chat.completions.create(model="tiny", n=None, top_p=0.9, extra_body={"render": False}, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, *ask,
        {"role": "user", "content": [{"type": "text", "text": "and this one"}, IMAGE]}])
    assert told.choices[0].message.content and told.usage.prompt_tokens > plain.usage.prompt_tokens > 0
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    short = client.chat.completions.create(model="tiny", messages=ask, max_tokens=5)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    assert plain.choices[0].message.content.startswith(short.choices[0].message.content)
    words = plain.choices[0].message.content.split()
    stopped = client.chat.completions.create(model="tiny", messages=ask, stop=[" " + words[1]], extra_body={"render": False})
    assert stopped.choices[0].message.content == words[0] and stopped.choices[0].finish_reason == "stop"


def test_media_limits_count_per_message_and_names_are_sanitised(client):
    wrapped = base64.encodebytes((IB / "image_a.png").read_bytes()).decode()  # 76-character lines
    assert "\n" in wrapped
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + wrapped}}
    turns = []
    for i in range(9):  # an image in each of nine turns: nine in the conversation, one per message
        turns += [{"role": "user", "content": [{"type": "text", "text": f"Look {i}"}, part]},
                  {"role": "assistant", "content": "I see it."}]
    r = client.chat.completions.create(model="tiny", messages=turns[:-1], extra_body={"render": False})
    assert r.choices[0].message.content is not None
    png = base64.b64encode((IB / "image_a.png").read_bytes()).decode()
    for name in ("a\x00b.png", "../../" + "x" * 300 + ".png", "/etc/passwd.png"):
        r = client.chat.completions.create(model="tiny", extra_body={"render": False}, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Describe"}, {"type": "file", "file": {"file_data": png, "filename": name}}]}])
        assert r.choices[0].message.content is not None
    _refused(client, 413, "messages[0].content[8]", "9 files: at most 8 per message",
             messages=[{"role": "user", "content": [part] * 9}])
    _refused(client, 415, "messages[0].content[0]", "unsupported file type",
             messages=[{"role": "user", "content": [{"type": "file", "file": {"file_data": png, "filename": "a.exe"}}]}])


def _noise_png() -> bytes:
    """A picture no earlier request sent, so the server's embedding cache cannot answer for it."""
    pixels = np.random.default_rng(time.time_ns()).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_stream_usage_chunk_and_sse_framing(client, server):
    ask = [{"role": "user", "content": [{"type": "text", "text": "Describe"}, IMAGE]}]
    chunks = list(client.chat.completions.create(model="tiny", messages=ask, stream=True,
                                                  stream_options={"include_usage": True}, extra_body={"render": False}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0 and chunks[-1].usage.prompt_tokens > 0
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    fresh = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(_noise_png()).decode()}}
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=server.headers, timeout=60,
                      json={"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, fresh]}],
                            "stream": True, "render": False}) as r:
        assert r.headers["x-accel-buffering"] == "no" and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith(("data: ", ": keep-alive")) for line in lines)
    # --sse-keepalive 0.001: encoding a picture the server has never seen (no cache hit) takes longer
    assert any(line == ": keep-alive" for line in lines)


def test_the_key_guards_every_route_and_outputs_expire(client, server):
    bare = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bare.models.list()
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Generate an image of a red cube."}])
    extra = r.choices[0].message.model_extra["modaverse"]
    outputs = extra["outputs"]
    assert outputs, extra
    # standard clients see the files: content is the text, then a Markdown link per output
    assert r.choices[0].message.content == extra["meta_response"]["text"] + "\n\n" + "\n".join(
        f"{'!' if o['media_type'].startswith('image/') else ''}[{o['name']}]({o['url']})" for o in outputs)
    signed = outputs[0]["url"]
    url, _, query = signed.partition("?")
    assert "expires=" in query and "sig=" in query
    assert httpx.get(signed).status_code == 200  # a browser showing the picture sends no header
    assert httpx.get(signed.replace("sig=", "sig=0")).status_code == 401
    assert httpx.get(url).status_code == 401 and httpx.get(url, headers=server.headers).status_code == 200
    assert httpx.get(server.url + "/healthz").status_code == 401
    bare_text = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Generate an image of "
                                               "a red cube."}], extra_body={"media_links": False}).choices[0].message
    assert bare_text.content == bare_text.model_extra["modaverse"]["meta_response"]["text"]
    deadline = time.time() + 15  # --outputs-ttl 3: pruned in the background
    while time.time() < deadline and httpx.get(url, headers=server.headers).status_code == 200:
        time.sleep(0.5)
    assert httpx.get(url, headers=server.headers).status_code == 404
    assert httpx.get(signed).status_code == 401  # expired with its file (the URL lives --outputs-ttl seconds)


def test_browsers_and_proxies(server):
    """A page of an allowed origin calls the API (its preflight needs no key); behind a proxy the output
    URLs carry the scheme and host the client used."""
    r = httpx.options(server.url + "/v1/chat/completions", headers={
        "Origin": "http://chat.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://chat.example.org"
    r = httpx.options(server.url + "/v1/chat/completions", headers={
        "Origin": "http://evil.example.com", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "Generate an image of a red cube."}]},
        headers={**server.headers, "Host": "chat.example.org", "X-Forwarded-Proto": "https"})
    assert r.json()["choices"][0]["message"]["modaverse"]["outputs"][0]["url"].startswith(
        "https://chat.example.org/v1/outputs/")


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


def assert_cancelled(server, threads: list, before: int) -> None:
    """Runs the clients, then waits for the server to count requests cancelled since ``before``."""
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.time() + 30
    while time.time() < deadline:
        health = httpx.get(server.url + "/healthz", headers=server.headers).json()
        if health["batches"]["cancelled"] > before and health["queue"]["waiting"] == 0:
            break
        time.sleep(0.2)
    assert health["batches"]["cancelled"] > before, health


def test_streams_whose_clients_go_away_are_cancelled(server):
    ask = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, IMAGE]}], "stream": True,
           "render": False, "max_tokens": 1900, "constrained": False, "temperature": 1.0}
    before = httpx.get(server.url + "/healthz", headers=server.headers).json()["batches"]["cancelled"]

    def leave_after_first_event() -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", headers=server.headers, json=ask,
                          timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_lines())

    threads = [threading.Thread(target=leave_after_first_event) for _ in range(6)]
    assert_cancelled(server, threads, before)


@pytest.fixture(scope="module")
def nginx(server, tmp_path_factory):
    """configs/nginx.conf as shipped, its two ports pointed at the test server and a free port."""
    import shutil
    import subprocess
    from pathlib import Path

    from .conftest import free_port

    exe = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if exe is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light; make test installs it)")
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    shipped = (Path(__file__).parents[1] / "configs" / "nginx.conf").read_text()
    site = shipped.replace("127.0.0.1:7860", f"127.0.0.1:{server.port}").replace("listen 8080;", f"listen 127.0.0.1:{port};")
    assert site != shipped
    (tmp / "site.conf").write_text(site)
    temps = "\n".join(f"{k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(f"""{'user root;' if os.geteuid() == 0 else ''}
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{}}
http {{ access_log off; {temps} include {tmp}/site.conf; }}
""")
    proc = subprocess.Popen([exe, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            httpx.get(url + "/healthz", headers=server.headers, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_streams_pass_through_the_documented_nginx_unbuffered(nginx, server):
    """Behind configs/nginx.conf: events arrive as they are sent (not when the stream ends), framed as
    SSE, and output URLs name the proxy, not the server behind it."""
    ask = {"messages": [{"role": "user", "content": "Generate a video of waves at night."}], "stream": True}
    arrivals = []
    with httpx.stream("POST", nginx + "/v1/chat/completions", headers=server.headers, json=ask, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line:
                arrivals.append((time.perf_counter(), line))
    lines = [line for _, line in arrivals]
    assert lines[-1] == "data: [DONE]" and all(line.startswith(("data: ", ": keep-alive")) for line in lines)
    first_text = next(t for t, line in arrivals if '"content": "' in line and '"content": ""' not in line)
    assert arrivals[-1][0] - first_text > 0.05, "the stream arrived all at once: the proxy buffered it"
    final = json.loads(next(line for line in reversed(lines) if '"modaverse"' in line)[6:])
    outputs = final["choices"][0]["delta"]["modaverse"]["outputs"]
    assert outputs and outputs[0]["url"].startswith(nginx + "/v1/outputs/")
    assert httpx.get(outputs[0]["url"]).status_code == 200  # signed: no header, through the proxy


def test_langchain_chat_openai_with_a_system_prompt_an_image_and_streaming(server):
    """LangChain's ChatOpenAI as its users write it: a system prompt, an image message, invoke and stream."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=server.url + "/v1", api_key=KEY, model="tiny", temperature=0, max_retries=0,
                      timeout=120, extra_body={"render": False})
    ask = [SystemMessage("You are a helpful assistant."),
           HumanMessage(content=[{"type": "text", "text": "What is in this picture?"}, IMAGE])]
    whole = chat.invoke(ask)
    assert whole.content and whole.response_metadata["finish_reason"] in ("stop", "length")
    assert whole.usage_metadata["input_tokens"] > 0 and whole.usage_metadata["output_tokens"] > 0
    pieces = [chunk.content for chunk in chat.stream(ask)]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == whole.content


def test_a_fault_inside_is_a_500_clients_do_not_retry():
    """OpenAI's clients retry 5xx unless told not to; a fault inside the model would only repeat."""
    from modaverse.serve.http import error_response, http_error

    error = http_error(RuntimeError("boom"))
    response = error_response(error.status_code, str(error.detail), error.headers)
    assert error.status_code == 500 and response.headers["x-should-retry"] == "false"
    assert json.loads(response.body)["error"]["type"] == "server_error"


def test_requests_whose_clients_go_away_are_cancelled(server):
    """Not streamed: the server notices the closed connection while the request waits or decodes."""
    ask = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, IMAGE]}],
           "render": False, "max_tokens": 1900, "constrained": False, "temperature": 1.0}
    before = httpx.get(server.url + "/healthz", headers=server.headers).json()["batches"]["cancelled"]

    def give_up_early(seed: int) -> None:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.url + "/v1/chat/completions", headers=server.headers, json={**ask, "seed": seed},
                       timeout=0.05)

    threads = [threading.Thread(target=give_up_early, args=(i,)) for i in range(8)]
    assert_cancelled(server, threads, before)
