#!/usr/bin/env bash
# The project's test command: starts throwaway Redis, Redis Cluster (three masters with a replica
# each), PostgreSQL, MariaDB, ZooKeeper and a three-server ZooKeeper ensemble on private ports
# (scripts/test-servers.sh), runs the whole workspace's tests against them with
# DURABLE_TEST_REQUIRE=1 (a missing server fails the tests instead of skipping them), stops the
# servers in every case, and exits with cargo's status.
#
# Usage:
#   scripts/test.sh                       cargo test --workspace --all-features
#   scripts/test.sh ARG...                extra arguments go to cargo test, for example
#                                           scripts/test.sh -p durable-core
#                                           scripts/test.sh -- --nocapture some_test
#                                         (-p/--package replaces --workspace)
#   scripts/test.sh --servers-only        start the servers, print `export ...` lines and wait
#                                         for Ctrl-C, to run cargo test by hand in another shell
#
# Settings such as DURABLE_TEST_SERVERS or DURABLE_TEST_KEEP_TMP: see scripts/test-servers.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

case ${1:-} in
  --servers-only) exec "$here/test-servers.sh" --servers-only ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac

# cargo test --workspace ignores -p, so leave it out when packages are named; avoid flags twice.
workspace=--workspace
all_features=--all-features
for arg in "$@"; do
  case $arg in
    --) break ;;
    -p* | --package | --package=* | --workspace | --all) workspace= ;;
    --all-features) all_features= ;;
  esac
done
cargo_args=(test)
[[ -z $workspace ]] || cargo_args+=("$workspace")
[[ -z $all_features ]] || cargo_args+=("$all_features")

# shellcheck source=scripts/test-servers.sh
source "$here/test-servers.sh"
durable_servers_start
export DURABLE_TEST_REQUIRE=1

echo "+ cargo ${cargo_args[*]} $*" >&2
status=0
durable_servers_run cargo "${cargo_args[@]}" "$@" || status=$?
if ((status != 0)); then
  echo "scripts/test.sh: cargo test failed (exit status $status)" >&2
fi
exit "$status" # the EXIT trap of test-servers.sh stops the servers
