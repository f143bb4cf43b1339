"""The language model: any HF causal LM, marker tokens, and LoRA through peft.

The research code unfreezes the whole embedding matrix and LM head (262M parameters) to
learn six new tokens. Here the marker tokens are added to the tokenizer and only *their*
embedding rows train (:class:`MarkerRows`); everything else in the base model is frozen
under LoRA. Markers are input-only, so the LM head is untouched.

For inference the trained parts are folded into the base weights (:meth:`LLM.merge`):
LoRA is merged and the marker rows are written into the embedding table, so a trained
checkpoint decodes exactly as fast as the bare model.

``llm.model`` loads with ``from_pretrained`` (a hub id, a folder, a ``.gguf`` file or a
packaged file; :mod:`modaverse.llm.source`). ``llm.arch`` builds a random model from
config kwargs with a tokenizer built in code, which is how the offline tiny profile runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from modaverse.config import LLMConfig, TrainableConfig
from modaverse.core.device import DTYPES, pick_device
from modaverse.core.errors import ModaverseError
from modaverse.core.quiet import quiet


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


class MarkerRows(torch.nn.Module):
    """The input embedding with the marker tokens' rows as a small trainable matrix of their own.

    peft's ``trainable_token_indices`` rebuilds the whole vocab x hidden matrix on every
    forward pass (and, with tied embeddings, the LM head too): on SmolLM2, 16% slower training
    steps and 21% slower unmerged decoding (``benchmarks/marker_rows.py``), and decoding from a
    checkpoint was 3.6 to 8 times slower before inference merged it. Here the frozen table is
    looked up as usual and only positions holding a marker take their row from ``rows``.
    Models that scale their embeddings (Gemma multiplies by sqrt(hidden)) get the same
    scale on the marker rows, so a row means what a table row means.
    """

    def __init__(self, base: torch.nn.Embedding, ids: Sequence[int]):
        super().__init__()
        self.base = base
        ids = sorted(ids)
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        lookup = torch.full((base.num_embeddings,), -1, dtype=torch.long)
        lookup[self.ids] = torch.arange(len(ids))
        self.register_buffer("lookup", lookup, persistent=False)
        self.rows = torch.nn.Parameter(base.weight.detach()[self.ids].clone())

    @property
    def weight(self) -> torch.Tensor:  # callers read the table's device and dtype through it
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        hit = self.lookup[input_ids]
        scale = out.new_tensor(1.0) if getattr(self.base, "embed_scale", None) is None else self.base.embed_scale
        rows = self.rows[hit.clamp_min(0)].to(out.dtype) * scale.to(out.dtype)
        return torch.where((hit >= 0)[..., None], rows, out)

    def merged(self) -> torch.nn.Embedding:
        """The plain embedding with the trained rows written into its table."""
        with torch.no_grad():
            self.base.weight[self.ids] = self.rows.to(self.base.weight.dtype)
        return self.base


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

    @property
    def eos_ids(self) -> list[int]:
        """Every id that ends an answer: the generation config's (an int or a list) and the tokenizer's."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return sorted({i for i in [*ids, self.tokenizer.eos_token_id] if i is not None})

    @torch.no_grad()
    def text_embedding_norm(self, sample: int = 4096) -> float:
        """The mean L2 norm of text token embeddings as the LLM sees them (after any embedding scale)."""
        vocab = min(self.model.get_input_embeddings().num_embeddings, len(self.tokenizer))
        special = set(self.tokenizer.all_special_ids) | set(self.marker_ids.values())
        ids = [i for i in torch.linspace(0, vocab - 1, min(sample, vocab)).long().tolist() if i not in special]
        return float(self.embed_tokens(torch.tensor(ids)).float().norm(dim=-1).mean())

    def merge(self) -> None:
        """Folds LoRA and the marker rows into the base weights, for inference at the bare model's speed."""
        from peft import PeftModel

        model = self.model
        if isinstance(model, PeftModel):
            with quiet():
                model = model.merge_and_unload()
        embeddings = model.get_input_embeddings()
        if isinstance(embeddings, MarkerRows):
            model.set_input_embeddings(embeddings.merged())
        self.model = model.requires_grad_(False).eval()


