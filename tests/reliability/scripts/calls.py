"""Worker: M calls of the triage task from T threads against one store; reports every outcome as JSON.

    python calls.py URL CALLS THREADS OUT_JSON GO_FILE [--then URL ...] [--capped N --budget USD] [--tag NAME]

With --capped, N more calls go to "triage_capped", the same task under Policy(teacher_budget_usd=USD), interleaved
with the others (on the first store only).

Writes OUT_JSON + ".ready" once the app is open and registered, then waits for GO_FILE (so every worker starts
calling at the same moment), then calls, then writes OUT_JSON. Each outcome is {"run_id", "trace_ids", "tier"} or
{"error", "message"}. Each --then store is a further phase of the same process (one start-up for several stores),
with its files named by `common.phase_file` (OUT_JSON.1, GO_FILE.1, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from pathlib import Path

from common import OPUS, oracle, phase_file, register_triage

from protege import Policy, Protege
from protege.agents import FunctionModel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("calls", type=int)
    p.add_argument("threads", type=int)
    p.add_argument("out")
    p.add_argument("go")
    p.add_argument("--then", action="append", default=[])
    p.add_argument("--capped", type=int, default=0)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--tag", default="w")
    a = p.parse_args()
    for k, url in enumerate([a.url, *a.then]):
        phase(a, k, url, capped=a.capped if k == 0 else 0)


def phase(a: argparse.Namespace, k: int, url: str, capped: int) -> None:
    out, go = phase_file(a.out, k), phase_file(a.go, k)
    app = Protege(db=url, teacher=FunctionModel(oracle, price_as=OPUS), project_dir=Path(out).parent / f"{a.tag}-{k}")
    register_triage(app)
    app.task(name="triage_capped", policy=Policy(teacher_budget_usd=a.budget))(app.tasks["triage"].spec.fn)
    Path(out + ".ready").touch()
    while not Path(go).exists():
        time.sleep(0.01)

    outcomes: list[dict] = []
    lock = threading.Lock()
    started = time.perf_counter()

    plan = ["triage"] * a.calls + ["triage_capped"] * capped
    random.Random(a.tag).shuffle(plan)  # interleave the two tasks

    def work(thread: int) -> None:
        for i in range(thread, len(plan), a.threads):
            task = plan[i]
            subject = f"{a.tag}-{i} refund" if i % 2 else f"{a.tag}-{i} crash"
            try:
                res = app.run(task, {"ticket": {"subject": subject}})
                outcome = {
                    "task": task,
                    "run_id": res.run_id,
                    "trace_ids": res.trace_ids,
                    "tier": res.tier,
                    "subject": subject,
                    "output": res.output.model_dump(),
                }
            except Exception as exc:  # reported, and judged by the test
                outcome = {
                    "task": task,
                    "error": type(exc).__name__,
                    "message": str(exc)[:500],
                    "subject": subject,
                    "run_id": getattr(exc, "run_id", None),
                }
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    app.close()
    Path(out + ".tmp").write_text(json.dumps({"outcomes": outcomes, "wall_s": wall}))
    os.replace(out + ".tmp", out)  # the parent waits for this file: it appears whole


if __name__ == "__main__":
    main()
