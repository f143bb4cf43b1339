"""The LLM wrapper: marker rows are the only trainable embedding weights, loading is real."""

import pytest
import torch

from modaverse.config import LLMConfig, load_config
from modaverse.errors import ModaverseError
from modaverse.llm import load_llm, tiny_tokenizer

MARKERS = ["<Image>", "</Image>", "<Audio>", "</Audio>"]
TINY_ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 256}


def _trainable(model):
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def test_only_lora_and_the_new_marker_rows_train():
    llm = load_llm(load_config("tiny").llm, MARKERS)
    trainable = _trainable(llm.model)
    token_rows = [n for n in trainable if "trainable_tokens_delta" in n]
    assert len(token_rows) == 1 and trainable[token_rows[0]] == len(MARKERS) * llm.hidden_size
    assert all("lora_" in n or "trainable_tokens" in n for n in trainable)
    assert not any("lm_head" in n or n.endswith("embed_tokens.weight") for n in trainable)
    targets = {n.split(".")[-4] for n in trainable if "lora_A" in n}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert list(llm.marker_ids) == MARKERS
    assert all(llm.tokenizer.convert_ids_to_tokens(i) == m for m, i in llm.marker_ids.items())


def test_a_marker_row_receives_gradient_but_old_rows_do_not():
    llm = load_llm(load_config("tiny").llm, MARKERS)
    ids = torch.tensor([[5, llm.marker_ids["<Image>"], 7]])
    llm.model.train()
    llm.model(input_ids=ids, labels=ids).loss.backward()
    delta = next(p for n, p in llm.model.named_parameters() if "trainable_tokens_delta" in n)
    assert delta.grad is not None and delta.grad[0].abs().sum() > 0  # <Image> is the first marker
    assert delta.grad[1:].abs().sum() == 0  # unused markers get nothing


def test_lora_settings_come_from_config():
    cfg = LLMConfig(arch=TINY_ARCH, lora={"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
                    device="cpu")
    llm = load_llm(cfg, MARKERS)
    lora = llm.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha, set(lora.target_modules)) == (4, 8, {"q_proj", "v_proj"})
    assert {n.split(".")[-4] for n in _trainable(llm.model) if "lora_A" in n} == {"q_proj", "v_proj"}


def test_other_architectures_go_through_the_same_path():
    cfg = LLMConfig(arch={**TINY_ARCH, "model_type": "qwen2"}, device="cpu")
    llm = load_llm(cfg, MARKERS)
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
        load_llm(LLMConfig(arch={"model_type": "no-such-model"}, device="cpu"), MARKERS)
