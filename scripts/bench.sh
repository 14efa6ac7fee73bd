#!/usr/bin/env bash
# Runs `durable bench` against every store on private throwaway servers (scripts/test-servers.sh)
# and writes the tables, JSON reports and plots to docs/bench/ (the figures of docs/benchmarks.md).
#
# Usage:
#   scripts/bench.sh [BENCH ARG...]      e.g. scripts/bench.sh --max-size 100000
#   scripts/bench.sh --quick             small sizes, a minute or two in all
#   BENCH_OUT=docs/bench/counters scripts/bench.sh --only counters
#                                         one scenario, written to another directory
#
# The release build of the `durable` command is made first. Stores, in order: memory, SQLite
# (a file in a temporary directory), PostgreSQL, MariaDB, Redis, Redis Cluster, ZooKeeper.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

cargo build --release -p durable --features cli,full
bin=$PWD/target/release/durable
out=$PWD/${BENCH_OUT:-docs/bench}
mkdir -p "$out"

# A ZooKeeper holding 100k-key dictionaries (and their change logs) needs more than the tests'
# heap.
export DURABLE_TEST_ZOOKEEPER_HEAP=${DURABLE_TEST_ZOOKEEPER_HEAP:-1g}
# shellcheck source=scripts/test-servers.sh
source "$here/test-servers.sh"
durable_servers_start

scratch=$(mktemp -d)

run() {
  local name=$1 url=$2
  shift 2
  echo "== $name ($url)" >&2
  "$bin" --url "$url" -n bench bench --json "$out/$name.json" --svg "$out/$name.svg" "$@" \
    | tee "$out/$name.txt"
}

run memory "memory:" "$@"
run sqlite "sqlite://$scratch/bench.sqlite" "$@"
run postgres "$DURABLE_TEST_POSTGRES_URL" "$@"
run mariadb "$DURABLE_TEST_MYSQL_URL" "$@"
run redis "$DURABLE_TEST_REDIS_URL" "$@"
cluster=${DURABLE_TEST_REDIS_CLUSTER_URLS//redis:\/\//}
cluster=${cluster//\//}
run redis-cluster "redis://$cluster/" "$@"
run zookeeper "zk://$DURABLE_TEST_ZOOKEEPER" "$@"
rm -rf "$scratch"
