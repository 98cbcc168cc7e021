"""A tiny, randomly initialised causal LM with a ChatML tokenizer, built offline in a second: a training target."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


TRAIN_CONFIG = {
    "max_steps": 8,
    "save_steps": 2,
    "save_total_limit": 2,
    "batch_size": 4,
    "logging_steps": 1,
    "learning_rate": 1e-3,
    "max_length": 256,
    "bf16": False,
    "torch_threads": 1,
}
ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Route the ticket."},
            {"role": "user", "content": f'{{"subject": "ticket {i} {"refund" if i % 2 else "crash"}"}}'},
            {"role": "assistant", "content": '{"queue":"%s","priority":2}' % ("billing" if i % 2 else "bug")},
        ]
    }
    for i in range(32)
]


def build_tiny_base(folder: Path, corpus: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
