"""The HTML report at scale: build time and file size for many explored expert trajectories
(hand-built run directories, tests/report_fakes.py), with the Figure 1 observations clipped to
300 characters (the default) against unclipped, measured in the same run.

    python benchmarks/report.py [--quick] [--json]

Full: 3 seeds x 1,500 training tasks x 3 EEF iterations (about half the expert trajectories
fail, so ~6,700 Figure 1 entries), observations of ~2 kB like WebShop's result pages.
Quick: 3 seeds x 150 tasks x 2 iterations.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from _util import emit, median, parser, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def page_load_ms(path: Path, repeats: int) -> float | None:
    """Median time from navigation start to the end of the load event (the Figure 1 script has
    parsed its data and rendered the first page) in headless Chromium; None without it."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not (chromium and driver):
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    prof = tempfile.mkdtemp(prefix="eef-report-chrome-")
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              f"--user-data-dir={prof}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    try:
        d.set_page_load_timeout(300)
        out = []
        for _ in range(repeats):
            d.get(path.resolve().as_uri())
            out.append(d.execute_script("var t = performance.timing; "
                                        "return t.loadEventEnd - t.navigationStart;"))
        return median(out)
    finally:
        d.quit()
        shutil.rmtree(prof, ignore_errors=True)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=0, help="builds per setting (default 3 quick, 1 full)")
    args = p.parse_args()
    import report_fakes
    from report_fakes import write_fake_run

    from eef.report.html import ReportConfig, build_report
    from eef.report.rundata import load_runs
    n_tasks, iters = (150, 2) if args.quick else (1500, 3)
    repeats = args.repeats or (3 if args.quick else 1)
    report_fakes.OBS_WORDS[0] = 160  # "lorem ipsum " x ~80 on average: ~1 kB, up to ~2 kB
    tmp = Path(tempfile.mkdtemp(prefix="eef-report-bench-"))
    try:
        train = [f"webshop/B0BENCH{i:05d}/0" for i in range(n_tasks)]
        test = [f"webshop/B0TEST{i:04d}/0" for i in range(100)]
        t0 = time.perf_counter()
        for s in range(3):
            write_fake_run(tmp / "cmp" / f"seed{s}", train, test, seed=s, iterations=iters, M=5, S=1)
        gen_s = time.perf_counter() - t0
        in_mb = sum(f.stat().st_size for f in (tmp / "cmp").rglob("*") if f.is_file()) / 1e6
        entries = sum(len(r.label_records(rel)) for r in load_runs([tmp / "cmp"])
                      for _m, _i, rel in r.label_files())
        rows, figs = [], {"entries": entries, "run_dirs_mb": round(in_mb, 1)}
        for name, chars in (("clipped 300", 300), ("unclipped", 0)):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = build_report([tmp / "cmp"], tmp / f"r-{chars}.html",
                                   ReportConfig(obs_chars=chars, progress=False))
                times.append(time.perf_counter() - t0)
            mb = out.stat().st_size / 1e6
            key = "clipped" if chars else "unclipped"
            load = page_load_ms(out, repeats)
            rows.append([name, entries, f"{in_mb:.1f}", f"{median(times):.2f}", f"{mb:.1f}",
                         "–" if load is None else f"{load:.0f}"])
            figs[f"{key}_build_s"] = round(median(times), 3)
            figs[f"{key}_mb"] = round(mb, 2)
            figs[f"{key}_page_load_ms"] = None if load is None else round(load)
        figs["size_ratio_unclipped_over_clipped"] = round(figs["unclipped_mb"] / figs["clipped_mb"], 2)
        figs["time_ratio_unclipped_over_clipped"] = round(
            figs["unclipped_build_s"] / figs["clipped_build_s"], 2)
        table(f"eef report: {entries} Figure 1 entries, 3 run dirs (generated in {gen_s:.0f} s)",
              ["observations", "entries", "run dirs MB", "build s (median)", "report MB",
               "page load ms (median)"], rows)
        print(f"unclipped / clipped: size x{figs['size_ratio_unclipped_over_clipped']}, "
              f"build time x{figs['time_ratio_unclipped_over_clipped']}")
        emit(figs, args.json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
