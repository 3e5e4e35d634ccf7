"""Benchmark: our selection cores vs apricot-select and submodlib-py on the same inputs and objectives.

    make bench-filter                      # full run, writes docs/benchmarks/filter.md
    python benchmarks/bench_filter.py --n 6000 --mid-n 3000 --small-n 1000 --out -   # quick run

Inputs: `n` random 384-d unit vectors (float32, numpy default_rng(seed)); every method selects
round(ratio * n). Each (method, implementation, n) runs in a fresh subprocess with one thread
(OMP/OpenBLAS/MKL/NUMBA threads = 1): ours in this interpreter (the project venv), the reference
libraries in --ref-python (a separate venv with apricot-select + submodlib-py, so the project's pinned
dependencies are untouched). Time covers everything a method needs from the embeddings on: the references
get a dense cosine kernel K = X X^T (float64) as a precomputed similarity, whose construction is timed.
Memory is the peak RSS of the worker during the call minus its RSS just before it (VmHWM reset through
/proc/self/clear_refs), so it includes native (C++/numba) allocations.
Kernel: the shifted cosine s_ij = (1 + cos_ij) / 2 in [0, 1] (apricot rejects negative similarities; with
s >= 0 GraphCut with lambda < 0.5 and facility location are monotone submodular). Ours gets it exactly as
dot products of the unit rows [x, 1] / sqrt(2); k-center works on x itself.
Objectives are all evaluated here with one implementation on the returned indices:
  graphcut: f(X) = sum_{i in V, j in X} s_ij - lambda * sum_{i, j in X} s_ij   (apricot: alpha = 1 / lambda)
  facility location: f(X) = sum_i max(0, max_{j in X} s_ij)
  k-center: covering radius max_i min_{c in X} ||x_i - x_c|| (lower is better); the submodlib reference
            is DisparityMin greedy (farthest point in 1 - cosine, the same order for unit vectors).
Dense references run only at the smaller sizes, where an n x n kernel fits; ratios are against ours at
the same n.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# --- worker side (runs in either venv; imports only what its implementation needs) -------------------

def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def shifted(x):
    """[x, 1] / sqrt(2): unit rows whose dot products are (1 + cos) / 2, the shifted cosine kernel in [0, 1]."""
    import numpy as np

    return (np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)]) / np.sqrt(2)).astype(x.dtype)


def _run_ours(method: str, x, k: int, lam: float) -> list[int]:
    if method != "kcenter":
        x = shifted(x)
    if method == "graphcut":
        from damoc.filtering.graphcut import graphcut_greedy
        return graphcut_greedy(x, k, lam)
    if method == "kcenter":
        from damoc.filtering.algorithms.kcenter import kcenter_greedy
        return kcenter_greedy(x, k, seed=0)
    if method == "facility_location":
        from damoc.filtering.algorithms.facility_location import facility_location_greedy
        return facility_location_greedy(x, k, normalize=False)
    raise ValueError(method)


def _run_apricot(method: str, x, k: int, lam: float) -> list[int]:
    import numpy as np
    from apricot import FacilityLocationSelection, GraphCutSelection

    kernel = np.dot(x.astype(np.float64), x.astype(np.float64).T)
    kernel += 1.0
    kernel *= 0.5  # shifted cosine (1 + cos) / 2 >= 0; apricot rejects negative similarities
    if method == "graphcut":
        sel = GraphCutSelection(k, metric="precomputed", alpha=1.0 / lam, optimizer="lazy", verbose=False)
    elif method == "facility_location":
        sel = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy", verbose=False)
    else:
        raise ValueError(method)
    sel.fit(kernel)
    return [int(i) for i in sel.ranking]


def _run_submodlib(method: str, x, k: int, lam: float) -> list[int]:
    import numpy as np
    from submodlib import DisparityMinFunction, FacilityLocationFunction, GraphCutFunction

    n = x.shape[0]
    kernel = np.dot(x.astype(np.float64), x.astype(np.float64).T)
    kernel += 1.0
    kernel *= 0.5  # shifted cosine, as for the others (DisparityMin then uses 1 - s = (1 - cos) / 2)
    if method == "graphcut":
        fn = GraphCutFunction(n=n, mode="dense", lambdaVal=lam, ggsijs=kernel, separate_rep=False)
        opt = "LazyGreedy"
    elif method == "facility_location":
        fn = FacilityLocationFunction(n=n, mode="dense", sijs=kernel, separate_rep=False)
        opt = "LazyGreedy"
    elif method == "kcenter":
        fn = DisparityMinFunction(n=n, mode="dense", sijs=kernel)
        opt = "NaiveGreedy"  # DisparityMin is not submodular: lazy bounds do not hold
    else:
        raise ValueError(method)
    out = fn.maximize(budget=k, optimizer=opt, stopIfZeroGain=False, stopIfNegativeGain=False,
                      verbose=False, show_progress=False)
    return [int(i) for i, _ in out]


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    impl, method = args.worker.split(":")
    run = {"ours": _run_ours, "apricot": _run_apricot, "submodlib": _run_submodlib}[impl]
    x = np.load(args.data)
    tiny = x[:64].copy()
    run(method, tiny, 6, args.lam)  # warm-up: imports, numba JIT, BLAS init are not timed
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        hwm = "VmHWM"
    except OSError:
        hwm = None
    rss0 = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    picks = run(method, x, args.k, args.lam)
    seconds = time.perf_counter() - t0
    peak = _rss_kb(hwm) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(args.result + ".npy", np.asarray(picks, dtype=np.int64))
    Path(args.result).write_text(json.dumps({"seconds": seconds, "peak_mb": max(0, peak - rss0) / 1024,
                                             "memory": "VmHWM-delta" if hwm else "ru_maxrss-delta"}))


# --- driver side (project venv) ----------------------------------------------------------------------

def make_data(n: int, d: int, seed: int, path: Path):
    import numpy as np

    if not path.exists():
        x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(path, x)
    return np.load(path)


def objective(method: str, x, picks, lam: float) -> float:
    import numpy as np

    from damoc.filtering.algorithms import covering_radius, facility_location_value

    if method != "kcenter":
        x = shifted(x)
    if method == "graphcut":  # O(n*d): sum_{j in X} e_j.(sum_i e_i) - lambda * |sum_{j in X} e_j|^2
        x64 = x.astype(np.float64)
        sel = x64[picks].sum(axis=0)
        return float(sel @ x64.sum(axis=0) - lam * sel @ sel)
    if method == "facility_location":
        return facility_location_value(x.astype(np.float64), picks, normalize=False)
    return covering_radius(x.astype(np.float64), picks)


def run_job(impl: str, method: str, data: Path, k: int, lam: float, python: str, workdir: Path,
            timeout: float) -> dict:
    result = workdir / f"{impl}-{method}-{data.stem}.json"
    env = dict(os.environ, **{v: "1" for v in THREAD_VARS}, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    cmd = [python, str(Path(__file__).resolve()), "--worker", f"{impl}:{method}", "--data", str(data),
           "--k", str(k), "--lam", str(lam), "--result", str(result)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60000, help="full size: ours only (dense references do not fit)")
    p.add_argument("--mid-n", type=int, default=20000, help="size for apricot GraphCut vs ours (0: skip)")
    p.add_argument("--small-n", type=int, default=5000, help="size for every method and reference (0: skip)")
    p.add_argument("--fl-max-n", type=int, default=10000,
                   help="largest n at which our exact facility location runs (its cost grows ~n^3 at fixed ratio)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=0.4, help="GraphCut lambda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-python", default=str(REPO / ".cache/bench-venv/bin/python"))
    p.add_argument("--timeout", type=float, default=600, help="per job, seconds")
    p.add_argument("--out", default=str(REPO / "docs/benchmarks/filter.md"), help="Markdown file, or - for stdout")
    p.add_argument("--worker"), p.add_argument("--data"), p.add_argument("--k", type=int), p.add_argument("--result")
    args = p.parse_args()
    if args.worker:
        return worker(args)

    workdir = REPO / ".cache/bench-filter"
    workdir.mkdir(parents=True, exist_ok=True)
    have_refs = Path(args.ref_python).exists()
    if not have_refs:
        print(f"note: {args.ref_python} not found; references skipped (make bench-filter builds it)", file=sys.stderr)

    jobs: list[tuple[int, str, str]] = []  # (n, method, impl)
    for n in (args.n, args.mid_n, args.small_n):
        if n <= 0 or any(j[0] == n for j in jobs):
            continue
        for method in ("graphcut", "kcenter", "facility_location"):
            if method == "facility_location" and n > args.fl_max_n:
                continue
            jobs.append((n, method, "ours"))
            if not have_refs:
                continue
            if n == args.mid_n and n != args.small_n and method == "graphcut":
                jobs.append((n, method, "apricot"))
            if n == args.small_n:
                if method != "kcenter":
                    jobs.append((n, method, "apricot"))
                jobs.append((n, method, "submodlib"))

    rows, ours_at = [], {}
    for n, method, impl in jobs:
        data = workdir / f"x_{n}_{args.dim}_{args.seed}.npy"
        x = make_data(n, args.dim, args.seed, data)
        k = max(1, round(args.ratio * n))
        python = sys.executable if impl == "ours" else args.ref_python
        print(f"[{time.strftime('%H:%M:%S')}] n={n} k={k} {method} {impl} ...", file=sys.stderr, flush=True)
        res = run_job(impl, method, data, k, args.lam, python, workdir, args.timeout)
        if "error" not in res:
            import numpy as np

            picks = np.load(str(workdir / f"{impl}-{method}-{data.stem}.json") + ".npy").tolist()
            if len(picks) != k or len(set(picks)) != k:
                res = {"error": f"returned {len(picks)} picks ({len(set(picks))} distinct), expected {k}"}
            else:
                res["objective"] = objective(method, x, picks, args.lam)
        print(f"    {res}", file=sys.stderr, flush=True)
        if impl == "ours":
            ours_at[(n, method)] = res
        rows.append((n, k, method, impl, res))

    lines = ["| n | k | method | implementation | time (s) | peak mem Δ (MB) | objective | time / ours | objective / ours |",
             "|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for n, k, method, impl, res in rows:
        label = {"graphcut": f"GraphCut λ={args.lam}", "kcenter": "k-center (covering radius ↓)",
                 "facility_location": "facility location"}[method]
        name = {"ours": "damoc", "apricot": "apricot-select (dense lazy)",
                "submodlib": "submodlib-py (dense " + ("naive, DisparityMin" if method == "kcenter" else "lazy") + ")"}[impl]
        if "error" in res:
            lines.append(f"| {n} | {k} | {label} | {name} | — | — | {res['error']} | — | — |")
            continue
        ref = ours_at.get((n, method), {})
        t_ratio = f"{res['seconds'] / ref['seconds']:.2f}" if impl != "ours" and "seconds" in ref else ""
        o_ratio = (f"{res['objective'] / ref['objective']:.4f}"
                   if impl != "ours" and ref.get("objective") else "")
        lines.append(f"| {n} | {k} | {label} | {name} | {res['seconds']:.2f} | {res['peak_mb']:.0f} | "
                     f"{res['objective']:.6g} | {t_ratio} | {o_ratio} |")
    cmd = "python benchmarks/bench_filter.py " + " ".join(a for a in sys.argv[1:])
    header = [
        "# Stage-1 selection benchmark: damoc vs apricot-select and submodlib-py",
        "",
        f"Command: `{cmd.strip()}` (via `make bench-filter`), {_dt.date.today().isoformat()}, "
        f"{platform.machine()} {os.cpu_count()} CPUs (shared), one thread per run.",
        "",
        f"Data: random {args.dim}-d unit vectors (float32, seed {args.seed}); select {args.ratio:.0%}. "
        "Time and memory are measured in a fresh subprocess per row, after a warm-up on 64 points "
        "(imports, numba JIT). Kernel: shifted cosine s = (1 + cos) / 2 ∈ [0, 1] for GraphCut and facility "
        "location (apricot rejects negative similarities; ours gets it exactly as dot products of the unit "
        "rows [x, 1]/√2); k-center uses Euclidean distance on x. Memory = peak RSS during the call minus RSS just before it (VmHWM), so "
        "native allocations count. The references get a dense float64 cosine kernel (timed, counted); they "
        "only run at the smaller n, where n×n fits in memory. All objectives are recomputed here from the "
        "returned indices by one implementation; ratios are against damoc at the same n (objective ratio "
        "> 1 is better for GraphCut and facility location; for k-center the objective is the covering "
        "radius, lower is better).",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(text)


if __name__ == "__main__":
    main()
