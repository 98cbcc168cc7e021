"""Build an SFT dataset from a task's traces (DESIGN §8, steps 1-5): select -> dedup -> redact -> split -> format.

1. Select: `store.dataset_traces(task)`, streamed oldest first: valid teacher/import traces (replay on request), none a
   reviewer labelled bad. Traces of an earlier contract version stay only if it had the same instructions and
   their output still validates against the current output model (a compatible schema change keeps them; an
   instructions edit or an incompatible output drops them).
2. Exact dedup by input hash. One trace per input survives: the best tier (teacher > import > replay: the
   replay model is the cheap one, so when it disagrees with the teacher the teacher wins), and within a tier
   the newest (it was made under the newest instructions and skill). Inputs keep the order they first appeared.
3. Near-dedup (MinHash LSH on the input's text, `neardup.py`): an input whose text is a near-copy of an earlier
   kept input *with the same output* is dropped: it teaches nothing new and over-weights one template. A
   near-copy with a *different* output is kept (it teaches which small difference matters), but it joins the
   earlier input's split group, so near-copies never straddle train and eval (no leakage through them).
4. Redact (`redact.py`) every input, output, transcript and reference that goes into a file.
5. Split by group hash (seeded): an input is in train or eval, never both, and stays there as traces are added.
6. Format with `chat_format` (the student's own prompt, compact JSON answer; tool rounds in the text protocol
   with the tools in the system prompt) as TRL rows, and as OpenAI fine-tuning rows (native tool calls).
Files are written into a temporary folder renamed into place when complete; then a `DatasetRow` records the
path, content hash, the counts at each stage and the parameters.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from protege.agents.models.base import FINAL_TOOL, Message, ToolSpec
from protege.agents.models.chat_format import compact_json, render_answer, student_messages, to_chat_dicts
from protege.distill import export
from protege.distill.neardup import DEFAULT_THRESHOLD, NUM_PERM, NearDupIndex, input_text, signatures
from protege.distill.redact import MODES, Mode, may_need_redaction, redact_json
from protege.distill.redact import redact as redact_text
from protege.errors import UserError
from protege.store.models import DatasetRow, new_id
from protege.store.store import DATASET_TIERS
from protege.tasks import input_hash

TIER_RANK = {"teacher": 3, "import": 2, "replay": 1}
_encode_str = json.encoder.encode_basestring  # a JSON string literal, ensure_ascii=False
PROGRESS_EVERY = 5000
COUNT_KEYS = (
    "stale_contract",
    "selected",
    "exact_dups",
    "exact_dup_conflicts",
    "near_dups",
    "near_dup_variants",
    "train",
    "eval",
    "tool_rows",
    "redacted_rows",
)
Progress = Callable[[str, int, "int | None"], None]


@dataclass
class BuiltDataset:
    """A built dataset: its store row, folder, counts at each stage and seconds per stage."""

    row: DatasetRow
    path: Path
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def train_path(self) -> Path:
        return self.path / export.TRAIN_FILE

    @property
    def eval_path(self) -> Path:
        return self.path / export.EVAL_FILE

    @property
    def openai_path(self) -> Path:
        return self.path / export.OPENAI_FILE


@dataclass
class _Item:
    """One distinct input, the trace that represents it, and its split group."""

    trace_id: str
    tier: str
    input: dict
    input_hash: str
    output: dict
    messages: list | None  # kept only for traces that used tools
    tools: list | None
    group: str = ""


def build_dataset(
    store: Any,
    task_name: str,
    *,
    instructions: str,
    out_dir: str | Path,
    redact: str = "secrets",
    eval_fraction: float = 0.2,
    seed: int = 0,
    near_dup_threshold: float | None = None,
    tools: list[ToolSpec | dict] | None = None,
    references: dict[str, dict] | None = None,
    progress: Progress | None = None,
    tiers: tuple[str, ...] = DATASET_TIERS,
    contract: tuple[int, type[BaseModel]] | None = None,
    stale_versions: Collection[int] = (),
) -> BuiltDataset:
    """Build train/eval files for `task_name` under `out_dir/<task>/<dataset id>/` and record a DatasetRow.

    `tools`: the task's tool specs, shown in the system prompt of agentic rows (default: each trace's own).
    `references`: known right answers by input hash (`protege.tasks.input_hash`), carried into eval rows.
    `progress(stage, done, total)` is called now and then (stages: select, near_dups, write).
    `contract`: the task's current (version, output model): traces of other versions whose output does not
    validate against it are left out (counted as `stale_contract`), and all traces of `stale_versions` (earlier
    versions with other instructions: their answers may follow them).
    `tiers`: which traces count as right answers. Default teacher and import: a replay answer is only known to
    be schema-valid, so training on it would teach the cheap model's mistakes; add "replay" once its shadow
    agreement with the teacher says it is right.
    """
    threshold = DEFAULT_THRESHOLD if near_dup_threshold is None else near_dup_threshold
    _check_args(redact, eval_fraction, threshold, instructions)
    report = progress or (lambda stage, done, total: None)
    counts: Counter[str] = Counter({k: 0 for k in COUNT_KEYS})
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    rows = store.dataset_traces(task_name, tiers=tiers)
    if contract:
        rows = current_contract(rows, contract, counts, frozenset(stale_versions))
    items = select_unique(rows, counts, report)
    if not items:
        raise UserError(
            f"task {task_name!r} has no validated {'/'.join(tiers)} traces to build a dataset "
            f"from; run the task first (or `protege import-traces`)"
        )
    timings["select_s"], clock = time.perf_counter() - clock, time.perf_counter()
    kept = drop_near_dups(items, threshold, counts, report)
    timings["near_dups_s"], clock = time.perf_counter() - clock, time.perf_counter()
    train, evals = split(kept, eval_fraction, seed)

    params = {
        "redact": redact,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "near_dup_threshold": threshold,
        "num_perm": NUM_PERM,
        "shingles": "word 3-grams",
        "tiers": sorted(tiers, key=lambda t: -TIER_RANK.get(t, 0)),  # the ones selected from, best first
        "exact_dup_keep": "best tier (teacher > import > replay), then newest",
        "instructions_sha256": hashlib.sha256(instructions.encode()).hexdigest(),
    }
    dataset_id = new_id()
    final = Path(out_dir) / task_name / dataset_id
    fmt = _Formatter(instructions, tools, cast(Mode, redact), references or {}, counts)  # checked by _check_args
    with export.atomic_dir(final) as tmp:
        hashes = _write_files(tmp, train, evals, fmt, counts, report)
        counts.update(train=len(train), eval=len(evals))
        digest = export.content_hash(hashes)
        timings["write_s"] = time.perf_counter() - clock
        export.write_manifest(
            tmp,
            {
                "id": dataset_id,
                "task": task_name,
                "content_hash": digest,
                "counts": dict(counts),
                "params": params,
                "timings": timings,
                "files": {n: {"sha256": h} for n, h in hashes.items()},
            },
        )
    row = DatasetRow(
        id=dataset_id, task_name=task_name, path=str(final), content_hash=digest, counts=dict(counts), params=params
    )
    try:
        row = store.add_dataset(row)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)  # no folder without its row
        raise
    return BuiltDataset(row=row, path=final, counts=dict(counts), timings=timings)


def _check_args(mode: str, eval_fraction: float, threshold: float, instructions: str) -> None:
    if mode not in MODES:
        raise UserError(f"redact={mode!r} is not one of {MODES}")
    if not 0 <= eval_fraction < 1:
        raise UserError(f"eval_fraction={eval_fraction!r} must be in [0, 1); e.g. 0.2 holds out a fifth")
    if not 0 < threshold <= 1:
        raise UserError(f"near_dup_threshold={threshold!r} must be in (0, 1]; {DEFAULT_THRESHOLD} is the default")
    if not instructions.strip():
        raise UserError("instructions are empty; pass the task's instructions (its docstring)")


# -- 1-2: select and exact dedup -------------------------------------------------------------------------------------


def current_contract(
    rows: Iterable[dict], contract: tuple[int, type[BaseModel]], counts: Counter[str], stale: frozenset[int]
) -> Iterator[dict]:
    """The rows of the current contract version, and those of earlier ones (not `stale`: other instructions)
    whose output still validates."""
    version, output_model = contract
    for row in rows:
        other = row.get("task_version", version)
        if other != version and (other in stale or not _validates(output_model, row["output"])):
            counts["stale_contract"] += 1
            continue
        yield row


def _validates(model: type[BaseModel], output: Any) -> bool:
    try:
        model.model_validate(output)
    except ValidationError:
        return False
    return True


def select_unique(rows: Iterable[dict], counts: Counter[str], report: Progress) -> list[_Item]:
    """One item per distinct input: best tier, then newest (rows arrive oldest first); first-seen order."""
    best: dict[str, _Item] = {}
    for n, row in enumerate(rows, 1):
        counts["selected"] += 1
        if n % PROGRESS_EVERY == 0:
            report("select", n, None)
        h = row.get("input_hash") or input_hash(row["input"] or {})
        old = best.get(h)
        if old is not None:
            counts["exact_dups"] += 1
            counts["exact_dup_conflicts"] += row["output"] != old.output  # two answers for one input
            if TIER_RANK.get(row["tier"], 0) < TIER_RANK.get(old.tier, 0):
                continue
        messages = row.get("messages")
        best[h] = _Item(
            trace_id=row["id"],
            tier=row["tier"],
            input=row["input"] or {},
            input_hash=h,
            output=row["output"] or {},
            messages=messages if _uses_tools(messages) else None,
            tools=row.get("tools"),
            group=h,
        )
    report("select", counts["selected"], counts["selected"])
    return list(best.values())


def _uses_tools(messages: list | None) -> bool:
    for m in messages or ():
        if isinstance(m, dict) and m.get("role") == "assistant":
            for call in m.get("tool_calls") or ():
                if call.get("name") != FINAL_TOOL:
                    return True
    return False


# -- 3: near-duplicates ----------------------------------------------------------------------------------------------


def drop_near_dups(items: list[_Item], threshold: float, counts: Counter[str], report: Progress) -> list[_Item]:
    """Drop near-copies (of an earlier kept input) with the same output; near-copies with another output stay,
    in the earlier input's split group."""
    sigs = signatures([input_text(it.input) for it in items])
    index = NearDupIndex(sigs, threshold)
    kept: list[_Item] = []
    for i, item in enumerate(items):
        match = index.nearest(i)
        if match is not None:
            twin = items[match[0]]
            if _canonical(twin.output) == _canonical(item.output):
                counts["near_dups"] += 1
                continue
            counts["near_dup_variants"] += 1
            item.group = twin.group
        index.add(i)
        kept.append(item)
        if (i + 1) % PROGRESS_EVERY == 0:
            report("near_dups", i + 1, len(items))
    report("near_dups", len(items), len(items))
    return kept


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# -- 5: split --------------------------------------------------------------------------------------------------------


