"""Weights: .pth and safetensors files, strict key checks, and downloads over loopback HTTP."""

import hashlib
import http.server
import json
import threading

import pytest
import torch

from modaverse.core.errors import WeightsError
from modaverse.encoder.embed import build_imagebind
from modaverse.encoder.imagebind.checkpoint import download, resolve_weights
from modaverse.encoder.imagebind.config import ImageBindConfig

from .conftest import IB

KWARGS = json.loads((IB / "config.json").read_text())["model_kwargs"]


def test_official_style_pth_loads_and_matches_safetensors(tmp_path, fixture_model):
    from safetensors.torch import load_file

    pth = tmp_path / "imagebind_tiny.pth"
    torch.save(load_file(str(IB / "weights.safetensors")), pth)
    model = build_imagebind(ImageBindConfig(**KWARGS), pth)
    a, b = model.state_dict(), fixture_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_subset_of_towers_loads_from_a_full_checkpoint():
    cfg = ImageBindConfig(**KWARGS, towers=("vision", "audio"))
    model = build_imagebind(cfg, IB / "weights.safetensors")
    assert model.towers == ("vision", "audio")


def test_mismatched_weights_list_missing_unexpected_and_shapes(tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(IB / "weights.safetensors"))
    sd.pop("modality_heads.vision.2.weight")
    sd["modality_heads.vision.9.weight"] = torch.zeros(1)
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    with pytest.raises(WeightsError) as err:
        build_imagebind(ImageBindConfig(**KWARGS), path)
    msg = str(err.value)
    assert "missing keys: modality_heads.vision.2.weight" in msg
    assert "unexpected keys: modality_heads.vision.9.weight" in msg
    with pytest.raises(WeightsError, match=r"shape mismatch \(checkpoint vs model\): modality_heads.audio.2.weight \[32, 48\] vs \[16, 48\]"):
        build_imagebind(ImageBindConfig(**{**KWARGS, "out_embed_dim": 16}), IB / "weights.safetensors")


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        build_imagebind(ImageBindConfig(**KWARGS), bad)
    with pytest.raises(WeightsError, match="no such weights file"):
        resolve_weights(str(tmp_path / "nope.pth"))


class _Server:
    """Serves one payload on loopback; ``cut`` sends fewer bytes than Content-Length."""

    def __init__(self, payload: bytes, cut: bool = False):
        outer = self
        self.payload, self.cut, self.hits = payload, cut, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload[: len(outer.payload) // 2] if outer.cut else outer.payload)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/imagebind_tiny.safetensors"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MODAVERSE_OFFLINE", raising=False)
    monkeypatch.setenv("MODAVERSE_CACHE", str(tmp_path / "cache"))


def test_download_into_cache_with_checksum(online, tmp_path):
    payload = (IB / "weights.safetensors").read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    server = _Server(payload)
    try:
        path = resolve_weights(server.url, sha256=digest)
        assert path == tmp_path / "cache" / "imagebind_tiny.safetensors"
        assert path.read_bytes() == payload
        assert resolve_weights(server.url, sha256=digest) == path and server.hits == 1  # cached
        build_imagebind(ImageBindConfig(**KWARGS), path)
        with pytest.raises(WeightsError, match="does not match the expected"):
            download(server.url, tmp_path / "other.safetensors", sha256="0" * 64, progress=False)
        assert not (tmp_path / "other.safetensors").exists()
        assert not list(tmp_path.glob("other.safetensors*"))  # no .part left behind
    finally:
        server.close()


def test_interrupted_download_leaves_nothing(online, tmp_path):
    server = _Server(b"x" * 100_000, cut=True)
    try:
        with pytest.raises(WeightsError, match=server.url):
            download(server.url, tmp_path / "w.safetensors", progress=False)
        assert not list(tmp_path.glob("w.safetensors*"))
    finally:
        server.close()


def test_missing_file_with_url_downloads_to_the_named_path(online, tmp_path):
    server = _Server(b"payload")
    try:
        dest = tmp_path / "models" / "ib.pth"
        assert resolve_weights(str(dest), url=server.url) == dest and dest.read_bytes() == b"payload"
    finally:
        server.close()


def test_offline_refuses_to_download(tmp_path):
    with pytest.raises(WeightsError, match="downloads are disabled"):
        resolve_weights(str(tmp_path / "ib.pth"), url="http://127.0.0.1:9/ib.pth")
