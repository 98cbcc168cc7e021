"""A plain Llama-architecture checkpoint (config.json + safetensors + tokenizer) written as one GGUF file.

llama.cpp's `convert_hf_to_gguf.py` is the reference; this is the part of it a protege student needs (the
bundled SmolLM2 and any other Llama-architecture base with a byte-level BPE tokenizer), written with the `gguf`
package alone:
- hyperparameters under `llama.*`, the tokenizer as `gpt2` BPE with its merges, special ids and chat template;
- the pre-tokenizer named by the hash of a fixed text's token ids, as llama.cpp names it (an unknown one is an
  error: a wrong pre-tokenizer silently changes how inputs are split);
- query and key projections permuted from Hugging Face's rotary layout to GGML's;
- 2-D weights in f32, f16 or q8_0 (what the `gguf` package can write); norms stay f32. Other quant types (q4_k_m)
  are made from the f16 file by llama.cpp's own quantizer (`quantize_gguf`), which needs `llama-cpp-python`; its
  log (~400 lines: the loader's metadata dump, a line per tensor) is read for a summary instead of printed.
"""

from __future__ import annotations

import ctypes
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from protege.errors import UserError

WRITABLE = ("f32", "f16", "q8_0")
"""Quant types the gguf package writes directly."""

VIA_LLAMA_CPP = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "q4_0": 2}
"""Quant types made by llama.cpp's quantizer from the f16 file (value: llama.cpp's file type number)."""

# llama.cpp identifies a BPE pre-tokenizer by the sha256 of the token ids this text encodes to (its
# convert_hf_to_gguf.get_vocab_base_pre); the hashes below are the Llama-family tokenizers it knows.
_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
}