def split_score(group: str, seed: int) -> float:
    """Where a split group falls in [0, 1): a stable function of the group and the seed only."""
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split(items: list[_Item], eval_fraction: float, seed: int) -> tuple[list[_Item], list[_Item]]:
    """Train/eval by group score. A tiny dataset that would leave either side empty moves one whole group."""
    scores = {g: split_score(g, seed) for g in {it.group for it in items}}
    eval_groups = {g for g, s in scores.items() if s < eval_fraction}
    if eval_fraction > 0 and len(scores) > 1:
        if not eval_groups:
            eval_groups = {min(scores, key=lambda g: (scores[g], g))}
        elif len(eval_groups) == len(scores):
            eval_groups.discard(max(scores, key=lambda g: (scores[g], g)))
    return [it for it in items if it.group not in eval_groups], [it for it in items if it.group in eval_groups]


# -- 4 + 6: redact and format ----------------------------------------------------------------------------------------


class _Formatter:
    """Turns an item into its TRL and OpenAI rows, redacted. Clean rows (the usual case) take a fast path."""

    def __init__(
        self,
        instructions: str,
        tools: list[ToolSpec | dict] | None,
        mode: Mode,
        references: dict[str, dict],
        counts: Counter[str],
    ):
        self.mode = mode
        self.counts = counts
        self.instructions = self._redact_text(instructions)
        self._chat_head = (
            '"messages":[{"role":"system","content":' + _encode_str(self.instructions) + '},{"role":"user","content":'
        )
        self.tools = self._specs(tools) if tools else None
        self.references = references

    def rows(self, item: _Item, *, with_eval_fields: bool) -> tuple[str, str]:
        """(TRL line, OpenAI line) for one item."""
        inp, out, messages, tools = item.input, item.output, item.messages, item.tools
        user = compact_json(inp)
        answer = render_answer(out)
        probe = user + "\n" + answer + (json.dumps(messages) + json.dumps(tools) if messages else "")
        reference = self.references.get(item.input_hash)
        if reference is not None:
            probe += json.dumps(reference)
        if may_need_redaction(probe, self.mode):
            (inp, out, messages, tools, reference), found = redact_json(
                [inp, out, messages, tools, reference], self.mode
            )
            self.counts.update({f"redacted_{k}": n for k, n in found.items()})
            self.counts["redacted_rows"] += bool(found)
            user, answer = compact_json(inp), render_answer(out)
        specs = self.tools or (self._specs(tools) if tools and _offers_tools(tools) else None)
        if messages or specs:  # a tool task: tools in the prompt even when this answer needed none (as served)
            return self._agentic_rows(item, inp, out, messages or [], specs or [], reference, with_eval_fields)
        # a plain task's row, assembled from pre-encoded parts: the system prompt is the same in every row and
        # re-encoding it each time was most of the cost. The OpenAI row is the same row.
        chat = self._chat_head + _encode_str(user) + '},{"role":"assistant","content":' + _encode_str(answer) + "}]"
        line = "{" + chat + "}"
        if not with_eval_fields:
            return line, line
        extra = export.dumps(
            {
                "input": inp,
                "output": out,
                "reference": reference,
                "trace_id": item.trace_id,
                "input_hash": item.input_hash,
            }
        )
        return "{" + chat + "," + extra[1:], line

    def _agentic_rows(
        self,
        item: _Item,
        inp: dict,
        out: dict,
        messages: list,
        specs: list[ToolSpec],
        reference: Any,
        with_eval_fields: bool,
    ) -> tuple[str, str]:
        self.counts["tool_rows"] += 1
        turns = tool_turns(messages) + [Message(role="assistant", content=render_answer(out))]
        trl_chat = to_chat_dicts(student_messages(self.instructions, inp, specs) + turns)
        openai = export.openai_row(student_messages(self.instructions, inp) + turns, specs)
        trl = (
            self._eval_line(trl_chat, item, inp, out, reference)
            if with_eval_fields
            else export.dumps({"messages": trl_chat})
        )
        return trl, export.dumps(openai)

    @staticmethod
    def _eval_line(chat: list, item: _Item, inp: dict, out: dict, reference: Any) -> str:
        return export.dumps(
            {
                "messages": chat,
                "input": inp,
                "output": out,
                "reference": reference,
                "trace_id": item.trace_id,
                "input_hash": item.input_hash,
            }
        )

    def _specs(self, tools: list[ToolSpec | dict]) -> list[ToolSpec]:
        raw = [t.model_dump() if isinstance(t, ToolSpec) else t for t in tools]
        clean, found = redact_json(raw, self.mode)
        self.counts.update({f"redacted_{k}": n for k, n in found.items()})
        return [ToolSpec.model_validate(t) for t in clean if t.get("name") != FINAL_TOOL]

    def _redact_text(self, text: str) -> str:
        clean, found = redact_text(text, self.mode)
        self.counts.update({f"redacted_{k}": n for k, n in found.items()})
        return clean


