#!/usr/bin/env bash
# Fuzzing of every untrusted-input parser, with cargo-fuzz on the nightly toolchain.
#   scripts/fuzz.sh smoke          build every target and run each for a few seconds (CI)
#   scripts/fuzz.sh run [SECONDS]  run every target for SECONDS (default 300) each
#   scripts/fuzz.sh list           list the targets
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

mode="${1:-smoke}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain nightly) on this machine"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

targets=$(cargo +nightly fuzz list)
case "$mode" in
    list) echo "$targets" ;;
    smoke|run)
        secs=5
        [ "$mode" = run ] && secs="${2:-300}"
        cargo +nightly fuzz build
        for t in $targets; do
            echo "fuzz: $t for ${secs}s"
            mkdir -p "corpus/$t"
            # seeds/<target>/ (committed) holds starting inputs for targets that need structure.
            seeds=""; [ -d "seeds/$t" ] && seeds="seeds/$t"
            cargo +nightly fuzz run "$t" "corpus/$t" $seeds -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
        done
        ;;
    *) echo "usage: scripts/fuzz.sh smoke|run [SECONDS]|list" >&2; exit 2 ;;
esac
