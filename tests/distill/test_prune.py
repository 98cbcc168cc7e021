"""A shallower student (`TrainConfig.dropped_layers`): the block that changes the rows least goes, the rest
answers as before where that block did nothing, and the trained student is a plain, smaller checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from student_support import chat_row, tiny_dims

from protege.distill.prune import drop_layers, layers_to_drop
from protege.distill.train import TrainConfig, train_student
from protege.errors import UserError

ROWS = [chat_row("Sort the message.", {"text": t}, {"queue": q}) for t, q in [("refund", "billing"), ("crash", "bug")]]
FAST = {"learning_rate": 1e-2, "batch_size": 2, "torch_threads": 2, "warmup_ratio": 0.0, "lr_scheduler": "constant"}


@pytest.fixture(scope="module")
def six_layer_base(smollm2_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 6-layer Llama on SmolLM2's tokenizer whose layers 2 and 3 add nothing to the residual stream
    (their output projections are zero), so they are the block that changes the rows least."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
    config = LlamaConfig(**tiny_dims(tokenizer), num_hidden_layers=6, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for index in (2, 3):
            model.model.layers[index].self_attn.o_proj.weight.zero_()
            model.model.layers[index].mlp.down_proj.weight.zero_()
    folder = tmp_path_factory.mktemp("six-layers")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _load(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def test_the_block_that_changes_nothing_is_dropped_and_the_answers_stay(six_layer_base):
    """Two of six layers (a third) go: the two that add nothing, not the first or the last; the logits are
    the same as the whole model's, with and without the key/value cache (renumbered layers)."""
    import torch

    model = _load(six_layer_base)
    ids = torch.tensor([[5, 17, 301, 42, 9, 77, 1200, 3]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    dropped = drop_layers(model, 1 / 3, [ids[0].tolist()])
    assert dropped == [2, 3]
    assert len(model.model.layers) == model.config.num_hidden_layers == 4
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)
        cached = model(input_ids=ids[:, :5], use_cache=True)
        step = model(input_ids=ids[:, 5:], past_key_values=cached.past_key_values, use_cache=True).logits
    assert torch.allclose(step, before[:, 5:], atol=1e-4)


def test_a_share_that_would_leave_only_the_ends_is_refused():
    """The first and the last layer always stay; a share that asks for more is a UserError naming the limit."""
    assert layers_to_drop(0.0, 30) == 0 and layers_to_drop(1 / 3, 30) == 10
    with pytest.raises(UserError, match="dropped_layers=0.9 would remove 5 of the base's 6 layers"):
        layers_to_drop(0.9, 6)
    with pytest.raises(ValueError, match="dropped_layers"):
        TrainConfig(method="lora", dropped_layers=0.3)


def test_a_trained_shallower_student_is_a_plain_smaller_checkpoint(six_layer_base, tmp_path):
    """Training with a third dropped saves a 4-layer checkpoint that loads on its own, records which of the base's
    layers went, and freezes its share of the layers that stay."""
    from safetensors.torch import load_file

    config = TrainConfig(**FAST, max_steps=2, dropped_layers=1 / 3, frozen_layers=0.25)
    result = train_student(ROWS, six_layer_base, tmp_path / "s", config)
    assert result.dropped_layers == [2, 3]
    student = _load(result.adapter_path)
    assert student.config.num_hidden_layers == 4 and len(student.model.layers) == 4
    base = load_file(six_layer_base / "model.safetensors")
    trained = load_file(result.adapter_path / "model.safetensors")
    assert trained["model.layers.0.mlp.up_proj.weight"].equal(base["model.layers.0.mlp.up_proj.weight"])  # frozen
    assert not trained["model.layers.2.mlp.up_proj.weight"].equal(base["model.layers.4.mlp.up_proj.weight"])