def _offers_tools(tools: list | None) -> bool:
    """Whether a trace offered real tools (not just the forced final-answer tool some providers get)."""
    return any((t.get("name") if isinstance(t, dict) else getattr(t, "name", None)) != FINAL_TOOL for t in tools or ())


def tool_turns(messages: list) -> list[Message]:
    """The tool rounds of a transcript: assistant tool calls and their results. Prompts, retry feedback, failed
    answers and the final answer are left out (the answer is rendered from the validated output)."""
    turns: list[Message] = []
    call_ids: set[str] = set()
    for raw in messages:
        m = Message.model_validate(raw)
        if m.role == "assistant":
            calls = [c for c in m.tool_calls if c.name != FINAL_TOOL]
            if calls:
                turns.append(Message(role="assistant", content=m.content, tool_calls=calls))
                call_ids.update(c.id for c in calls)
        elif m.role == "tool" and m.tool_call_id in call_ids:
            turns.append(Message(role="tool", content=m.content, tool_call_id=m.tool_call_id, name=m.name))
    return turns


def _write_files(
    folder: Path, train: list[_Item], evals: list[_Item], fmt: _Formatter, counts: Counter[str], report: Progress
) -> dict[str, str]:
    """Write the four data files; returns their sha256 by name.

    For a task without tools the OpenAI training file is byte-identical to train.jsonl, so it is only written
    once the first row differs (after copying what train.jsonl holds by then), and copied whole at the end otherwise.
    """
    writers = {
        name: export.JsonlWriter(folder / name)
        for name in (export.TRAIN_FILE, export.EVAL_FILE, export.OPENAI_EVAL_FILE)
    }
    total, done = len(train) + len(evals), 0
    try:
        for item in train:
            trl, openai = fmt.rows(item, with_eval_fields=False)
            if openai is not trl and export.OPENAI_FILE not in writers:
                writers[export.OPENAI_FILE] = export.JsonlWriter(folder / export.OPENAI_FILE)
                writers[export.OPENAI_FILE].copy_from(writers[export.TRAIN_FILE])
            writers[export.TRAIN_FILE].write(trl)
            if export.OPENAI_FILE in writers:
                writers[export.OPENAI_FILE].write(openai)
            done = _tick(done, total, report)
        for item in evals:
            trl, openai = fmt.rows(item, with_eval_fields=True)
            writers[export.EVAL_FILE].write(trl)
            writers[export.OPENAI_EVAL_FILE].write(openai)
            done = _tick(done, total, report)
    finally:
        for w in writers.values():
            w.close()
    hashes = {name: w.sha256 for name, w in writers.items()}
    if export.OPENAI_FILE not in writers:
        shutil.copyfile(folder / export.TRAIN_FILE, folder / export.OPENAI_FILE)  # in-kernel copy; no alias
        hashes[export.OPENAI_FILE] = hashes[export.TRAIN_FILE]
    report("write", total, total)
    return hashes


def _tick(done: int, total: int, report: Progress) -> int:
    done += 1
    if done % PROGRESS_EVERY == 0:
        report("write", done, total)
    return done


__all__ = ["BuiltDataset", "build_dataset", "drop_near_dups", "select_unique", "split", "split_score", "tool_turns"]
