#!/usr/bin/env bash
# The cluster tier (tests/cluster) on the running test bed, in the shortest wall time that keeps it honest:
#
# 1. the modules marked `exclusive` one after the other, alone on the test bed: they restart its components
#    (the chaos suite), fill its node or time its control plane (queue order, 200 MOUSs at once), or need its
#    CPU for pods of their own (the Helm release's two Dask workers beside the imaging pod), and anything
#    running beside them would either be hit or change what they measure;
# 2. then every other module in two lanes side by side, each a pytest process of its own (own Prefect server,
#    own bucket, own namespaces and local operators). A tiny MOUS keeps about one core busy, so on the
#    two-core machine one lane left the other core mostly idle.
#
# Lane A is the list below (about half of the non-exclusive time, measured with both lanes running: 14-15 min
# each); lane B is every other module. Lane A's output is printed when it ends.
# Usage: cluster-tests.sh PYTHON [pytest arguments...]   (KUBECONFIG set to the test bed's)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${1:?usage: cluster-tests.sh PYTHON [pytest args]}
shift
LANE_A=(tests/cluster/test_campaign.py tests/cluster/test_mous_resource.py tests/cluster/test_operator_flow_pods.py
        tests/cluster/test_operator_dask_oom.py)

ok() {  # pytest's exit code 5 is "no test collected", e.g. when the arguments select none of a group
  [ "$1" = 0 ] || [ "$1" = 5 ]
}

rc_alone=0
"$PY" -m pytest -m "cluster and exclusive" tests/cluster --durations=5 "$@" || rc_alone=$?

# The runner image was refreshed by the run above; two lanes rebuilding it at once would race.
export TESTBED_RUNNER=0
ignore_a=()
for f in "${LANE_A[@]}"; do ignore_a+=(--ignore="$f"); done
lane_a_log=$(mktemp /tmp/mousflow-cluster-lane-a.XXXXXX.log)
"$PY" -m pytest -m "cluster and not exclusive" "${LANE_A[@]}" --durations=10 "$@" >"$lane_a_log" 2>&1 &
lane_a=$!
rc_b=0
"$PY" -m pytest -m "cluster and not exclusive" tests/cluster "${ignore_a[@]}" --durations=10 "$@" || rc_b=$?
rc_a=0
wait "$lane_a" || rc_a=$?
echo "==================== cluster tier, lane A (ran beside the lane above): ${LANE_A[*]}"
cat "$lane_a_log"
rm -f "$lane_a_log"
echo "cluster tier: exclusive modules exit $rc_alone, lane A exit $rc_a, lane B exit $rc_b"
ok $rc_alone && ok $rc_a && ok $rc_b
