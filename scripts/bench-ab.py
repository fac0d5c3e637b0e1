#!/usr/bin/env python3
"""A/B comparison of two braid builds with the bench engine's children.

`braid bench` runs every library from one build; to measure a change, this runs the
same child (`BIN bench-child --lib LIB ...`, a fresh process each time) from several
builds, interleaved: for each repeat, for each build, for each library, one run. Raw
TCP and the Go peers (`go-smux1`, `go-smux2`, `go-yamux`, from `braid bench`'s
`<target>/go/braid-bench-go`, or $BRAID_BENCH_GO) run once per repeat, with the first
build's children. Prints medians, the ratio to TCP's median of the same invocation, and
every run's figure so that the noise shows.

    scripts/bench-ab.py REPEAT "CHILD FLAGS" NAME=BIN [NAME=BIN ...] -- LIB [LIB ...]
    scripts/bench-ab.py 5 "--workload bulk --streams 1 --bytes 1073741824" \\
        old=/tmp/old/braid new=target/release/braid -- tcp go-smux1 braid-smux1 braid-yamux
"""
import itertools
import json
import os
import statistics
import subprocess
import sys


def main():
    repeat, flags = int(sys.argv[1]), sys.argv[2].split()
    sep = sys.argv.index("--")
    builds = [b.split("=", 1) for b in sys.argv[3:sep]]
    libs = sys.argv[sep + 1 :]
    go = os.environ.get("BRAID_BENCH_GO", "target/go/braid-bench-go")
    runs = {}
    for _ in range(repeat):
        for (name, path), lib in itertools.product(builds, libs):
            shared = lib == "tcp" or lib.startswith("go-")
            if shared and name != builds[0][0]:
                continue
            env, args = dict(os.environ), list(flags)
            if lib.startswith("go-"):
                cmd = [go, "--lib", lib[3:]]
                if "--current-thread" in args:
                    # As `braid bench` does: Go's nearest equivalent of one thread.
                    env["GOMAXPROCS"] = "1"
                    args.remove("--current-thread")
            else:
                cmd = [path, "bench-child", "--lib", lib]
            out = subprocess.run(
                cmd + args, capture_output=True, text=True, timeout=900, env=env
            ).stdout
            sample = json.loads(out.strip().splitlines()[-1])
            if not sample.get("ok"):
                print("failed:", name, lib, sample, file=sys.stderr)
                continue
            runs.setdefault((name if not shared else "-", lib), []).append(sample)
    report(runs)


def median(samples, field):
    values = [s[field] for s in samples if s.get(field) is not None]
    return statistics.median(values) if values else float("nan")


def report(runs):
    tcp = runs.get(("-", "tcp"))
    for (name, lib), samples in runs.items():
        if "p50_us" in samples[0]:
            p50 = median(samples, "p50_us")
            ratio = p50 / median(tcp, "p50_us") if tcp else float("nan")
            every = [round(s["p50_us"], 1) for s in samples]
            print(
                f"{name:6} {lib:12} p50 {p50:6.1f} us  p99 {median(samples, 'p99_us'):6.1f}"
                f"  x TCP {ratio:4.2f}  runs {every}"
            )
        else:
            mbps = median(samples, "mb_per_s")
            ratio = 100 * mbps / median(tcp, "mb_per_s") if tcp else float("nan")
            per_gb = [s["cpu_s"] / (s["bytes"] / 1e9) for s in samples]
            rss = median(samples, "peak_rss_kib") / 1024
            print(
                f"{name:6} {lib:12} MB/s {mbps:6.0f} {ratio:4.0f}% TCP"
                f"  CPU s/GB {statistics.median(per_gb):.3f}  RSS MiB {rss:6.1f}"
                f"  runs MB/s {[round(s['mb_per_s']) for s in samples]}"
                f" CPU s/GB {[round(x, 3) for x in per_gb]}"
            )


if __name__ == "__main__":
    main()