def load_tokenizer(config: LLMConfig, source: str | None = None):
    """``llm.model``'s own tokenizer (``source``: the model as :func:`~modaverse.llm.source.resolve` found it)."""
    from transformers import AutoTokenizer

    from modaverse.llm.source import resolve

    source = source or resolve(config.model)

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModaverseError(f"llm.model {config.model}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
    if len(tok) == 0:
        raise ModaverseError(f"llm.model {config.model}: the tokenizer loaded empty (no vocabulary files found)")
    if not getattr(tok, "is_fast", False):
        raise ModaverseError(f"llm.model {config.model}: a fast (tokenizers) tokenizer is needed for "
                             "constrained decoding; install `tokenizers`/`sentencepiece` so it can be converted")
    return tok


def _load_model(config: LLMConfig, source: str | None, tokenizer) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = DTYPES[config.dtype]
    if source is not None:
        try:
            with quiet():
                return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
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
    (every weight trains); ``frozen`` leaves it bare too. With ``lora`` or ``frozen``, the
    marker rows train on their own when ``trainable.markers`` is on. ``tokenizer`` replaces
    the configured one (a model built from ``arch`` then gets its vocabulary size), e.g. a
    real-size vocabulary for benchmarks or the one saved with a checkpoint.
    """
    from modaverse.llm.source import resolve

    trainable = trainable or TrainableConfig()
    if config.model is None and not config.arch and tokenizer is None:
        raise ModaverseError("llm: set llm.model (a hub id, folder, .gguf file or pkg:DIST/PATH) or llm.arch")
    source = resolve(config.model) if config.model is not None else None
    if tokenizer is None and source is None:
        raise ModaverseError("llm.arch builds a model from config but names no tokenizer: pass one (the pipeline "
                             "passes a checkpoint's saved tokenizer, or the tiny kit's)")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config, source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    model = _load_model(config, source, tokenizer)
    tokenizer_json = tokenizer.backend_tokenizer.to_str() if config.model is None else None
    tokenizer.add_tokens(markers, special_tokens=True)
    marker_ids = {m: tokenizer.convert_tokens_to_ids(m) for m in markers}
    new_ids = sorted(i for i in marker_ids.values() if i >= model.get_input_embeddings().num_embeddings)
    if new_ids:
        # New rows start at the mean of the old ones, so untrained markers are harmless. (transformers'
        # mean_resizing samples from the rows' full covariance: 4.5 s at Gemma's 262k rows.)
        old = model.get_input_embeddings().num_embeddings
        with quiet():
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for table in {id(t): t for t in (model.get_input_embeddings(), model.get_output_embeddings())
                          if t is not None}.values():
                table.weight[old:] = table.weight[:old].mean(0)
    model.requires_grad_(trainable.llm == "full")
    if trainable.llm != "full" and trainable.markers and marker_ids:
        model.set_input_embeddings(MarkerRows(model.get_input_embeddings(), list(marker_ids.values())))
    if trainable.llm == "lora":
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        missing = sorted(set(lora.targets) - names)
        if missing:
            raise ModaverseError(f"llm.lora.targets: {', '.join(missing)} not in this model (its linear layers: "
                                 f"{', '.join(sorted(names))})")
        with quiet():
            model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     target_modules=list(lora.targets), task_type="CAUSAL_LM"))
        for module in model.modules():  # peft freezes everything that is not LoRA
            if isinstance(module, MarkerRows):
                module.rows.requires_grad_(True)
    model.to(pick_device(config.device)).eval()
    return LLM(model, tokenizer, marker_ids, tokenizer_json)
