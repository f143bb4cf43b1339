# Fresh-machine entry points. `make demo` and `make test` set everything up themselves.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FIX    := tests/fixtures/imagebind
export HF_HUB_OFFLINE := 1

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

# torch is pinned to the CPU build first: an unpinned resolve would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

# The main job on the offline tiny profile: an image, an audio clip and a video in one request.
# The tiny models are random, so the reply is gibberish, but it is always a valid meta-response,
# and its invocations are rendered by the tiny generators into demo-out/.
demo: setup
	$(BIN)/modaverse generate "What do <media>, <media> and <media> have in common? Draw it." \
		-i $(FIX)/image_a.png -i $(FIX)/audio_44k.wav -i $(FIX)/video.mp4 --output-dir demo-out --force
	$(BIN)/modaverse embed --config tiny --output demo-out/embeddings.safetensors \
		$(FIX)/image_a.png $(FIX)/video.mp4 $(FIX)/audio_44k.wav $(FIX)/imu.npy
	$(BIN)/modaverse inspect demo-out/embeddings.safetensors

lint: setup
	$(BIN)/ruff check modaverse tests benchmarks model_zoo instructions

bench: setup
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/zoo.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
