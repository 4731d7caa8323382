"""Turn a benchmark report (``bench.py``) into ``RESULTS.md``.

The hand-written analysis between ``<!-- notes:start -->`` and ``<!-- notes:end -->`` of an
existing RESULTS.md is kept; everything else is regenerated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"
TARGETS = {"train_time": 0.85, "train_memory": 0.40, "metric_time": 0.80}


def _key(row: dict) -> tuple:
    return (row["mode"], row["batch"], row["size"], row["style"])


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def _verdict(ratio: float | None, target: float, per_pass: list[float] | None = None) -> str:
    if ratio is None:
        return "not measured"
    passes = ""
    if per_pass and len(per_pass) > 1:
        passes = "; passes " + ", ".join(f"{r:.2f}x" for r in per_pass)
    if ratio <= target:
        return f"**met** ({ratio:.2f}x <= {target:.2f}x{passes})"
    return (f"**missed** ({ratio:.2f}x > {target:.2f}x, by {(ratio / target - 1) * 100:.0f}%"
            f"{passes})")


def _pass_ratios(row: dict | None, references: list[dict]) -> list[float]:
    """``row``'s time over the fastest reference's, pass by pass (same pass, same load)."""
    if not row or not references:
        return []
    ratios = []
    for number, mine in enumerate(row.get("pass_medians") or []):
        theirs = [r["pass_medians"][number] for r in references
                  if len(r.get("pass_medians") or []) > number and r["pass_medians"][number]]
        if mine and theirs:
            ratios.append(mine / min(theirs))
    return ratios


def table(report: dict) -> list[str]:
    rows = report["results"]
    best = report["calibration"].get("best")
    article = {_key(r): r for r in rows if r["impl"] == "article"}
    lines = ["| mode | batch x size | style | implementation | time (s, median of all calls) "
             "| x article | peak memory (MiB) | x article | GFLOP | x article | of conv peak |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["mode"], r["size"], r["style"], r["impl"])):
        ref = article.get(_key(r), {})
        mem = r.get("peak_bytes")
        flops = r.get("flops")
        util = (flops / r["median_s"] / best) if (flops and r.get("median_s") and best) else None
        lines.append(
            f"| {r['mode']} | {r['batch']} x {r['size']}^2 | {'yes' if r['style'] else 'no'} "
            f"| {r['impl']} | {_fmt(r.get('median_s'), '.3f')} "
            f"| {_fmt(_ratio(r.get('median_s'), ref.get('median_s')), '.2f')} "
            f"| {_fmt(mem / 2**20 if mem is not None else None, '.0f')} "
            f"| {_fmt(_ratio(mem, ref.get('peak_bytes')), '.2f')} "
            f"| {_fmt(flops / 1e9 if flops else None, '.1f')} "
            f"| {_fmt(_ratio(flops, ref.get('flops')), '.2f')} "
            f"| {_fmt(util * 100 if util else None, '.0f')}{'%' if util else ''} |"
            + (f" error: {r['error']}" if r.get("error") else ""))
    return lines


def targets(report: dict) -> list[str]:
    rows = report["results"]
    by = {(r["impl"],) + _key(r): r for r in rows}
    present = {r["impl"] for r in rows}
    columns = [c for c in ("ours", "ours-nchw") if c in present]
    lines = ["| target | configuration | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for (mode, batch, size, style) in sorted({_key(r) for r in rows}):
        ref = by.get(("article", mode, batch, size, style))
        label = f"B={batch} {size}^2, {'content + style' if style else 'content'}"
        if mode == "train" and ref:
            for what, field, target in (("training step time", "median_s", "train_time"),
                                        ("training activation memory", "peak_bytes",
                                         "train_memory"),
                                        ("training FLOPs (<= 1.00x)", "flops", None)):
                cells = []
                for impl in columns:
                    row = by.get((impl, mode, batch, size, style))
                    ratio = _ratio(row.get(field), ref.get(field)) if row else None
                    per_pass = _pass_ratios(row, [ref]) if field == "median_s" else None
                    cells.append(_verdict(ratio, TARGETS[target] if target else 1.0, per_pass))
                lines.append(f"| {what} vs article | {label} | " + " | ".join(cells) + " |")
        if mode == "metric":
            for ours, peers in (("ours", ("piq",)), ("ours-lpips", ("lpips", "piq-lpips")),
                                ("ours-dists", ("dists", "piq-dists"))):
                times = [by[(p, mode, batch, size, style)]["median_s"] for p in peers
                         if (p, mode, batch, size, style) in by
                         and by[(p, mode, batch, size, style)].get("median_s")]
                if not times:
                    continue
                row = by.get((ours, mode, batch, size, style))
                references = [by[(p, mode, batch, size, style)] for p in peers
                              if (p, mode, batch, size, style) in by]
                cells = [_verdict(_ratio(row.get("median_s") if row else None, min(times)),
                                  TARGETS["metric_time"], _pass_ratios(row, references))]
                cells += [""] * (len(columns) - len(cells))
                lines.append(f"| metric time ({ours}) vs {'/'.join(peers)} "
                             f"| {label} | " + " | ".join(cells[:len(columns)]) + " |")
    return lines


def write_results(report: dict, path: Path) -> None:
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_START in old and NOTES_END in old:
            notes = old[old.index(NOTES_START) + len(NOTES_START):old.index(NOTES_END)]
    m = report["machine"]
    cal = report["calibration"].get("conv3x3_flops_per_s", {})
    s = report["settings"]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bash benchmarks/run.sh` (`benchmarks/bench.py`); the analysis between the",
        "notes markers is written by hand and kept across runs.",
        "",
        f"- Date: {report['date']}, duration {report['duration_s']} s.",
        f"- Machine: {m.get('cpu', 'n/a')}, {m.get('cpu_threads')} torch threads, "
        f"{m.get('memory_gib', 'n/a')} GiB RAM; {m.get('platform')}.",
        f"- Load average (1, 5, 15 min) before: {report['load_before']}, after: "
        f"{report['load_after']} (the machine is shared; see the notes).",
        f"- Versions: Python {m.get('python')}, torch {m.get('torch')}"
        + "".join(f", {k} {m[k]}" for k in ("torchvision", "lpips", "piq", "DISTS_pytorch")
                  if k in m) + ".",
        f"- Device {s['device']}, {s['dtype']}, median of {s['repeats']} timed calls after one "
        f"warm-up call, in each of {s.get('passes', 1)} fresh process(es) per configuration.",
        "- Measured 3x3-convolution forward throughput (VGG16 layer shapes, batch 4): "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in cal.items()) + ".",
        "",
        "## Method",
        "",
        "- training: `loss(x, y).backward()` with `x.requires_grad_()`; metric: `loss(x, y)` "
        "under `torch.no_grad()`. Inputs uniform in [0, 1], no resize, layers relu1_2, relu2_2, "
        "relu3_3, relu4_3 of VGG16, L1; 'style' adds Gram terms on the same layers.",
        "- Every configuration runs in fresh processes: memory + FLOPs in one, time (one "
        "warm-up call, then the timed calls) in one per pass. On CPU the plan is timed in "
        "passes that alternate direction (the second pass backwards), and a configuration's "
        "time is the median of all its timed calls, so one busy minute on the shared machine "
        "or one lucky process does not decide a ratio. The targets give the ratio of each "
        "pass too (both sides timed in the same pass).",
        "- Peak memory: RSS high-water mark of a call after the first minus the RSS right "
        "before it (`/proc/self/clear_refs` <- 5, `VmHWM`; the first call also builds what the "
        "module keeps, e.g. Winograd's filter cache), in a process where glibc serves "
        "blocks of 64 KiB or more with mmap and returns freed memory at once "
        "(`MALLOC_MMAP_THRESHOLD_=65536`), so RSS follows live tensors; the model is in the "
        "baseline. On CUDA `torch.cuda.max_memory_allocated` minus the allocation before the "
        "call.",
        "- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one call (convolutions, "
        "their backward, matrix products); 'of conv peak' is FLOPs / time / the best measured "
        "convolution throughput above.",
        "- All models use random weights (no downloads): lpips, piq and DISTS_pytorch get "
        "`torchvision.models.vgg16(weights=None)`; the time of a forward/backward does not "
        "depend on the weight values.",
        "",
        "## Targets (ratios in the same run)",
        "",
        *targets(report),
        "",
        "## All measurements",
        "",
        *table(report),
        "",
        "Implementations:",
        "",
    ]
    from bench import DESCRIPTIONS

    seen = {r["impl"] for r in report["results"]}
    lines += [f"- `{k}`: {v}" for k, v in DESCRIPTIONS.items() if k in seen]
    lines += ["", "## Notes", "", NOTES_START + (notes or "\n\n") + NOTES_END, ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    # Re-render from a saved JSON: python benchmarks/report.py benchmarks/out/results-*.json
    write_results(json.loads(Path(sys.argv[1]).read_text()),
                  Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent /
                  "RESULTS.md")
