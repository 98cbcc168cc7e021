"""protege's benchmarks: `python -m bench [--quick] [--only NAME] [--data FILE]` (see bench/__main__.py)."""
