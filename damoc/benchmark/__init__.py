"""The selection-fidelity benchmark: does a cheap recipe pick the model that grid search picks, at what cost?

suite.py defines tasks, candidates and recipes; ground_truth.py runs (and caches) grid search; recipes.py runs
the cheap recipes; agreement.py and flops.py score them; report.py writes docs/benchmarks/select.md.
Entry point: benchmarks/bench_select.py (`make bench-select`, `make bench-select-quick`).
"""
