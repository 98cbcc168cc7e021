"""`protege demo`: the offline whole loop (run), its closing report (report) and the bundled order-extraction
workload it runs on (workload; also the benchmarks' and tests' example task)."""