def write_gguf(checkpoint: Path, out_file: Path, quant: str = "q8_0", *, name: str = "") -> Path:
    """Convert `checkpoint` (a Llama-architecture folder) into `out_file` with 2-D weights in `quant`."""
    import gguf
    from transformers import AutoTokenizer

    if quant not in WRITABLE:
        raise UserError(f"quant {quant!r} cannot be written directly; choose one of {', '.join(WRITABLE)}")
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    _check_architecture(config, checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    writer = gguf.GGUFWriter(out_file, "llama")
    writer.add_name(name or checkpoint.name)
    _write_hyperparameters(writer, config, quant)
    _write_vocab(writer, tokenizer, checkpoint, config)
    for tensor_name, array, qtype in _tensors(checkpoint, config, quant):
        writer.add_tensor(tensor_name, array, raw_dtype=qtype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


@dataclass(frozen=True)
class Quantized:
    """What llama.cpp's quantizer made: the file, its tensors, and how many of them fell back to another type (a
    k-quant needs rows that split into 256-value blocks; narrower ones get a simpler type) and which."""

    path: Path
    quant: str
    tensors: int | None
    fallbacks: int
    fallback_types: tuple[str, ...]

    def summary(self) -> str:
        """One line for people: what was quantized and what fell back."""
        tensors = f"{self.tensors} tensors" if self.tensors is not None else "the weights"
        if not self.fallbacks:
            return f"llama.cpp quantized {tensors} to {self.quant}"
        types = " or ".join(self.fallback_types) or "another type"
        return (
            f"llama.cpp quantized {tensors} to {self.quant}; {self.fallbacks} of them fell back to {types}: their "
            f"rows do not split into {self.quant} blocks"
        )


def quantize_gguf(f16_file: Path, out_file: Path, quant: str) -> Quantized:
    """Quantize an f16 GGUF with llama.cpp's own quantizer (the k-quants the gguf package cannot write)."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError(
            f"quant {quant!r} needs llama.cpp's quantizer: pip install 'protege[llama]' "
            f"(builds llama-cpp-python), or export --quant q8_0 / f16"
        ) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = VIA_LLAMA_CPP[quant]
    params.nthread = 0
    with _llama_log(llama_cpp) as log:
        status = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), params)
    lines = "".join(log).splitlines()
    if status != 0:
        said = next((line.strip() for line in reversed(lines) if "fail" in line or "error" in line), "")
        raise UserError(
            f"llama.cpp could not quantize {str(f16_file)!r} to {quant!r} (status {status}"
            f"{': ' + said if said else ''}); export --quant q8_0 instead"
        )
    return _read_log(out_file, quant, lines)


@contextmanager
def _llama_log(llama_cpp: Any) -> Iterator[list[str]]:
    """llama.cpp's log text collected instead of printed while the block runs; its usual printer is back after."""
    texts: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: Any) -> None:
        texts.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield texts
    finally:
        llama_cpp.llama_log_set(_usual_printer(), ctypes.c_void_p(0))


def _usual_printer() -> Any:
    """llama-cpp-python's own log printer (it heeds its verbose setting), else None: llama.cpp's default."""
    try:
        from llama_cpp._logger import llama_log_callback
    except ImportError:
        return None
    return llama_log_callback


_PROGRESS = re.compile(r"\[\s*\d+/\s*(\d+)\]")  # "[  20/  20] blk.1.ffn_up.weight - ..."
_FELL_BACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback")
_FALLBACK_TYPE = re.compile(r"fall(?:ing)? back to\s+(\w+)|fallback quantization\s+(\w+)")


def _read_log(path: Path, quant: str, lines: list[str]) -> Quantized:
    tensors = max((int(m.group(1)) for line in lines if (m := _PROGRESS.match(line.strip()))), default=None)
    fallbacks, types = 0, set()
    for line in lines:
        if counted := _FELL_BACK.search(line):
            fallbacks, tensors = int(counted.group(1)), int(counted.group(2))
        elif kind := _FALLBACK_TYPE.search(line):
            types.add(kind.group(1) or kind.group(2))
    return Quantized(path, quant, tensors, fallbacks, tuple(sorted(types)))


def _check_architecture(config: dict[str, Any], checkpoint: Path) -> None:
    archs = config.get("architectures") or [config.get("model_type", "?")]
    if archs[0] not in ("LlamaForCausalLM", "llama"):
        raise UserError(
            f"GGUF export supports Llama-architecture students (like SmolLM2); {str(checkpoint)!r} is "
            f"{archs[0]!r}. Export --format hf and convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    scaling = config.get("rope_scaling") or _rope(config).get("rope_type", "default")
    if scaling not in ("default", None):
        raise UserError(
            f"{str(checkpoint)!r} uses rope scaling {scaling!r}, which this exporter does not write; "
            f"export --format hf and convert with llama.cpp's convert_hf_to_gguf.py"
        )


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings: transformers 5 keeps them under `rope_parameters`, older versions at the top level."""
    return {**{k: v for k, v in config.items() if k.startswith("rope_")}, **(config.get("rope_parameters") or {})}


def _write_hyperparameters(writer: Any, config: dict[str, Any], quant: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    writer.add_rope_freq_base(float(_rope(config).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(config["vocab_size"])
    ftype = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[quant]
    writer.add_file_type(ftype)


def _write_vocab(writer: Any, tokenizer: Any, checkpoint: Path, config: dict[str, Any]) -> None:
    import gguf

    if not getattr(tokenizer, "is_fast", False) or "merges" not in _tokenizer_model(checkpoint):
        raise UserError(
            f"GGUF export needs a byte-level BPE tokenizer (tokenizer.json with merges) in "
            f"{str(checkpoint)!r}; export --format hf and convert with llama.cpp's converter"
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer, checkpoint))
    tokens, types = _token_list(tokenizer, config["vocab_size"])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(checkpoint, load_merges=True, n_vocab=config["vocab_size"])
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _tokenizer_model(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "tokenizer.json"
    return json.loads(path.read_text(encoding="utf-8")).get("model", {}) if path.is_file() else {}


def _pre_tokenizer(tokenizer: Any, checkpoint: Path) -> str:
    digest = sha256(str(tokenizer.encode(_CHECK_TEXT)).encode()).hexdigest()
    if digest not in _PRE_TOKENIZERS:
        raise UserError(
            f"the tokenizer of {str(checkpoint)!r} splits text in a way this exporter does not know "
            f"(hash {digest[:12]}); export --format hf and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    return _PRE_TOKENIZERS[digest]


def _token_list(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token text and type (normal, control for special tokens, user-defined, unused padding ids)."""
    import gguf

    by_id = {i: text for text, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []  # gguf.TokenType values (an IntEnum)
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            special = decoder[i].special or (text.startswith("<|") and text.endswith("|>"))
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _tensors(checkpoint: Path, config: dict[str, Any], quant: str):
    """(GGUF name, array, raw GGML type) of every weight, q/k permuted, 2-D weights in `quant`."""
    import gguf
    from safetensors.numpy import load_file

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise UserError(f"{str(checkpoint)!r} has no .safetensors weights; save it with safe_serialization=True")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    for file in files:
        for hf_name, array in load_file(file).items():
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise UserError(f"weight {hf_name!r} of {str(checkpoint)!r} has no GGUF name; export --format hf")
            array = array.astype("float32")
            if hf_name.endswith("q_proj.weight"):
                array = _permute(array, heads)
            elif hf_name.endswith("k_proj.weight"):
                array = _permute(array, kv_heads)
            yield (gguf_name, *_encode(array, quant))


def _permute(weights, heads: int):
    """Hugging Face's rotary halves -> GGML's interleaved pairs, per head (llama.cpp's LlamaModel.permute)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _encode(array, quant: str):
    """1-D tensors (norms) stay f32; 2-D ones are f32, f16, or q8_0 where rows split into whole 32-value blocks."""
    import gguf
    import numpy as np

    if array.ndim == 1 or quant == "f32":
        return array, None
    if quant == "q8_0" and array.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(array, qtype), qtype
    return array.astype(np.float16), None
