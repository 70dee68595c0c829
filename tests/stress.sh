#!/usr/bin/env bash
# Flakiness check: run the chosen tests RUNS times while CPU burners keep every core busy, then print
# passes and failures per test.
#
#   tests/stress.sh [-n RUNS] [-b BURNERS] [pytest arguments: test files, node ids, -k ...]
#
# RUNS defaults to 5, BURNERS to the number of cores; with no test named, the end-to-end tests (every
# test that starts processes: tests/integration/test_pipeline_*.py, test_web_process.py, test_demo.py,
# test_dashboard_browser.py, test_wizard_browser.py). Exit code 0 when every run of every test passed.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=5
burners=$(nproc)
while getopts "n:b:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    b) burners=$OPTARG ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
  set -- tests/integration/test_pipeline_*.py tests/integration/test_web_process.py \
    tests/integration/test_demo.py tests/integration/test_dashboard_browser.py \
    tests/integration/test_wizard_browser.py
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/outdial-stress-XXXXXX")
burner_pids=()
stop_burners() { [ ${#burner_pids[@]} -gt 0 ] && kill "${burner_pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_burners EXIT
for _ in $(seq "$burners"); do
  python3 -c 'while True: pass' &
  burner_pids+=($!)
done

echo "stress: $runs runs, $burners CPU burners, results in $out"
for i in $(seq "$runs"); do
  start=$(date +%s)
  python -m pytest -q -p no:cacheprovider --junitxml="$out/run-$i.xml" "$@" > "$out/run-$i.log" 2>&1
  echo "run $i: exit $? in $(( $(date +%s) - start )) s: $(tail -n 1 "$out/run-$i.log")"
done
stop_burners
trap - EXIT

python3 - "$out" "$runs" <<'EOF'
import collections, glob, sys
import xml.etree.ElementTree as ET

out, runs = sys.argv[1], int(sys.argv[2])
passed, failed, skipped = collections.Counter(), collections.Counter(), collections.Counter()
for path in sorted(glob.glob(f"{out}/run-*.xml")):
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed[name] += 1
        elif case.find("skipped") is not None:
            skipped[name] += 1
        else:
            passed[name] += 1
names = sorted(set(passed) | set(failed) | set(skipped))
width = max((len(n) for n in names), default=4)
print(f"\n{'test':<{width}}  passed  failed  skipped")
for name in names:
    print(f"{name:<{width}}  {passed[name]:>6}  {failed[name]:>6}  {skipped[name]:>7}")
total_failed = sum(failed.values())
print(f"\n{len(names)} tests x {runs} runs: {sum(passed.values())} passed, {total_failed} failed, "
      f"{sum(skipped.values())} skipped")
sys.exit(1 if total_failed or not names else 0)   # no test ran (an import error): a failure too
EOF
