"""The language model: any HF causal LM, marker tokens, and LoRA through peft.

The research code unfreezes the whole embedding matrix and LM head (262M parameters) to
learn six new tokens. Here the marker tokens are added to the tokenizer and only *their*
embedding rows are trainable (peft's ``trainable_token_indices``); everything else in the
base model is frozen under LoRA. Markers are input-only, so the LM head is untouched.

``llm.model`` loads a checkpoint with ``from_pretrained`` (Llama/Vicuna, Qwen, Gemma:
whatever ``AutoModelForCausalLM`` knows). ``llm.arch`` builds a random model from config
kwargs with a tokenizer built in code, which is how the offline tiny profile runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import torch

from modaverse.config import LLMConfig, TrainableConfig
from modaverse.encoder import DTYPES, pick_device
from modaverse.errors import ModaverseError
from modaverse.quiet import quiet

#: Text the in-code tokenizer is trained on: prose plus meta-responses, so JSON keys merge.
_TINY_CORPUS = (
    "A chat between a curious human and an artificial intelligence assistant.",
    "Describe the image. What sound is this? Generate a video of a dog running on the beach.",
    "Here is an image of a cat sitting on a red sofa in a bright living room.",
    "The quick brown fox jumps over the lazy dog while birds sing in the trees.",
    '{"text":"Here is the picture you asked for.","invocations":[{"capability":"text-to-image",'
    '"prompt":"a photo of a cat"}]}',
    '{"text":"A dog barks.","invocations":[{"capability":"text-to-audio","prompt":"a dog barking",'
    '"params":{"seed":1,"steps":25,"guidance":7.5,"duration":5.0}}]}',
    '{"text":"","invocations":[{"capability":"text-to-video","prompt":"waves on a beach at sunset",'
    '"params":{"frames":16,"width":256,"height":256}}]}',
    "### Human: ### Assistant: image audio video depth thermal motion sensor",
)


def train_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """A byte-level BPE trained on ``texts``, as tokenizer JSON, with <unk> <s> </s> <pad> as ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok.to_str()


def wrap_bpe(tokenizer_json: str):
    """A ``train_bpe`` result as a transformers tokenizer with its special tokens named."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@lru_cache(maxsize=4)
def tiny_tokenizer_json(vocab_size: int = 512) -> str:
    from modaverse.data.synth import corpus

    return train_bpe([*_TINY_CORPUS * 4, *corpus()], vocab_size)


def tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained in code on a fixed corpus (deterministic, offline)."""
    return wrap_bpe(tiny_tokenizer_json(vocab_size))


@dataclass
class LLM:
    """A causal LM (wrapped by peft when LoRA is on) with its tokenizer and marker ids."""

    model: torch.nn.Module
    tokenizer: object
    marker_ids: dict[str, int]
    #: For a model built from ``arch``: its in-code tokenizer before markers, saved with checkpoints.
    tokenizer_json: str | None = None

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def max_context(self) -> int | None:
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))


def _load_tokenizer(config: LLMConfig):
    if config.model is None:
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(config.model)
    except (OSError, ValueError) as e:
        raise ModaverseError(f"llm.model {config.model}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
    if len(tok) == 0:
        raise ModaverseError(f"llm.model {config.model}: the tokenizer loaded empty (no vocabulary files found)")
    if not getattr(tok, "is_fast", False):
        raise ModaverseError(f"llm.model {config.model}: a fast (tokenizers) tokenizer is needed for "
                             "constrained decoding; install `tokenizers`/`sentencepiece` so it can be converted")
    return tok


def _load_model(config: LLMConfig, tokenizer) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = DTYPES[config.dtype]
    if config.model is not None:
        try:
            return AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        except (OSError, ValueError) as e:
            raise ModaverseError(f"llm.model {config.model}: cannot load ({str(e).splitlines()[0]})") from None
    arch = dict(config.arch or {})
    model_type = arch.pop("model_type", "llama")
    special = {k: getattr(tokenizer, f"{k}_id") for k in ("bos_token", "eos_token", "pad_token")}
    try:
        hf_config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **special, **arch)
    except (ValueError, TypeError) as e:
        raise ModaverseError(f"llm.arch: {e}") from None
    torch.manual_seed(config.seed)
    return AutoModelForCausalLM.from_config(hf_config, dtype=dtype)


def load_llm(config: LLMConfig, markers: list[str], tokenizer=None, trainable: TrainableConfig | None = None) -> LLM:
    """Loads (or builds) the LM, adds the marker tokens, and wraps it as ``trainable`` says.

    ``trainable.llm``: ``lora`` wraps the model in LoRA adapters; ``full`` leaves it bare
    (every weight trains); ``frozen`` leaves it bare too, with only the marker rows
    trainable when ``trainable.markers`` is on. ``tokenizer`` replaces the configured one
    (a model built from ``arch`` then gets its vocabulary size), e.g. a real-size
    vocabulary for benchmarks or the one saved with a checkpoint.
    """
    trainable = trainable or TrainableConfig()
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model = _load_model(config, tokenizer)
    tokenizer_json = tokenizer.backend_tokenizer.to_str() if config.model is None else None
    tokenizer.add_tokens(markers, special_tokens=True)
    marker_ids = {m: tokenizer.convert_tokens_to_ids(m) for m in markers}
    new_ids = sorted(i for i in marker_ids.values() if i >= model.get_input_embeddings().num_embeddings)
    if new_ids:
        # New rows start at the mean of the old ones (not random), so untrained markers are harmless.
        torch.manual_seed(config.seed)
        with quiet():
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.requires_grad_(False)
    rows = sorted(marker_ids.values()) if trainable.markers else []
    peft_config = None
    if trainable.llm == "lora":
        from peft import LoraConfig

        lora = config.lora
        peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=list(lora.targets), task_type="CAUSAL_LM",
                                 trainable_token_indices=rows or None)
    elif trainable.llm == "frozen" and rows:
        from peft import TrainableTokensConfig

        peft_config = TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=rows)
    elif trainable.llm == "full":
        model.requires_grad_(True)
    if peft_config is not None:
        from peft import get_peft_model

        with quiet():
            model = get_peft_model(model, peft_config)
    model.to(pick_device(config.device)).eval()
    return LLM(model, tokenizer, marker_ids, tokenizer_json)
