"""The LLM wrapper: marker rows are the only trainable embedding weights, loading is real."""

import pytest
import torch

from modaverse.config import LLMConfig, load_config
from modaverse.core.errors import ModaverseError
from modaverse.llm.model import load_llm
from modaverse.tiny.tokenizer import tokenizer as tiny_tokenizer

MARKERS = ["<Image>", "</Image>", "<Audio>", "</Audio>"]
TINY_ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 256}


def _trainable(model):
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def test_only_lora_and_the_new_marker_rows_train():
    llm = load_llm(load_config("tiny").llm, MARKERS, tiny_tokenizer())
    trainable = _trainable(llm.model)
    token_rows = [n for n in trainable if n.endswith("embed_tokens.rows")]
    assert len(token_rows) == 1 and trainable[token_rows[0]] == len(MARKERS) * llm.hidden_size
    assert all("lora_" in n or n in token_rows for n in trainable)
    assert not any("lm_head" in n or n.endswith("embed_tokens.weight") for n in trainable)
    targets = {n.split(".")[-4] for n in trainable if "lora_A" in n}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert list(llm.marker_ids) == MARKERS
    assert all(llm.tokenizer.convert_ids_to_tokens(i) == m for m, i in llm.marker_ids.items())


def test_a_marker_row_receives_gradient_but_old_rows_do_not():
    llm = load_llm(load_config("tiny").llm, MARKERS, tiny_tokenizer())
    ids = torch.tensor([[5, llm.marker_ids["<Image>"], 7]])
    llm.model.train()
    llm.model(input_ids=ids, labels=ids).loss.backward()
    rows = next(p for n, p in llm.model.named_parameters() if n.endswith("embed_tokens.rows"))
    assert rows.grad is not None and rows.grad[0].abs().sum() > 0  # <Image> is the first marker
    assert rows.grad[1:].abs().sum() == 0  # unused markers get nothing
    assert all(p.grad is None for n, p in llm.model.named_parameters() if "embed_tokens.base" in n)


GEMMA_ARCH = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "max_position_embeddings": 256}


@pytest.mark.parametrize("arch", [TINY_ARCH, GEMMA_ARCH], ids=["llama", "gemma3-scaled-embeddings"])
def test_merging_for_inference_changes_nothing_but_speed(arch):
    """Trained LoRA and marker rows folded into the base weights give the same logits, and the
    merged model is a plain transformers model again (no per-forward rebuilding)."""
    from modaverse.llm.model import MarkerRows

    llm = load_llm(LLMConfig(arch=arch, device="cpu", lora={"r": 4, "alpha": 8, "dropout": 0.0}), MARKERS, tiny_tokenizer())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in llm.model.parameters():
            if p.requires_grad:  # as if trained: LoRA B is zero and the rows are the table's at init
                p.add_(torch.randn_like(p) * 0.05)
    ids = torch.tensor([[5, llm.marker_ids["<Image>"], 7, llm.marker_ids["</Audio>"], 9]])
    with torch.no_grad():
        before = llm.model(input_ids=ids).logits
        llm.merge()
        after = llm.model(input_ids=ids).logits
    # Marker logits may differ (with tied embeddings the LM head shares the rows); they are
    # never sampled: generation suppresses markers.
    text = [i for i in range(before.shape[-1]) if i not in llm.marker_ids.values()]
    torch.testing.assert_close(after[..., text], before[..., text], rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, MarkerRows) or "lora" in type(m).__name__.lower() for m in llm.model.modules())
    assert not any(p.requires_grad for p in llm.model.parameters())


def test_stops_on_every_eos_id_of_the_generation_config():
    llm = load_llm(LLMConfig(arch=TINY_ARCH, device="cpu"), MARKERS, tiny_tokenizer())
    llm.model.generation_config.eos_token_id = [7, llm.tokenizer.eos_token_id, 11]
    assert llm.eos_ids == sorted({7, 11, llm.tokenizer.eos_token_id})


def test_lora_settings_come_from_config():
    cfg = LLMConfig(arch=TINY_ARCH, lora={"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
                    device="cpu")
    llm = load_llm(cfg, MARKERS, tiny_tokenizer())
    lora = llm.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha, set(lora.target_modules)) == (4, 8, {"q_proj", "v_proj"})
    assert {n.split(".")[-4] for n in _trainable(llm.model) if "lora_A" in n} == {"q_proj", "v_proj"}


def test_other_architectures_go_through_the_same_path():
    cfg = LLMConfig(arch={**TINY_ARCH, "model_type": "qwen2"}, device="cpu")
    llm = load_llm(cfg, MARKERS, tiny_tokenizer())
    assert llm.model.config.model_type == "qwen2" and llm.hidden_size == 32


def test_loads_a_saved_checkpoint_with_from_pretrained(tmp_path):
    """The real loading path: a folder written by save_pretrained, dtype from config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), **TINY_ARCH))
    base.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    llm = load_llm(LLMConfig(model=str(tmp_path), dtype="bfloat16", device="cpu"), MARKERS)
    assert llm.model.get_base_model().dtype == torch.bfloat16
    assert len(llm.tokenizer) == len(tok) + len(MARKERS)
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        ours = llm.model(input_ids=ids).logits.float()[..., : len(tok)]
        ref = base.to(torch.bfloat16)(input_ids=ids).logits.float()
    torch.testing.assert_close(ours, ref)  # LoRA starts as identity


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModaverseError, match=r"llm.model .*nowhere: cannot load the tokenizer"):
        load_llm(LLMConfig(model=str(tmp_path / "nowhere"), device="cpu"), MARKERS)
    with pytest.raises(ModaverseError, match="llm.arch"):
        load_llm(LLMConfig(arch={"model_type": "no-such-model"}, device="cpu"), MARKERS, tiny_tokenizer())


@pytest.mark.parametrize("arch,shared", [(TINY_ARCH, True), (GEMMA_ARCH, False)], ids=["llama", "gemma3-sliding"])
def test_a_shared_prefix_is_used_only_by_caches_rows_can_share(arch, shared):
    """Sliding-window caches (Gemma 3) cannot be extended per row by concatenation: the decoder
    then prefills whole prompts, with the same tokens as a decoder given no prefix."""
    from modaverse.llm.decode import Decoder, Prefix, Sampling

    llm = load_llm(LLMConfig(arch=arch, device="cpu"), MARKERS, tiny_tokenizer())
    embeds = llm.embed_tokens(torch.tensor([[5, 6, 7, 8, 9, 10, 11]]))
    prefix = Prefix(llm.model, embeds[:, :4])
    assert prefix.usable is shared and prefix.starts(embeds) and not prefix.starts(embeds[:, :4])
    runs = []
    for given in (prefix, None):
        tokens: list[int] = []
        decoder = Decoder(llm.model, Sampling(6), stop_ids=[], prefix=given,
                          on_token=lambda row, t, tokens=tokens: tokens.append(t) and False)
        assert (decoder.prefix is not None) is (shared and given is not None)
        decoder.join([embeds])
        while len(decoder):
            decoder.step()
        runs.append(tokens)
    assert runs[0] == runs[1] and len(runs[0]) == 6
