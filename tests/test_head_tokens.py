"""A head's extra special tokens (docs/heads.md): loading adds them, their embedding rows train (also under LoRA,
which alone would leave them at their initial values), and a saved model reloads with the trained rows."""

from __future__ import annotations

import pytest
import torch

from invert4tvg.config import ModelArguments
from invert4tvg.policy.loading import HEADS, load_policy
from invert4tvg.policy.text_timestamps import TextTimestampPolicy
from invert4tvg.training.output_dir import write_final


class LocHead(TextTimestampPolicy):
    """Text timestamps plus a ``<LOC>`` token, as VideoExpert's head needs (ours only for this test)."""

    name = "loc_test"
    extra_special_tokens = ("<LOC>",)


@pytest.fixture
def loc_head(monkeypatch):
    monkeypatch.setitem(HEADS, "loc_test", f"{__name__}:LocHead")


def embed(policy, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return policy.model.get_input_embeddings()(torch.tensor([ids])).detach().clone()[0]


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_a_heads_new_token_trains_and_survives_save_and_load(loc_head, use_peft, tiny_model_dir, tmp_path):
    args = ModelArguments(
        model_name_or_path=str(tiny_model_dir),
        head="loc_test",
        dtype="float32",
        freeze_vision_tower=False,
        use_peft=use_peft,
        lora_r=4,
        lora_alpha=8,
    )
    policy = load_policy(args)
    tokenizer = policy.processor.tokenizer
    loc = tokenizer.convert_tokens_to_ids("<LOC>")
    inputs = tokenizer(["It happens during <LOC>."], return_tensors="pt")
    assert inputs["input_ids"][0].tolist().count(loc) == 1
    unused = next(i for i in range(10, 700) if i not in inputs["input_ids"][0].tolist())
    before = embed(policy, [loc, unused])

    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        policy.model(**inputs, labels=inputs["input_ids"], use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = embed(policy, [loc, unused])
    assert not torch.allclose(after[0], before[0]), "the new token's embedding row did not train"
    if (
        use_peft
    ):  # LoRA's trainable tokens: that row only (full fine-tuning moves every row of a tied LM head)
        torch.testing.assert_close(after[1], before[1])

    final = write_final(policy.model, policy.processor, tmp_path, 3, policy.head_config())
    loaded = load_policy(ModelArguments(model_name_or_path=str(final), dtype="float32"), for_training=False)
    assert isinstance(loaded, LocHead)
    assert loaded.processor.tokenizer.convert_tokens_to_ids("<LOC>") == loc
    torch.testing.assert_close(embed(loaded, [loc, unused]), after)


def test_an_untied_lm_head_trains_the_new_tokens_rows_under_lora(loc_head, tmp_path):
    """Qwen2.5-VL-7B has an LM head of its own: under LoRA its rows of the new tokens must train too, or the model
    could never learn to emit them."""
    from invert4tvg.policy.tiny_qwen import TinyModelSpec, build_tiny_model

    model_dir = build_tiny_model(tmp_path / "untied", seed=0, spec=TinyModelSpec(tie_word_embeddings=False))
    args = ModelArguments(
        model_name_or_path=str(model_dir),
        head="loc_test",
        dtype="float32",
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
    )
    policy = load_policy(args)
    tokenizer = policy.processor.tokenizer
    loc = tokenizer.convert_tokens_to_ids("<LOC>")
    inputs = tokenizer(["It happens during <LOC>."], return_tensors="pt")

    def lm_head_rows() -> torch.Tensor:
        hidden = torch.eye(policy.model.config.get_text_config().hidden_size)
        with torch.no_grad():
            return policy.model.get_output_embeddings()(hidden).T.clone()  # (vocab, H): row i = token i

    before = lm_head_rows()
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        policy.model(**inputs, labels=inputs["input_ids"], use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = lm_head_rows()
    assert not torch.allclose(after[loc], before[loc]), "the new token's LM-head row did not train"
    others = [i for i in range(len(before)) if i != loc]
    torch.testing.assert_close(after[others], before[others])  # LoRA leaves every other row alone

    final = write_final(policy.model, policy.processor, tmp_path, 3, policy.head_config())
    loaded = load_policy(ModelArguments(model_name_or_path=str(final), dtype="float32"), for_training=False)
    with torch.no_grad():
        row = loaded.model.get_output_embeddings()(torch.eye(after.shape[1])).T[loc]
    torch.testing.assert_close(row, after[loc])
