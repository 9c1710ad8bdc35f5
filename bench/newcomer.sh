#!/usr/bin/env bash
# A newcomer's first minutes, timed in a fresh clone: `make demo` (creates .venv/ and installs kgpu),
# the Quick start's `. .venv/bin/activate` and first `kgpu`, then `make test`. Prints a table.
#
#   bash bench/newcomer.sh                 # clones this checkout's HEAD into a temporary directory
#   bash bench/newcomer.sh /path/to/repo   # or another repository (its default branch)
#   NEWCOMER_SKIP_TEST=1 bash bench/newcomer.sh   # make demo only
#
# Targets (issue 16, as measured on a fresh 2-core machine): make demo <= 56 s, make test <= 2 min 36 s.
set -euo pipefail
src="${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}"
work="$(mktemp -d /tmp/kgpu-newcomer-XXXXXX)"
trap 'rm -rf "$work"' EXIT
git clone -q "$src" "$work/kgpu"
cd "$work/kgpu"

seconds() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }

start=$(python3 -c 'import time; print(time.time())')
make demo > "$work/demo.log" 2>&1 || { tail -30 "$work/demo.log"; exit 1; }
demo=$(seconds "$start")

# The Quick start's next two lines, in a shell without kgpu on its PATH.
first=$(env -i HOME="$HOME" PATH=/usr/local/bin:/usr/bin:/bin bash -c \
    '. .venv/bin/activate && kgpu --simulate h100x8 gpus | head -1')

test_s="-"
tests="-"
if [ -z "${NEWCOMER_SKIP_TEST:-}" ]; then
    start=$(python3 -c 'import time; print(time.time())')
    make test > "$work/test.log" 2>&1 || { tail -30 "$work/test.log"; exit 1; }
    test_s=$(seconds "$start")
    tests=$(grep -Eo '[0-9]+ passed' "$work/test.log" | tail -1)
fi

printf '%-44s %10s %10s\n' "step" "seconds" "target"
printf '%-44s %10s %10s\n' "make demo (fresh clone: venv, install, demo)" "$demo" "<= 56"
printf '%-44s %10s %10s\n' "make test ($tests)" "$test_s" "<= 156"
printf 'after . .venv/bin/activate, kgpu says: %s\n' "$first"
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
