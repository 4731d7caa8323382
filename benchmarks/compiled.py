"""Compiled and bf16 training steps side by side; writes ``benchmarks/RESULTS-compiled.md``.

Where people make training fast in 2026: ``torch.compile`` and bf16 autocast. Every row is one
configuration of ``worker.py`` (the same harness as ``bench.py``) with ``"compile"`` and
``"dtype"`` set: the article's class, this project's defaults and the peers, eager and
compiled, fp32 and bf16. Each configuration is timed in ``--passes`` fresh processes, the
passes through the plan alternating direction, and its time is the median of all its timed
calls; the warm-up call's time (compilation included) is reported apart. Activation memory
(RSS high-water mark of a second call above the RSS before it, glibc returning freed blocks at
once; the first call's peak and the Winograd filter cache it builds are reported apart) is
measured in another fresh process for the fp32 training rows.

    bash benchmarks/run.sh --compiled          # or: .venv/bin/python benchmarks/compiled.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

from bench import HERE, PEERS, VENV_PYTHON, machine, run_worker, uptime

TRAIN_SIZES = [(4, 160), (4, 224), (8, 256)]
VARIANTS = [(False, "fp32"), (True, "fp32"), (False, "bf16"), (True, "bf16")]
NAMES = {
    "article": "the article's VGGPerceptualLoss (relu1_2..relu4_3, L1, no resize)",
    "ours": "PerceptualLoss() defaults (same layers and criterion)",
    "piq": "piq.ContentLoss, same layers, L1",
    "ours-lpips": "perceptual_loss.LPIPS('vgg')",
    "lpips": "lpips.LPIPS(net='vgg')",
    "ours-dists": "perceptual_loss.DISTS(short_side=None)",
    "dists": "DISTS_pytorch.DISTS",
}


def plan(peers: bool) -> list[dict]:
    """Training steps at three sizes, metrics at B=4 224x224; every variant of each."""
    configs = []
    for batch, size in TRAIN_SIZES:
        impls = ["article", "ours"] + (["piq"] if (batch, size) == (4, 224) else [])
        for impl in impls:
            for compiled, dtype in VARIANTS:
                configs.append({"impl": impl, "mode": "train", "batch": batch, "size": size,
                                "style": False, "compile": compiled, "dtype": dtype})
    for impl in ("ours-lpips", "lpips", "ours-dists", "dists"):
        for compiled, dtype in VARIANTS:
            configs.append({"impl": impl, "mode": "metric", "batch": 4, "size": 224,
                            "style": False, "compile": compiled, "dtype": dtype})
    return [c for c in configs if peers or c["impl"] not in PEERS]


def label(cfg: dict) -> str:
    kind = "compiled" if cfg["compile"] else "eager"
    return (f"{cfg['impl']:>10} {cfg['mode']:>6} B={cfg['batch']} {cfg['size']} {kind:>8} "
            f"{cfg['dtype']}")


def key(cfg: dict) -> tuple:
    return (cfg["impl"], cfg["mode"], cfg["batch"], cfg["size"], cfg["compile"], cfg["dtype"])


def render(report: dict) -> str:
    rows = {key(r): r for r in report["results"]}
    lines = [
        "# Compiled and bf16 steps",
        "",
        f"Run {report['date']} in {report['duration_s'] / 60:.0f} min, "
        f"`benchmarks/compiled.py --passes {report['passes']}` "
        f"(CPU: {report['machine'].get('cpu', '?')}, {report['machine'].get('cpu_threads', '?')} "
        f"threads; torch "
        f"{report['machine'].get('torch', '?')}). Load before: {report['load_before']}; "
        f"after: {report['load_after']}.",
        "",
        "Time: median of every timed call over all passes (fresh processes, passes alternating "
        "direction); in brackets each pass's median. Warm-up: the first call, compilation "
        "included, in each pass: the first pass compiles cold (unless an earlier run left "
        "Inductor's on-disk cache), later passes reuse that cache. Memory: activation memory "
        "of an fp32 training call after the first (RSS above the level before it); the first "
        "call, which also builds what the module keeps (our Winograd filter cache), is "
        "reported below each table.",
        "",
    ]
    for batch, size in TRAIN_SIZES:
        lines += [f"## Training step, B={batch} {size}x{size}", "",
                  "| implementation | eager fp32 | compiled fp32 | eager bf16 | compiled bf16 "
                  "| warm-up compiled fp32 (passes) | memory eager / compiled fp32 |",
                  "|---|---|---|---|---|---|---|"]
        for impl in ("article", "ours", "piq"):
            cells = []
            for compiled, dtype in VARIANTS:
                row = rows.get((impl, "train", batch, size, compiled, dtype))
                cells.append(_time_cell(row))
            if all(c == "" for c in cells):
                continue
            warm = rows.get((impl, "train", batch, size, True, "fp32"))
            eager = rows.get((impl, "train", batch, size, False, "fp32"))
            memory = " / ".join(_mib(r) for r in (eager, warm))
            lines.append(f"| {NAMES[impl]} | {' | '.join(cells)} | {_warmup(warm)} | {memory} |")
        lines += [""] + _ratios(rows, batch, size) + [""]
    lines += ["## Metrics, B=4 224x224 (no gradient)", "",
              "| implementation | eager fp32 | compiled fp32 | eager bf16 | compiled bf16 "
              "| warm-up compiled fp32 (passes) |", "|---|---|---|---|---|---|"]
    for impl in ("ours-lpips", "lpips", "ours-dists", "dists"):
        cells = [_time_cell(rows.get((impl, "metric", 4, 224, c, d))) for c, d in VARIANTS]
        if all(c == "" for c in cells):
            continue
        warm = rows.get((impl, "metric", 4, 224, True, "fp32"))
        lines.append(f"| {NAMES[impl]} | {' | '.join(cells)} | {_warmup(warm)} |")
    errors = [f"- {label(r)}: {r['error']}" for r in report["results"] if r.get("error")]
    if errors:
        lines += ["", "## Errors", "", *errors]
    return "\n".join(lines) + "\n"


def _time_cell(row: dict | None) -> str:
    if not row or row.get("median_s") is None:
        return "" if not row else f"error: {row.get('error', '?')[:60]}"
    passes = ", ".join(f"{m:.2f}" for m in row["pass_medians"] if m is not None)
    return f"{row['median_s']:.2f} s ({passes})"


def _warmup(row: dict | None) -> str:
    """First pass (a cold compilation) / later passes (Inductor's on-disk cache)."""
    warmups = [w for w in (row or {}).get("warmups", []) if w is not None]
    return " / ".join(f"{w:.0f} s" for w in warmups)


def _mib(row: dict | None, field: str = "peak_bytes") -> str:
    if not row or not row.get(field):
        return "-" if field == "peak_bytes" else "0 MiB"
    return f"{row[field] / 2**20:.0f} MiB"


def _ratios(rows: dict, batch: int, size: int) -> list[str]:
    """The targets: ours against the compiled article (time) and the eager article (memory)."""
    def get(impl: str, compiled: bool, dtype: str = "fp32") -> dict | None:
        return rows.get((impl, "train", batch, size, compiled, dtype))

    article_compiled, article_eager = get("article", True), get("article", False)
    out = []
    for compiled in (False, True):
        ours = get("ours", compiled)
        if not (ours and article_compiled and ours.get("median_s")
                and article_compiled.get("median_s")):
            continue
        ratio = ours["median_s"] / article_compiled["median_s"]
        per_pass = ", ".join(f"{a / b:.2f}x" for a, b in zip(ours["pass_medians"],
                                                              article_compiled["pass_medians"],
                                                              strict=False) if a and b)
        memory = ""
        if ours.get("peak_bytes") and article_eager and article_eager.get("peak_bytes"):
            memory = f", memory {ours['peak_bytes'] / article_eager['peak_bytes']:.2f}x " \
                     "the eager article's"
            if ours.get("first_call_bytes") and article_eager.get("first_call_bytes"):
                cache = (f", of which the Winograd filter cache "
                         f"{_mib(ours, 'winograd_cache_bytes')}, kept for later calls"
                         if ours.get("winograd_cache_bytes") else "")
                memory += (f" (first call {_mib(ours, 'first_call_bytes')}{cache}; the "
                           f"article's first call {_mib(article_eager, 'first_call_bytes')})")
        kind = "torch.compile(ours)" if compiled else "ours eager (defaults)"
        out.append(f"- {kind}: time {ratio:.2f}x the compiled article's ({per_pass})"
                   f"{memory}; target: at most 0.85x and 0.4x.")
    for compiled in (False, True):
        ours, art = get("ours", compiled, "bf16"), get("article", compiled, "bf16")
        if ours and art and ours.get("median_s") and art.get("median_s"):
            kind = "compiled" if compiled else "eager"
            out.append(f"- bf16 autocast, {kind}: ours {ours['median_s'] / art['median_s']:.2f}x "
                       "the article's.")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="only these implementations (comma list)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", default=str(HERE / "RESULTS-compiled.md"))
    parser.add_argument("--render", default="", help="re-render a saved run's JSON and exit")
    args = parser.parse_args()
    if args.render:
        Path(args.out).write_text(render(json.loads(Path(args.render).read_text())))
        return
    peers = not args.no_peers and VENV_PYTHON.exists()
    configs = plan(peers)
    if args.only:
        configs = [c for c in configs if c["impl"] in set(args.only.split(","))]
    common = {"device": "cpu", "repeats": args.repeats}
    started, load_before = time.time(), uptime()
    results = [{**c, **common, "pass_medians": [], "times": []} for c in configs]
    for number in range(1, args.passes + 1):
        order = results if number % 2 else results[::-1]
        for i, row in enumerate(order, 1):
            cfg = {k: row[k] for k in ("impl", "mode", "batch", "size", "style", "compile",
                                       "dtype", *common)}
            timed = run_worker({**cfg, "phase": "time"}, args.timeout)
            row["pass_medians"].append(timed.get("median_s"))
            row["times"] += timed.get("times") or []
            row["median_s"] = statistics.median(row["times"]) if row["times"] else None
            row.setdefault("warmups", []).append(timed.get("warmup_s"))
            row["error"] = row.get("error") or timed.get("error")
            if number == 1 and cfg["mode"] == "train" and cfg["dtype"] == "fp32":
                memory = run_worker({**cfg, "phase": "memory"}, args.timeout)
                for field in ("peak_bytes", "first_call_bytes", "winograd_cache_bytes"):
                    row[field] = memory.get(field)
                row["error"] = row["error"] or memory.get("error")
            print(f"[pass {number}, {i}/{len(order)}] {label(cfg)}: "
                  f"{timed.get('median_s')} s (warm-up {timed.get('warmup_s')}) "
                  f"{row.get('error') or ''}", flush=True)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "duration_s": round(time.time() - started), "passes": args.passes,
              "load_before": load_before, "load_after": uptime(), "machine": machine(),
              "results": results}
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out_dir / f"compiled-{stamp}.json").write_text(json.dumps(report, indent=1))
    Path(args.out).write_text(render(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
