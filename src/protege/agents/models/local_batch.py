"""Several answers decoded together: one forward pass per step for the whole batch (used by `Engine`).

Each answer is a generator (`Engine._decode`) that yields what it needs run through the model — a `Feed` of
tokens, or a `Forget` of a draft's untaken tail — and is sent the logits back. `decode` steps every answer of a
batch at once. Rows are left-padded to the step's longest feed; padding and forgotten tokens are masked out of
attention and do not advance a row's positions, so each row attends to exactly what it would attend to alone.
On a CPU decoding is memory-bound: a step of eight rows costs about twice a step of one (BENCHMARKS §7).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor
    from transformers import DynamicCache

PAD = 0  # any token id: padded columns are masked out


@dataclass
class Feed:
    """Run `tokens` through the model; send back the logits after the last one, or after each of the last `keep`."""

    tokens: list[int]
    keep: int = 1


@dataclass
class Forget:
    """Drop the last `count` tokens of the previous feed from the row's context (a draft the model refused)."""

    count: int


Answer = Generator[Feed | Forget, Any, Any]  # first yields Feed(prompt); returns its result


class PrefixCache:
    """Keys/values of the latest prompt prefix, so the next batch re-runs only what differs from it (one task's
    calls share their instructions)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.kv: list[tuple[Tensor, Tensor]] = []

    def restore(self, cache: DynamicCache, ids: list[int]) -> int:
        """Load the cached keys/values of the longest common prefix of `ids` into `cache`; its length."""
        shared = common_length([self.ids, ids])
        if shared:
            for layer, (keys, values) in enumerate(self.kv):
                cache.update(keys[..., :shared, :], values[..., :shared, :], layer)
        return shared

    def save(self, ids: list[int], cache: DynamicCache) -> None:
        """Remember `cache` (one row, holding exactly `ids`); decoding appends by concatenation, so it stays valid."""
        self.ids = list(ids)
        self.kv = layer_key_values(cache)


class Batch:
    """The rows' shared key/value cache, their attention mask (None while no column is masked) and positions."""

    def __init__(self, model, prefix: PrefixCache):
        import torch

        self.torch, self.model, self.prefix = torch, model, prefix
        self.device = model.device
        self.cache = full_cache()
        self.mask: Tensor | None = None
        self.positions: list[int] = []
        self.reused: list[int] = []  # per prompt: tokens it did not run itself (cached, or shared with the batch)

    def prefill(self, prompts: list[list[int]]):
        """Logits [rows, 1, vocab] after each prompt. The prefix the prompts share is run once (or restored from
        the prefix cache) and copied to every row."""
        if len(prompts) == 1:  # the whole prompt is remembered: the next call shares at least its instructions
            shared = self.prefix.restore(self.cache, prompts[0][:-1])
            self.positions, self.reused = [shared], [shared]
            logits = self.step([prompts[0][shared:]])
            self.prefix.save(prompts[0], self.cache)
            return logits
        common = common_length([p[:-1] for p in prompts])
        shared = self.prefix.restore(self.cache, prompts[0][:common])
        self.positions = [shared]
        if common > shared:
            self.step([prompts[0][shared:common]])
        if common:
            self.prefix.save(prompts[0][:common], self.cache)
        self.reused = [common] * len(prompts)
        suffixes = [p[common:] for p in prompts]
        if self.device.type == "cpu":  # compute-bound here: padding would cost as much as real tokens
            return self._prefill_each(suffixes, common)
        self.cache.batch_repeat_interleave(len(prompts))
        self.positions *= len(prompts)
        return self.step(suffixes)

    def _prefill_each(self, suffixes: list[list[int]], common: int):
        """Run each row's own tokens alone after the shared prefix, then join the rows' keys/values into the
        batch's cache, left-padded (the padding masked out)."""
        torch = self.torch
        prefix = layer_key_values(self.cache) if common else []
        logits, rows = [], []
        for tokens in suffixes:
            cache = full_cache()
            for layer, (keys, values) in enumerate(prefix):
                cache.update(keys, values, layer)
            out = self.model(
                input_ids=torch.tensor([tokens], device=self.device),
                past_key_values=cache,
                position_ids=torch.arange(common, common + len(tokens), device=self.device)[None],
                use_cache=True,
                logits_to_keep=1,
            )
            logits.append(out.logits.float())
            rows.append([(keys[..., common:, :], values[..., common:, :]) for keys, values in layer_key_values(cache)])
        width = max(len(tokens) for tokens in suffixes)
        self.cache = full_cache()
        for layer in range(len(rows[0])):
            pad = torch.nn.functional.pad  # (0, 0, n, 0): n zero positions before the sequence dimension
            keys = torch.cat([pad(row[layer][0], (0, 0, width - row[layer][0].shape[2], 0)) for row in rows])
            values = torch.cat([pad(row[layer][1], (0, 0, width - row[layer][1].shape[2], 0)) for row in rows])
            if prefix:
                keys = torch.cat([prefix[layer][0].expand(len(rows), -1, -1, -1), keys], dim=2)
                values = torch.cat([prefix[layer][1].expand(len(rows), -1, -1, -1), values], dim=2)
            self.cache.update(keys, values, layer)
        self.mask = torch.tensor(
            [[1] * common + [0] * (width - len(tokens)) + [1] * len(tokens) for tokens in suffixes], device=self.device
        )
        self.positions = [common + len(tokens) for tokens in suffixes]
        return torch.cat(logits)

    def step(self, feeds: list[list[int]], keep: int = 1):
        """Run each row's tokens (at least one per row); logits [rows, keep, vocab] after each row's last `keep`."""
        torch = self.torch
        width = max(len(tokens) for tokens in feeds)
        pads = [width - len(tokens) for tokens in feeds]
        ids = [[PAD] * pad + tokens for pad, tokens in zip(pads, feeds)]
        positions = [
            [start] * pad + list(range(start, start + len(tokens)))
            for start, pad, tokens in zip(self.positions, pads, feeds)
        ]
        if any(pads):
            self._ensure_mask()
        if self.mask is not None:
            new = torch.tensor([[0] * pad + [1] * len(tokens) for pad, tokens in zip(pads, feeds)], device=self.device)
            self.mask = torch.cat([self.mask, new], dim=1)
        out = self.model(
            input_ids=torch.tensor(ids, device=self.device),
            attention_mask=self.mask,
            position_ids=torch.tensor(positions, device=self.device),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        self.positions = [start + len(tokens) for start, tokens in zip(self.positions, feeds)]
        return out.logits.float()

    def forget(self, row: int, count: int) -> None:
        """Mask out `row`'s last `count` tokens (its latest feed's tail); a lone row just crops the cache."""
        if count <= 0:
            return
        if self.mask is None and len(self.positions) == 1:
            self.cache.crop(-count)
        else:
            self._ensure_mask()[row, -count:] = 0
        self.positions[row] -= count

    def keep_rows(self, rows: list[int]) -> None:
        """Drop every row not in `rows` (finished answers)."""
        index = self.torch.tensor(rows, dtype=self.torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        if self.mask is not None:
            self.mask = self.mask[index]
        self.positions = [self.positions[row] for row in rows]

    def _ensure_mask(self) -> Tensor:
        if self.mask is None:
            columns = self.cache.get_seq_length()
            self.mask = self.torch.ones(len(self.positions), columns, dtype=self.torch.long, device=self.device)
        return self.mask


def full_cache() -> DynamicCache:
    """A cache that keeps every position of every layer. Built from a model's config, a sliding-window layer
    (Gemma 3: 512 tokens) would keep only its window, and then a refused draft could not be cropped and rows
    could not be sliced and joined by position; the model's own masks apply the window just the same."""
    from transformers import DynamicCache

    return DynamicCache()


def layer_key_values(cache: DynamicCache) -> list[tuple[Tensor, Tensor]]:
    """Each layer's (keys, values). Every layer of the models decoded here is an attention layer that has run."""
    from transformers.cache_utils import CacheLayerMixin

    out = []
    for index, layer in enumerate(cache.layers):
        if not isinstance(layer, CacheLayerMixin) or layer.keys is None or layer.values is None:
            raise TypeError(f"cache layer {index} ({type(layer).__name__}) holds no keys/values to reuse")
        out.append((layer.keys, layer.values))
    return out


def decode(batch: Batch, answers: list[Answer]) -> list[Any]:
    """Run the answers to completion together; each one's return value, or the exception it raised."""
    results: list[Any] = [None] * len(answers)
    prompts = [_first_feed(answer) for answer in answers]
    logits, keeps = batch.prefill(prompts), [1] * len(answers)
    active = list(range(len(answers)))
    while active:
        feeds: dict[int, Feed] = {}
        for row, index in enumerate(active):
            try:
                feeds[index] = _advance(answers[index], _row_logits(logits, row, keeps[row]), batch, row)
            except StopIteration as done:
                results[index] = done.value
            except Exception as exc:  # one answer's failure is that answer's, not the batch's
                results[index] = exc
        if len(feeds) < len(active):
            if feeds:
                batch.keep_rows([row for row, index in enumerate(active) if index in feeds])
            active = [index for index in active if index in feeds]
        if active:
            keeps = [feeds[index].keep for index in active]
            logits = batch.step([feeds[index].tokens for index in active], keep=max(keeps))
    return results


def _first_feed(answer: Answer) -> list[int]:
    feed = next(answer)
    if not isinstance(feed, Feed) or not feed.tokens:
        raise TypeError("an answer must first yield Feed(prompt tokens)")
    return feed.tokens


def _advance(answer: Answer, logits, batch: Batch, row: int) -> Feed:
    """Send `logits` to the answer; apply its `Forget`s; its next `Feed` (StopIteration when it is done)."""
    request = answer.send(logits)
    while isinstance(request, Forget):
        batch.forget(row, request.count)
        request = answer.send(None)
    return request


def _row_logits(logits, row: int, keep: int):
    """A row's logits: a vector when it asked for one position, else [keep, vocab]."""
    return logits[row, -1] if keep == 1 else logits[row, logits.shape[1] - keep :]


def common_length(sequences: list[list[int]]) -> int:
    """The length of the longest prefix every sequence shares."""
    shortest = min(sequences, key=len)
    for i, token in enumerate(shortest):
        if any(seq[i] != token for seq in sequences):
            return i
    return len(shortest)
