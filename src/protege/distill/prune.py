"""A shallower student: drop a block of the base's decoder layers before fine-tuning (`TrainConfig.dropped_layers`).

Every layer costs the same in training and in every forward pass at serving time, so a base with a third of its
layers gone trains and answers about a third faster. Which layers go follows Gromov et al. ("The Unreasonable
Ineffectiveness of the Deeper Layers", 2024): the contiguous block whose removal changes the residual stream least
on the task's own rows — the smallest mean angular distance between the hidden state entering the block and the one
leaving it — chosen before training, which then heals the seam. The first and the last layer always stay.

The result is a plain checkpoint of the base's architecture with fewer layers (`num_hidden_layers` says how many),
so every engine and the GGUF export load it as they load any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from protege.errors import UserError

SAMPLE_ROWS = 8
"""Training rows the block is measured on: the choice is stable well before this (a forward pass each)."""


def layers_to_drop(share: float, total: int) -> int:
    """How many of `total` layers a `share` removes; a clear error where it would leave nothing to heal."""
    count = round(total * share)
    if count > total - 2:
        raise UserError(
            f"dropped_layers={share!r} would remove {count} of the base's {total} layers; the first and the last "
            "stay, so choose a share under (total - 2) / total"
        )
    return count


def drop_layers(model: Any, share: float, samples: Sequence[Sequence[int]]) -> list[int]:
    """Remove the block of `share` of `model`'s decoder layers that matters least on `samples` (token id
    sequences); return the removed layers' original indices (ascending). The model is changed in place."""
    import torch

    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(
            f"dropped_layers={share!r}: {type(model).__name__} has no decoder `layers` to drop; "
            "set TrainConfig.dropped_layers=0 for this base"
        )
    count = layers_to_drop(share, len(layers))
    if not count:
        return []
    start = _least_changing_block(model, count, samples[:SAMPLE_ROWS])
    dropped = list(range(start, start + count))
    kept = [i for i in range(len(layers)) if i not in dropped]
    decoder.layers = torch.nn.ModuleList(layers[i] for i in kept)
    for index, layer in enumerate(decoder.layers):  # the key/value cache is addressed by a layer's position
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    config = model.config
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (sliding or full) follow their layers
        config.layer_types = [config.layer_types[i] for i in kept]
    return dropped


def _least_changing_block(model: Any, count: int, samples: Sequence[Sequence[int]]) -> int:
    """The first layer of the `count`-layer block (never the first or the last layer) whose input and output
    hidden states are closest in angle, averaged over every token of `samples`."""
    import torch

    total = len(model.get_decoder().layers)
    starts = range(1, total - count)  # hidden_states[i] enters layer i; the last entry is after the final norm
    distance = dict.fromkeys(starts, 0.0)
    with torch.no_grad():
        for ids in samples:
            states = model(input_ids=torch.tensor([list(ids)]), output_hidden_states=True).hidden_states
            for start in starts:
                distance[start] += _angular_distance(states[start][0], states[start + count][0])
    return min(starts, key=lambda start: distance[start])


def _angular_distance(before: Any, after: Any) -> float:
    """Mean over tokens of arccos(cosine similarity) / pi: 0 for an unchanged direction, 1 for the opposite one."""
    import torch

    cosine = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1).clamp(-1.0, 1.0)
    return float(torch.arccos(cosine).mean()) / math.pi
