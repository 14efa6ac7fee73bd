#!/usr/bin/env bash
# shellcheck shell=bash
# shellcheck disable=SC2153,SC2154  # DTS_* settings are assigned by the generated control scripts.
#
# Throwaway servers for durable's tests: Redis, a Redis Cluster (three masters, one replica
# each), PostgreSQL, MariaDB, ZooKeeper and a three-server ZooKeeper ensemble, each on free
# private ports, all in one temporary directory that is removed again when they stop. The
# machine's own servers (standard ports) are never used.
#
# Usage:
#   scripts/test-servers.sh [--servers-only]   start, print `export ...` lines, wait for Ctrl-C
#   scripts/test-servers.sh -- CMD [ARG...]    start, run CMD with the variables set, stop,
#                                              exit with CMD's status
#   source scripts/test-servers.sh             in a bash script, then `durable_servers_start`
#                                              (and optionally `durable_servers_run CMD...`);
#                                              the servers stop when that script exits. The
#                                              library takes over the EXIT/INT/TERM/HUP traps.
#
# Exported variables (the tests read them):
#   DURABLE_TEST_REDIS_URL            redis://127.0.0.1:P/
#   DURABLE_TEST_REDIS_CTL            control script for that Redis (see below)
#   DURABLE_TEST_REDIS_CLUSTER_URLS   redis://127.0.0.1:A/,redis://127.0.0.1:B/,redis://127.0.0.1:C/
#                                     (the three nodes created as masters)
#   DURABLE_TEST_REDIS_CLUSTER_ALL_URLS  all six nodes: the three masters, then the three
#                                     replicas (roles as created; after a failover ask `nodes`)
#   DURABLE_TEST_REDIS_CLUSTER_CTL    control script for the whole cluster and each node
#   DURABLE_TEST_POSTGRES_URL         postgres://postgres@127.0.0.1:P/durable_test
#   DURABLE_TEST_POSTGRES_CTL         control script for that PostgreSQL
#   DURABLE_TEST_MYSQL_URL            mysql://root@127.0.0.1:P/durable_test   (MariaDB)
#   DURABLE_TEST_MYSQL_CTL            control script for that MariaDB
#   DURABLE_TEST_ZOOKEEPER            127.0.0.1:P   (standalone)
#   DURABLE_TEST_ZOOKEEPER_CTL        control script for that ZooKeeper
#   DURABLE_TEST_ZOOKEEPER_ENSEMBLE   127.0.0.1:A,127.0.0.1:B,127.0.0.1:C   (client addresses of
#                                     servers 1, 2, 3 of the ensemble)
#   DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL  control script for the ensemble and each server
#   DURABLE_TEST_CHROMIUM             /usr/bin/chromium       (when installed)
#   DURABLE_TEST_CHROMEDRIVER         /usr/bin/chromedriver   (when installed)
#
# A control script takes a command and returns when it is done:
#   stop      graceful stop, data kept (Redis: SHUTDOWN SAVE, reloaded by start)
#   start     start again on the same port with the same data; wait until ready
#   restart   stop + start
#   kill      abrupt stop (SIGKILL; PostgreSQL: immediate shutdown). The databases and ZooKeeper
#             keep every committed write. Redis runs without automatic snapshots (--save '') or
#             append-only file: after kill + start it comes back with the contents of its last
#             dump.rdb, that is as of the last SAVE (or finished BGSAVE), or of the last graceful
#             stop, whichever came later; writes after it are lost; empty if there was none.
#             Redis' stop and kill return once its ports are free, so a start may follow at once.
#   status    say whether it runs; exit status 0 when running, 3 when stopped, 4 when its process
#             is frozen (`node PORT stop-process` below). For a group (cluster, ensemble): 0 when
#             every server runs, else 3, naming the servers stopped or frozen.
#   teardown  same as kill (used by the library when it stops everything)
#
# The Redis Cluster's script works on all six nodes at once with the commands above. Its start
# starts the nodes that are down, resumes frozen ones, and then waits until every node says
# cluster_state:ok, every replica has finished its sync (master_link_status:up) and every
# master has a replica online; when all nodes already run it only waits, so it also serves to
# wait for the cluster to settle (e.g. after `node PORT start`). Per node (PORT = a node's
# client port):
#   node PORT kill          SIGKILL that node (it keeps nodes.conf and its last dump.rdb)
#   node PORT stop          graceful stop (SHUTDOWN SAVE)
#   node PORT stop-process  SIGSTOP: the node freezes (no replies, no gossip). For a replica the
#                           script also closes its replication connection on the master, since
#                           the kernel would otherwise keep buffering the stream for the frozen
#                           process: writes to the master after this returns do not reach the
#                           replica until `cont` (then it catches up by partial resync)
#   node PORT cont          SIGCONT: the frozen node goes on
#   node PORT start         start it again on the same port with its nodes.conf, so that it
#                           rejoins the cluster (an old master comes back as a replica of the
#                           node that took over its slots); waits until it answers, not until
#                           it has synced: a following `start` waits for that
#   node PORT status        as status above, for one node (0 running, 3 stopped, 4 frozen)
#   nodes                   one line per node, in port order: PORT ROLE MASTERPORT, ROLE master
#                           or replica, MASTERPORT `-` for a master; read live (INFO replication
#                           of each node), so it is true after a failover. A frozen node is shown
#                           as the other nodes see it; a node whose process is not running as
#                           `PORT down -`.
#   Example: "$DURABLE_TEST_REDIS_CLUSTER_CTL" nodes | awk -v m=PORT '$3 == m { print $1 }'
#   prints the replica of master PORT. A manual failover: redis-cli -p REPLICA cluster failover
#   takeover. Node timeout 3000 ms: a master unreachable that long is marked failed, and its
#   replica takes over by itself about 1-2 s later.
#
# The ZooKeeper ensemble's script works on all three servers with the commands above (start
# waits until every server serves as leader or follower, one of them leader), and also takes:
#   node N kill|stop|start|status   one server, N = 1, 2 or 3 (the order of
#                           DURABLE_TEST_ZOOKEEPER_ENSEMBLE); start waits until it serves, which
#                           needs a quorum (with two servers down, use `start` to start both);
#                           status also names its mode (leader, follower)
#   leader                  print the current leader's client address 127.0.0.1:P, waiting up to
#                           DURABLE_TEST_START_TIMEOUT for an election to finish
#   followers               print the followers' client addresses, one per line, once there is
#                           a leader and every running server serves
#   Example: old=$("$DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL" leader) and then
#   "$DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL" node N kill, with N the position of $old in
#   DURABLE_TEST_ZOOKEEPER_ENSEMBLE.
#
# Settings (environment):
#   DURABLE_TEST_SERVERS        which servers, default
#                               "redis redis-cluster postgres mysql zookeeper zookeeper-ensemble"
#   DURABLE_TEST_START_TIMEOUT  seconds to wait for each server, default 60
#   DURABLE_TEST_PORT_MIN/MAX   port range, scanned from a random point, default 20000-30999
#   DURABLE_TEST_KEEP_TMP=1     keep the temporary directory (logs, data) after stopping
#   DURABLE_TEST_NO_INSTALL=1   never run apt-get for missing packages
#   DURABLE_TEST_ZOOKEEPER_HEAP the standalone ZooKeeper's Java heap, default 256m (benchmarks
#                               of 100k keys and more need more: 1g)
#
# Ports are reserved in /tmp/durable-test-ports (one file per port naming the owning process),
# so concurrent runs never pick the same port, even while a test has stopped a server. If the
# owning shell dies without cleaning up (SIGKILL), a detached watchdog stops the servers and
# removes the temporary directory within a few seconds.

_DTS_ALL_SERVERS="redis redis-cluster postgres mysql zookeeper zookeeper-ensemble"
_DTS_PORT_DIR=${DURABLE_TEST_PORT_DIR:-/tmp/durable-test-ports}
_DTS_POLICY_RC=${_DTS_POLICY_RC:-/usr/sbin/policy-rc.d}
# Let non-root users find the server binaries as well.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac

# ---------------------------------------------------------------------------------------------
# Small helpers

_dts_log() { printf 'test-servers: %s\n' "$*" >&2; }
_dts_warn() { printf 'test-servers: WARNING: %s\n' "$*" >&2; }

# _dts_fail MESSAGE [LOGFILE...]: print an error and the tail of each log; return 1.
_dts_fail() {
  local msg=$1 f
  shift
  printf 'test-servers: ERROR: %s\n' "$msg" >&2
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf -- '---- last lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
    printf -- '----\n' >&2
  done
  return 1
}

_dts_now_ms() {
  local us=${EPOCHREALTIME//[!0-9]/}
  echo $((10#$us / 1000))
}
_dts_deadline() { echo $(($(_dts_now_ms) + ${DTS_TIMEOUT:-60} * 1000)); }
_dts_past() { (($(_dts_now_ms) >= $1)); }
_dts_elapsed() { # START_MS -> seconds since then, "1.234"
  local ms=$(($(_dts_now_ms) - $1))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# _dts_alive PID: the process exists and is not a zombie (a daemon that just detached, or just
# died, can linger as a zombie until it is reaped; that is not a running server).
_dts_alive() {
  local pid=$1 stat state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
  state=${stat##*) }
  state=${state%% *}
  [[ $state != Z && $state != X ]]
}

# _dts_frozen PID: the process is stopped (SIGSTOP), so it neither answers nor exits on SIGTERM.
_dts_frozen() {
  local stat state
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  state=${stat##*) }
  state=${state%% *}
  [[ $state == T || $state == t ]]
}

_dts_read_pid() { # FILE -> the pid it holds
  local pid
  { read -r pid <"$1"; } 2>/dev/null || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  echo "$pid"
}

# _dts_wait_gone PID SECONDS: wait until the process has exited; 1 on timeout.
_dts_wait_gone() {
  local pid=$1 deadline=$(($(_dts_now_ms) + $2 * 1000))
  while _dts_alive "$pid"; do
    _dts_past "$deadline" && return 1
    sleep 0.02
  done
  return 0
}

# _dts_kill_wait PID SIGNAL: send the signal and wait for the exit (SIGKILL after 10 s).
_dts_kill_wait() {
  local pid=$1 sig=$2
  _dts_alive "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  # A frozen (SIGSTOP) process acts on the signal only once it goes on.
  [[ $sig == KILL ]] || kill -CONT "$pid" 2>/dev/null || true
  _dts_wait_gone "$pid" 10 && return 0
  _dts_warn "$DTS_NAME (pid $pid) ignored SIG$sig for 10 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  _dts_wait_gone "$pid" 10
}

# _dts_port_busy PORT: something listens on this TCP port (any address). A restarted server
# needs only that: connections it just closed (TIME_WAIT, FIN_WAIT2) do not keep it from binding.
_dts_port_busy() {
  local hex
  printf -v hex '%04X' "$1"
  awk -v p="$hex" 'FNR > 1 { n = split($2, a, ":"); if (a[n] == p && $4 == "0A") { found = 1; exit } }
                   END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# _dts_wait_port_free SECONDS [PORT...]: wait until nothing listens on these ports (default:
# DTS_PORT); 1 on timeout. A killed server's main thread can be reaped while its other threads
# still hold the listening socket, so a start right after a kill could find the port taken.
_dts_wait_port_free() {
  local deadline=$(($(_dts_now_ms) + $1 * 1000)) p
  shift
  for p in "${@:-$DTS_PORT}"; do
    while _dts_port_busy "$p"; do
      if _dts_past "$deadline"; then
        _dts_warn "$DTS_NAME: port $p is still in use after the server exited"
        return 1
      fi
      sleep 0.01
    done
  done
}

# _dts_used_ports: every local TCP port in use, in any state, as hex (one per line).
_dts_used_ports() {
  awk 'FNR > 1 { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# _dts_require_free_port [PORT...]: fail (naming the listener) when one of them (default:
# DTS_PORT) is in use.
_dts_require_free_port() {
  local p who
  for p in "${@:-$DTS_PORT}"; do
    _dts_port_busy "$p" || continue
    who=$(ss -Hltnp "sport = :$p" 2>/dev/null) || who=
    _dts_fail "$DTS_NAME: port $p is already in use; refusing to start there${who:+:
$who}"
    return 1
  done
}

# _dts_detach PIDFILE LOG CMD...: start CMD in its own session (Ctrl-C on the terminal does not
# reach it; the library stops it), stdin from /dev/null, output appended to LOG, its pid written
# to PIDFILE before it starts.
_dts_detach() {
  local pidfile=$1 log=$2 deadline
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016  # $$ is for the inner shell.
  setsid bash -c 'echo $$ >"$0" && exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  deadline=$(($(_dts_now_ms) + 10000))
  until [[ -s $pidfile ]]; do
    if _dts_past "$deadline"; then
      _dts_fail "$DTS_NAME: could not launch $1" "$log"
      return 1
    fi
    sleep 0.01
  done
}

# ---------------------------------------------------------------------------------------------
# Control scripts: one generated script per server in the temporary directory. It holds the
# server's settings and calls _dts_ctl from a copy of this library.

# _dts_write_ctl NAME KIND VAR=VALUE... -> path of the script
_dts_write_ctl() {
  local name=$1 kind=$2 f="$_DTS_TMP/$1-ctl.sh" kv
  shift 2
  {
    echo '#!/usr/bin/env bash'
    echo "# Generated by durable's scripts/test-servers.sh: controls the throwaway $name server."
    echo "# Usage: $f $(_dts_usage "$kind")"
    echo 'set -euo pipefail'
    printf 'DTS_NAME=%q\nDTS_KIND=%q\nDTS_TIMEOUT=%q\n' "$name" "$kind" "$_DTS_TIMEOUT"
    for kv in "$@"; do printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"; done
    printf 'source %q\n' "$_DTS_TMP/lib.sh"
    # shellcheck disable=SC2016  # literal text for the generated script
    echo '_dts_ctl "$@"'
  } >"$f"
  chmod 755 "$f"
  echo "$f"
}

_dts_usage() { # KIND -> the commands its control script takes
  case $1 in
    redis-cluster)
      echo 'stop|start|restart|kill|status|nodes | node PORT kill|stop|stop-process|cont|start|status'
      ;;
    zookeeper-ensemble)
      echo 'stop|start|restart|kill|status|leader|followers | node N kill|stop|start|status'
      ;;
    *) echo 'stop|start|restart|kill|status' ;;
  esac
}

_dts_ctl() {
  local action=${1:-} k=${DTS_KIND//-/_} pid
  # A kind may handle a command itself (a group of servers; commands of its own):
  # _dts_KIND_cmd_ACTION ARG...
  if [[ $action =~ ^[a-z]+$ ]] && declare -F "_dts_${k}_cmd_$action" >/dev/null; then
    shift
    "_dts_${k}_cmd_$action" "$@"
    return
  fi
  case $action in
    start)
      if "_dts_${k}_running"; then
        _dts_log "$DTS_NAME is already running"
        return 0
      fi
      "_dts_${k}_spawn" && "_dts_${k}_wait"
      ;;
    stop)
      "_dts_${k}_running" || return 0
      "_dts_${k}_stop"
      ;;
    restart) _dts_ctl stop && _dts_ctl start ;;
    kill | teardown) "_dts_${k}_kill" ;;
    status)
      if "_dts_${k}_running"; then
        if declare -F "_dts_${k}_pid" >/dev/null && pid=$("_dts_${k}_pid") && _dts_frozen "$pid"; then
          echo "$DTS_NAME: frozen (SIGSTOP) on port(s) ${DTS_PORT:-$DTS_PORTS}"
          return 4
        fi
        echo "$DTS_NAME: running on port(s) ${DTS_PORT:-$DTS_PORTS}"
      else
        echo "$DTS_NAME: stopped"
        return 3
      fi
      ;;
    setup) # the first start, used by the library
      local t0
      t0=$(_dts_now_ms)
      "_dts_${k}_setup" || return 1
      _dts_log "$DTS_NAME ready in $(_dts_elapsed "$t0") s"
      ;;
    spawn | wait) "_dts_${k}_$action" ;;
    *)
      echo "usage: $0 $(_dts_usage "$DTS_KIND")" >&2
      return 2
      ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Redis (standalone, or one node of the cluster when DTS_BUS_PORT is set). Files in $DTS_DIR.

_dts_redis_cli() { redis-cli -h 127.0.0.1 -p "$DTS_PORT" "$@"; }
_dts_redis_pid() {
  local pid
  pid=$(_dts_read_pid "$DTS_DIR/redis.pid") && _dts_alive "$pid" && echo "$pid"
}
_dts_redis_running() { _dts_redis_pid >/dev/null; }
_dts_redis_setup() { _dts_ctl start; }

_dts_redis_spawn() {
  _dts_require_free_port || return 1
  local args=(--bind 127.0.0.1 --port "$DTS_PORT" --daemonize yes --pidfile "$DTS_DIR/redis.pid"
    --logfile "$DTS_DIR/redis.log" --dir "$DTS_DIR" --save '' --appendonly no
    --enable-debug-command local)
  if [[ -n ${DTS_BUS_PORT:-} ]]; then
    args+=(--cluster-enabled yes --cluster-config-file "$DTS_DIR/nodes.conf"
      --cluster-port "$DTS_BUS_PORT" --cluster-node-timeout 3000
      --repl-diskless-sync-delay 0) # a replica's sync starts at once, not after 5 s
  fi
  rm -f "$DTS_DIR/redis.pid"
  if ! redis-server "${args[@]}" </dev/null >>"$DTS_DIR/redis.log" 2>&1; then
    _dts_fail "$DTS_NAME: redis-server did not start" "$DTS_DIR/redis.log"
    return 1
  fi
}

_dts_redis_wait() {
  local deadline pid info
  deadline=$(_dts_deadline)
  while :; do
    if pid=$(_dts_read_pid "$DTS_DIR/redis.pid"); then
      if ! _dts_alive "$pid"; then
        _dts_fail "$DTS_NAME: redis-server exited during start" "$DTS_DIR/redis.log"
        return 1
      fi
      # Ready when it answers, and it is our process that answers on this port.
      if [[ $(_dts_redis_cli ping 2>/dev/null) == PONG ]]; then
        info=$(_dts_redis_cli info server 2>/dev/null) || info=
        info=${info//$'\r'/}
        [[ $info == *$'\n'"process_id:$pid"$'\n'* ]] && return 0
      fi
    fi
    if _dts_past "$deadline"; then
      _dts_fail "$DTS_NAME: not ready after ${DTS_TIMEOUT}s on port $DTS_PORT" "$DTS_DIR/redis.log"
      return 1
    fi
    sleep 0.02
  done
}

_dts_redis_stop() {
  local pid
  pid=$(_dts_redis_pid) || return 0
  kill -CONT "$pid" 2>/dev/null || true # a frozen node would never answer SHUTDOWN
  # SHUTDOWN SAVE writes dump.rdb even though no save points are configured; start loads it.
  _dts_redis_cli shutdown save >/dev/null 2>&1 || true
  if ! _dts_wait_gone "$pid" 30; then
    _dts_fail "$DTS_NAME: still running 30 s after SHUTDOWN" "$DTS_DIR/redis.log"
    return 1
  fi
  _dts_wait_port_free 10 "$DTS_PORT" ${DTS_BUS_PORT:+"$DTS_BUS_PORT"}
}

_dts_redis_kill() {
  local pid
  # Like a crash: dump.rdb stays, so start loads the last snapshot (SAVE, BGSAVE, graceful stop,
  # a replica's last full sync), or nothing if there was none. Nothing is saved at the kill.
  if pid=$(_dts_redis_pid); then _dts_kill_wait "$pid" KILL || return 1; fi
  # Returns once a start can bind the port again.
  _dts_wait_port_free 10 "$DTS_PORT" ${DTS_BUS_PORT:+"$DTS_BUS_PORT"}
}

# ---------------------------------------------------------------------------------------------
# Groups of servers (the Redis Cluster, the ZooKeeper ensemble): DTS_PORTS (the servers' client
# ports) and DTS_NODE_CTLS (their control scripts), space separated, in the same order.

_dts_nodes_each() { # ACTION: run it on every server in parallel; fail if any failed
  local ctl pids=() rc=0 p
  for ctl in $DTS_NODE_CTLS; do
    "$ctl" "$1" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

_dts_nodes_any_running() {
  local ctl
  for ctl in $DTS_NODE_CTLS; do
    if "$ctl" status >/dev/null; then return 0; else (($? == 4)) && return 0; fi
  done
  return 1
}

# _dts_nodes_ctl port|number ID: the control script of one server of the group, by its client
# port or by its number (1, 2, ...).
_dts_nodes_ctl() {
  local by=$1 id=$2 i=0 p ctls
  read -ra ctls <<<"$DTS_NODE_CTLS"
  for p in $DTS_PORTS; do
    i=$((i + 1))
    if [[ ($by == port && $id == "$p") || ($by == number && $id == "$i") ]]; then
      echo "${ctls[i - 1]}"
      return 0
    fi
  done
  if [[ $by == port ]]; then
    echo "$DTS_NAME: no node on port '$id' (ports: $DTS_PORTS)" >&2
  else
    echo "$DTS_NAME: no server number '$id' (1 to ${#ctls[@]})" >&2
  fi
  return 2
}

_dts_nodes_status() { # exit status 0 when every server runs, else 3
  local ctl port ports stopped='' frozen='' rc i=0
  read -ra ports <<<"$DTS_PORTS"
  for ctl in $DTS_NODE_CTLS; do
    port=${ports[i]}
    i=$((i + 1))
    rc=0
    "$ctl" status >/dev/null || rc=$?
    case $rc in
      0) ;;
      4) frozen+=" $port" ;;
      *) stopped+=" $port" ;;
    esac
  done
  if [[ -z $stopped && -z $frozen ]]; then
    echo "$DTS_NAME: running on port(s) $DTS_PORTS"
    return 0
  fi
  if [[ -z $frozen && ${stopped# } == "$DTS_PORTS" ]]; then
    echo "$DTS_NAME: stopped"
  else
    echo "$DTS_NAME: partly running on port(s) $DTS_PORTS${stopped:+; stopped:$stopped}${frozen:+; frozen (SIGSTOP):$frozen}"
  fi
  return 3
}

# ---------------------------------------------------------------------------------------------
# Redis Cluster: a group of redis nodes (the first half created as masters, the second half as
# their replicas). Node directories in $DTS_DIR/PORT.

_dts_redis_cluster_running() { _dts_nodes_any_running; }
_dts_redis_cluster_stop() { _dts_nodes_each stop; }
_dts_redis_cluster_kill() { _dts_nodes_each kill; }
_dts_redis_cluster_cmd_status() { _dts_nodes_status; }
_dts_redis_cluster_cmd_start() { _dts_redis_cluster_spawn && _dts_redis_cluster_wait; }

_dts_redis_cluster_node_pid() { # PORT -> pid of that node's running redis-server
  local pid
  pid=$(_dts_read_pid "$DTS_DIR/$1/redis.pid") && _dts_alive "$pid" && echo "$pid"
}

_dts_redis_cluster_spawn() { # resume the frozen nodes, start the stopped ones
  local port ctl pid pids=() rc=0 p
  for port in $DTS_PORTS; do
    if pid=$(_dts_redis_cluster_node_pid "$port"); then
      kill -CONT "$pid" 2>/dev/null || true
    else
      ctl=$(_dts_nodes_ctl port "$port") || return 1
      "$ctl" start &
      pids+=($!)
    fi
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

# Ready when every node says cluster_state:ok and knows all nodes, every replica has finished
# its sync (master_link_status:up), and every master has a replica online.
_dts_redis_cluster_wait() {
  _dts_nodes_each wait || return 1
  local deadline port info why n
  n=$(wc -w <<<"$DTS_PORTS")
  deadline=$(_dts_deadline)
  while :; do
    why=
    for port in $DTS_PORTS; do
      # One redis-cli for both answers (fewer processes on a busy machine).
      info=$(printf 'CLUSTER INFO\nINFO replication\n' |
        redis-cli -h 127.0.0.1 -p "$port" 2>/dev/null) || info=
      info=${info//$'\r'/}
      if [[ $info != *"cluster_state:ok"* || $info != *"cluster_known_nodes:$n"$'\n'* ]]; then
        why="cluster not ok on 127.0.0.1:$port"
      elif [[ $info == *$'\n'role:slave$'\n'* ]]; then
        [[ $info == *$'\n'master_link_status:up$'\n'* &&
          $info == *$'\n'master_sync_in_progress:0$'\n'* ]] ||
          why="replica 127.0.0.1:$port has not finished its sync"
      elif [[ $info != *$'\n'role:master$'\n'* || $info == *$'\n'connected_slaves:0$'\n'* ]]; then
        why="master 127.0.0.1:$port has no replica online"
      fi
      [[ -z $why ]] || break
    done
    [[ -n $why ]] || return 0
    if _dts_past "$deadline"; then
      _dts_fail "$DTS_NAME: $why after ${DTS_TIMEOUT}s:
$info" "$DTS_DIR/create.log" "$DTS_DIR/$port/redis.log"
      return 1
    fi
    sleep 0.1
  done
}

_dts_redis_cluster_setup() { # start the fresh nodes, make them one cluster, wait until it is ok
  local port hosts=() ports masters role
  _dts_redis_cluster_spawn || return 1
  read -ra ports <<<"$DTS_PORTS"
  for port in "${ports[@]}"; do hosts+=("127.0.0.1:$port"); done
  if ! redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes \
    </dev/null >"$DTS_DIR/create.log" 2>&1; then
    _dts_fail "$DTS_NAME: redis-cli --cluster create failed" "$DTS_DIR/create.log"
    return 1
  fi
  _dts_redis_cluster_wait || return 1
  # redis-cli makes the first half the masters; the URL list of masters relies on it.
  masters=$((${#ports[@]} / 2))
  for port in "${ports[@]:0:masters}"; do
    role=$(_dts_redis_cluster_role "$port")
    if [[ ${role%% *} != master ]]; then
      _dts_fail "$DTS_NAME: 127.0.0.1:$port was created as '$role', expected master" \
        "$DTS_DIR/create.log"
      return 1
    fi
  done
}

# _dts_redis_cluster_role PORT -> "master -", "replica MASTERPORT", or nothing when the node
# does not answer within 2 s.
_dts_redis_cluster_role() {
  local info mport
  info=$(timeout 2 redis-cli -h 127.0.0.1 -p "$1" info replication 2>/dev/null) || return 0
  info=${info//$'\r'/}
  case $info in
    *$'\n'role:master$'\n'*) echo master - ;;
    *$'\n'role:slave$'\n'*)
      mport=${info#*$'\n'master_port:}
      mport=${mport%%$'\n'*}
      echo replica "$mport"
      ;;
  esac
}

_dts_redis_cluster_cmd_nodes() { # PORT ROLE MASTERPORT, one line per node
  local port pid view='' id addr flags master role p
  local -A port_of=() flags_of=() master_of=()
  # The cluster's own view, from the first node that answers: for frozen nodes.
  for port in $DTS_PORTS; do
    pid=$(_dts_redis_cluster_node_pid "$port") || continue
    _dts_frozen "$pid" && continue
    view=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" cluster nodes 2>/dev/null) || view=
    [[ $view != *myself* ]] || break
  done
  view=${view//$'\r'/}
  while read -r id addr flags master _; do
    [[ -n $id && $addr == *:* ]] || continue
    p=${addr%%@*}
    p=${p##*:}
    port_of[$id]=$p
    flags_of[$p]=$flags
    master_of[$p]=$master
  done <<<"$view"
  for port in $DTS_PORTS; do
    if ! pid=$(_dts_redis_cluster_node_pid "$port"); then
      echo "$port down -"
      continue
    fi
    role=
    _dts_frozen "$pid" || role=$(_dts_redis_cluster_role "$port")
    if [[ -z $role ]]; then # frozen, or did not answer: as the other nodes see it
      case ${flags_of[$port]:-} in
        *slave*) role="replica ${port_of[${master_of[$port]:-none}]:--}" ;;
        *master*) role="master -" ;;
        *) role="unknown -" ;;
      esac
    fi
    echo "$port $role"
  done
}

_dts_redis_cluster_cmd_node() { # PORT ACTION
  local port=${1:-} action=${2:-} ctl pid
  if (($# != 2)); then
    echo "usage: $0 node PORT kill|stop|stop-process|cont|start|status" >&2
    return 2
  fi
  ctl=$(_dts_nodes_ctl port "$port") || return 2
  case $action in
    kill | stop | start | status) "$ctl" "$action" ;;
    stop-process | cont)
      if ! pid=$(_dts_redis_cluster_node_pid "$port"); then
        _dts_fail "$DTS_NAME: node $port is not running"
        return 1
      fi
      if [[ $action == cont ]]; then
        _dts_signal_state "$pid" cont
      else
        _dts_redis_cluster_freeze "$port" "$pid"
      fi
      ;;
    *)
      echo "usage: $0 node PORT kill|stop|stop-process|cont|start|status" >&2
      return 2
      ;;
  esac
}

# _dts_redis_cluster_freeze PORT PID: SIGSTOP the node; if it is a replica, also close its
# replication connection on the master. A stopped process's kernel keeps receiving into its
# socket buffers, so without that the replica would apply, once continued, the writes made
# while it was frozen (seen here: it then became master WITH them after a takeover). After
# `cont` it reconnects and catches up (partial resync), unless its master is gone.
_dts_redis_cluster_freeze() {
  local port=$1 pid=$2 role mport lport
  role=$(_dts_redis_cluster_role "$port")
  _dts_signal_state "$pid" stop-process || return 1
  [[ $role == replica* ]] || return 0
  mport=${role#replica }
  if ! _dts_have ss; then # without ss: cut every replica of that master (the others reconnect)
    redis-cli -h 127.0.0.1 -p "$mport" client kill type replica >/dev/null 2>&1 || true
    return 0
  fi
  while read -r lport; do
    redis-cli -h 127.0.0.1 -p "$mport" client kill addr "127.0.0.1:$lport" >/dev/null 2>&1 || true
  done < <(ss -Htnp state established "( dport = :$mport )" 2>/dev/null |
    awk -v pid="pid=$pid," 'index($0, pid) { n = split($3, a, ":"); print a[n] }')
}

# _dts_signal_state PID stop-process|cont: send SIGSTOP or SIGCONT, wait until it took effect.
_dts_signal_state() {
  local pid=$1 deadline
  deadline=$(($(_dts_now_ms) + 10000))
  if [[ $2 == stop-process ]]; then
    kill -STOP "$pid"
    until _dts_frozen "$pid"; do
      _dts_alive "$pid" || return 1
      _dts_past "$deadline" && { _dts_fail "$DTS_NAME: pid $pid did not stop"; return 1; }
      sleep 0.01
    done
  else
    kill -CONT "$pid"
    while _dts_frozen "$pid"; do
      _dts_past "$deadline" && { _dts_fail "$DTS_NAME: pid $pid did not continue"; return 1; }
      sleep 0.01
    done
  fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: DTS_PGBIN (binaries), DTS_RUNAS (postgres when we are root, else empty).
# Data in $DTS_DIR/data; socket and logs in $DTS_DIR.

_dts_postgres_as() {
  if [[ -n ${DTS_RUNAS:-} ]]; then
    (cd "$DTS_DIR" && runuser -u "$DTS_RUNAS" -- "$@")
  else
    (cd "$DTS_DIR" && "$@")
  fi
}
_dts_postgres_pid() {
  local pid
  pid=$(_dts_read_pid "$DTS_DIR/data/postmaster.pid") && _dts_alive "$pid" && echo "$pid"
}
_dts_postgres_running() { _dts_postgres_pid >/dev/null; }
_dts_postgres_ctl() { # pg_ctl ARGS..., its own output into pg_ctl.log
  _dts_postgres_as "$DTS_PGBIN/pg_ctl" -D "$DTS_DIR/data" "$@" >>"$DTS_DIR/pg_ctl.log" 2>&1
}

_dts_postgres_setup() { # initdb, start, create the test database
  if ! _dts_postgres_as "$DTS_PGBIN/initdb" -D "$DTS_DIR/data" -U postgres --auth=trust \
    --encoding=UTF8 --no-locale --no-sync >"$DTS_DIR/initdb.log" 2>&1; then
    _dts_fail "$DTS_NAME: initdb failed" "$DTS_DIR/initdb.log"
    return 1
  fi
  _dts_ctl start || return 1
  if ! "$DTS_PGBIN/psql" -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DTS_PORT" -U postgres \
    -d postgres -c "CREATE DATABASE $DTS_DATABASE" >"$DTS_DIR/setup.log" 2>&1; then
    _dts_fail "$DTS_NAME: could not create database $DTS_DATABASE" "$DTS_DIR/setup.log"
    return 1
  fi
}

_dts_postgres_spawn() {
  _dts_require_free_port || return 1
  # fsync=off: throwaway data; a killed server still keeps every committed write (the OS has it).
  local opts="-p $DTS_PORT -k '$DTS_DIR' -c listen_addresses=127.0.0.1 -c fsync=off"
  opts+=" -c max_connections=200"
  if ! _dts_postgres_ctl -l "$DTS_DIR/postgres.log" -W -o "$opts" start; then
    _dts_fail "$DTS_NAME: pg_ctl start failed" "$DTS_DIR/pg_ctl.log" "$DTS_DIR/postgres.log"
    return 1
  fi
}

_dts_postgres_wait() {
  local deadline pid dir
  deadline=$(_dts_deadline)
  while :; do
    pid=$(_dts_read_pid "$DTS_DIR/data/postmaster.pid") || pid=
    if [[ -n $pid ]] && ! _dts_alive "$pid"; then
      _dts_fail "$DTS_NAME: postgres exited during start" "$DTS_DIR/postgres.log"
      return 1
    fi
    if [[ -n $pid ]] && "$DTS_PGBIN/pg_isready" -q -h 127.0.0.1 -p "$DTS_PORT" -t 1; then
      # It must be our server that answers on this port.
      dir=$("$DTS_PGBIN/psql" -X -w -At -h 127.0.0.1 -p "$DTS_PORT" -U postgres -d postgres \
        -c 'SHOW data_directory' 2>/dev/null) || dir=
      [[ $dir == "$DTS_DIR/data" ]] && return 0
    fi
    if _dts_past "$deadline"; then
      _dts_fail "$DTS_NAME: not ready after ${DTS_TIMEOUT}s on port $DTS_PORT" \
        "$DTS_DIR/pg_ctl.log" "$DTS_DIR/postgres.log"
      return 1
    fi
    sleep 0.02
  done
}

_dts_postgres_stop() {
  if ! _dts_postgres_ctl -m fast -w -t "$DTS_TIMEOUT" stop; then
    _dts_fail "$DTS_NAME: pg_ctl stop failed" "$DTS_DIR/pg_ctl.log" "$DTS_DIR/postgres.log"
    return 1
  fi
}

_dts_postgres_kill() {
  local pid
  pid=$(_dts_postgres_pid) || return 0
  # Immediate shutdown: no checkpoint, crash recovery on the next start (like a crash, but the
  # postmaster still takes its backends down with it).
  _dts_postgres_ctl -m immediate -w -t 30 stop || true
  _dts_kill_wait "$pid" KILL
}

# ---------------------------------------------------------------------------------------------
# MariaDB: DTS_RUNAS (mysql when we are root, else empty). Data in $DTS_DIR/data.

_dts_mysql_admin() {
  mariadb-admin --no-defaults --socket="$DTS_DIR/mysqld.sock" -uroot --connect-timeout=2 "$@"
}
_dts_mysql_pid() {
  local pid
  pid=$(_dts_read_pid "$DTS_DIR/launcher.pid") && _dts_alive "$pid" && echo "$pid"
}
_dts_mysql_running() { _dts_mysql_pid >/dev/null; }

_dts_mysql_setup() { # install the system tables, start, create the test database
  # A private tmpdir: concurrent servers sharing /tmp clash over their temporary table files
  # (seen as "Unknown table 'mysql.tmp_user_sys'" from two install-db runs at once).
  mkdir -p "$DTS_DIR/tmp"
  [[ -z ${DTS_RUNAS:-} ]] || chown "$DTS_RUNAS:" "$DTS_DIR/tmp"
  if ! mariadb-install-db --no-defaults --datadir="$DTS_DIR/data" ${DTS_RUNAS:+--user="$DTS_RUNAS"} \
    --auth-root-authentication-method=normal --skip-test-db --tmpdir="$DTS_DIR/tmp" \
    >"$DTS_DIR/install-db.log" 2>&1; then
    _dts_fail "$DTS_NAME: mariadb-install-db failed" "$DTS_DIR/install-db.log"
    return 1
  fi
  _dts_ctl start || return 1
  if ! mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$DTS_PORT" -uroot \
    -e "CREATE DATABASE $DTS_DATABASE" >"$DTS_DIR/setup.log" 2>&1; then
    _dts_fail "$DTS_NAME: could not create database $DTS_DATABASE" "$DTS_DIR/setup.log"
    return 1
  fi
}

_dts_mysql_spawn() {
  _dts_require_free_port || return 1
  # utf8mb4 as in Debian's own server configuration (skipped by --no-defaults);
  # flush_log_at_trx_commit=2: no fsync per commit, yet a killed server keeps every commit.
  _dts_detach "$DTS_DIR/launcher.pid" "$DTS_DIR/mysqld.log" \
    mariadbd --no-defaults --datadir="$DTS_DIR/data" ${DTS_RUNAS:+--user="$DTS_RUNAS"} \
    --port="$DTS_PORT" --bind-address=127.0.0.1 --socket="$DTS_DIR/mysqld.sock" \
    --pid-file="$DTS_DIR/mysqld.pid" --tmpdir="$DTS_DIR/tmp" --skip-log-bin --max-connections=500 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --innodb-flush-log-at-trx-commit=2 --innodb-buffer-pool-size=64M
}

_dts_mysql_wait() {
  local deadline pid dir
  deadline=$(_dts_deadline)
  while :; do
    if ! pid=$(_dts_read_pid "$DTS_DIR/launcher.pid") || ! _dts_alive "$pid"; then
      _dts_fail "$DTS_NAME: mariadbd exited during start" "$DTS_DIR/mysqld.log"
      return 1
    fi
    if _dts_mysql_admin ping >/dev/null 2>&1; then
      # Ask over TCP too: it must be our server that answers on this port.
      dir=$(mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$DTS_PORT" -uroot \
        --connect-timeout=2 -N -B -e 'SELECT @@datadir' 2>/dev/null) || dir=
      [[ ${dir%/} == "$DTS_DIR/data" ]] && return 0
    fi
    if _dts_past "$deadline"; then
      _dts_fail "$DTS_NAME: not ready after ${DTS_TIMEOUT}s on port $DTS_PORT" "$DTS_DIR/mysqld.log"
      return 1
    fi
    sleep 0.02
  done
}

_dts_mysql_stop() {
  local pid
  pid=$(_dts_mysql_pid) || return 0
  _dts_mysql_admin shutdown >/dev/null 2>&1 || true
  # mariadb-admin shutdown returns before the server has exited: wait for the process.
  if ! _dts_wait_gone "$pid" "$DTS_TIMEOUT"; then
    _dts_fail "$DTS_NAME: still running ${DTS_TIMEOUT}s after shutdown" "$DTS_DIR/mysqld.log"
    return 1
  fi
}

_dts_mysql_kill() {
  local pid
  pid=$(_dts_mysql_pid) || return 0
  _dts_kill_wait "$pid" KILL
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper (Debian's package): DTS_JAVA, DTS_CLASSPATH. Data in $DTS_DIR/data.
# A server of the ensemble also has DTS_ZK_MYID, DTS_ZK_QUORUM_PORT, DTS_ZK_ELECTION_PORT and
# DTS_ZK_SERVERS (the ensemble's `server.N=...` lines, space separated).

_dts_zk_4lw() { # WORD [PORT] -> the server's answer
  local port=${2:-$DTS_PORT}
  if command -v nc >/dev/null 2>&1; then
    nc -w 2 127.0.0.1 "$port" <<<"$1" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf '%s' "$1" >&3 && timeout 2 cat <&3) 2>/dev/null
  fi
}
_dts_zk_mode() { # [PORT] -> leader, follower, standalone; nothing when it does not serve
  local out
  out=$(_dts_zk_4lw srvr "$@") || true
  [[ $out == *"Mode: "* ]] || return 0
  out=${out#*Mode: }
  echo "${out%%[!a-z]*}"
}
_dts_zookeeper_pid() {
  local pid
  pid=$(_dts_read_pid "$DTS_DIR/zookeeper.pid") && _dts_alive "$pid" && echo "$pid"
}
_dts_zookeeper_running() { _dts_zookeeper_pid >/dev/null; }

_dts_zookeeper_setup() {
  _dts_zookeeper_config && _dts_ctl start
}
_dts_zookeeper_cmd_config() { _dts_zookeeper_config; } # used by the ensemble's setup

_dts_zookeeper_config() {
  local line
  mkdir -p "$DTS_DIR/data"
  {
    if [[ -z ${DTS_ZK_MYID:-} ]]; then
      echo 'tickTime=2000'
    else
      # Quick elections and failure detection; session limits as the standalone server's.
      printf 'tickTime=500\ninitLimit=10\nsyncLimit=5\nmaxSessionTimeout=40000\n'
    fi
    cat <<EOF
dataDir=$DTS_DIR/data
clientPort=$DTS_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
# Throwaway data: no fsync (a killed server still keeps its data, the OS has it).
forceSync=no
# Many tests connect from 127.0.0.1 at once; the default limit is 60 per address.
maxClientCnxns=0
# Let session-expiry tests ask for short sessions.
minSessionTimeout=1000
EOF
    if [[ -n ${DTS_ZK_MYID:-} ]]; then
      for line in $DTS_ZK_SERVERS; do echo "$line"; done
    fi
  } >"$DTS_DIR/zoo.cfg"
  [[ -z ${DTS_ZK_MYID:-} ]] || echo "$DTS_ZK_MYID" >"$DTS_DIR/data/myid"
}

_dts_zookeeper_spawn() {
  _dts_require_free_port || return 1
  if [[ -z ${DTS_ZK_MYID:-} ]]; then
    _dts_detach "$DTS_DIR/zookeeper.pid" "$DTS_DIR/zookeeper.log" \
      "$DTS_JAVA" "-Xmx$DTS_ZK_HEAP" -XX:+UseSerialGC -cp "$DTS_CLASSPATH" \
      org.apache.zookeeper.server.ZooKeeperServerMain "$DTS_DIR/zoo.cfg"
    return
  fi
  _dts_require_free_port "$DTS_ZK_QUORUM_PORT" "$DTS_ZK_ELECTION_PORT" || return 1
  _dts_detach "$DTS_DIR/zookeeper.pid" "$DTS_DIR/zookeeper.log" \
    "$DTS_JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS \
    -cp "$DTS_CLASSPATH" org.apache.zookeeper.server.quorum.QuorumPeerMain "$DTS_DIR/zoo.cfg"
}

_dts_zookeeper_wait() {
  local deadline pid mode want=standalone
  [[ -z ${DTS_ZK_MYID:-} ]] || want='leader follower'
  deadline=$(_dts_deadline)
  while :; do
    if ! pid=$(_dts_read_pid "$DTS_DIR/zookeeper.pid") || ! _dts_alive "$pid"; then
      _dts_fail "$DTS_NAME: ZooKeeper exited during start" "$DTS_DIR/zookeeper.log"
      return 1
    fi
    # `ruok` answers before the server serves; `srvr` shows the mode only once it does.
    # `conf` names the data directory: it must be our server that answers on this port.
    mode=$(_dts_zk_mode)
    if [[ -n $mode && " $want " == *" $mode "* &&
      $(_dts_zk_4lw conf) == *"dataDir=$DTS_DIR/data"* ]]; then
      return 0
    fi
    if _dts_past "$deadline"; then
      _dts_fail "$DTS_NAME: not serving (${want// / or }) after ${DTS_TIMEOUT}s on port $DTS_PORT" \
        "$DTS_DIR/zookeeper.log"
      return 1
    fi
    sleep 0.05
  done
}

_dts_zookeeper_stop() {
  local pid
  pid=$(_dts_zookeeper_pid) || return 0
  _dts_kill_wait "$pid" TERM
}

_dts_zookeeper_kill() {
  local pid
  pid=$(_dts_zookeeper_pid) || return 0
  _dts_kill_wait "$pid" KILL
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper ensemble: a group of zookeeper servers (DTS_PORTS: their client ports, server 1
# first). Server directories in $DTS_DIR/N.

_dts_zookeeper_ensemble_running() { _dts_nodes_any_running; }
_dts_zookeeper_ensemble_stop() { _dts_nodes_each stop; }
_dts_zookeeper_ensemble_kill() { _dts_nodes_each kill; }
_dts_zookeeper_ensemble_cmd_status() { _dts_nodes_status; }
_dts_zookeeper_ensemble_cmd_start() {
  _dts_zookeeper_ensemble_spawn && _dts_zookeeper_ensemble_wait
}
_dts_zookeeper_ensemble_setup() {
  _dts_nodes_each config && _dts_zookeeper_ensemble_cmd_start
}

_dts_zookeeper_ensemble_spawn() { # start the servers that are not running, in parallel
  local ctl pids=() rc=0 p
  for ctl in $DTS_NODE_CTLS; do
    "$ctl" status >/dev/null && continue
    "$ctl" start &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

# _dts_zookeeper_ensemble_modes: one line per server, "PORT MODE" (no MODE when it does not
# serve); exit status 0 when exactly one is leader.
_dts_zookeeper_ensemble_modes() {
  local port mode leaders=0
  for port in $DTS_PORTS; do
    mode=$(_dts_zk_mode "$port")
    [[ $mode != leader ]] || leaders=$((leaders + 1))
    echo "$port $mode"
  done
  ((leaders == 1))
}

# _dts_zookeeper_ensemble_settle all|leader: wait until exactly one server leads and (all)
# every running server serves; print the modes ("PORT MODE" lines).
_dts_zookeeper_ensemble_settle() {
  local deadline modes ctl port mode ok ctls i n logs=()
  read -ra ctls <<<"$DTS_NODE_CTLS"
  deadline=$(_dts_deadline)
  while :; do
    ok=1
    modes=$(_dts_zookeeper_ensemble_modes) || ok=0
    if ((ok)) && [[ $1 == all ]]; then
      i=0
      while read -r port mode; do
        ctl=${ctls[i]}
        i=$((i + 1))
        if [[ -z $mode ]] && "$ctl" status >/dev/null; then ok=0; fi
      done <<<"$modes"
    fi
    if ((ok)); then
      echo "$modes"
      return 0
    fi
    if _dts_past "$deadline"; then
      for ((n = 1; n <= ${#ctls[@]}; n++)); do logs+=("$DTS_DIR/$n/zookeeper.log"); done
      _dts_fail "$DTS_NAME: no settled leader after ${DTS_TIMEOUT}s; client port and mode:
$modes" "${logs[@]}"
      return 1
    fi
    sleep 0.1
  done
}

_dts_zookeeper_ensemble_wait() {
  _dts_nodes_each wait || return 1
  _dts_zookeeper_ensemble_settle all >/dev/null
}

_dts_zookeeper_ensemble_cmd_leader() {
  local modes port mode
  modes=$(_dts_zookeeper_ensemble_settle leader) || return 1
  while read -r port mode; do
    [[ $mode != leader ]] || echo "127.0.0.1:$port"
  done <<<"$modes"
}

_dts_zookeeper_ensemble_cmd_followers() {
  local modes port mode
  modes=$(_dts_zookeeper_ensemble_settle all) || return 1
  while read -r port mode; do
    [[ $mode != follower ]] || echo "127.0.0.1:$port"
  done <<<"$modes"
}

_dts_zookeeper_ensemble_cmd_node() { # N ACTION
  local n=${1:-} action=${2:-} ctl port mode rc=0
  if (($# != 2)) || [[ ! $n =~ ^[1-9]$ ]]; then
    echo "usage: $0 node N kill|stop|start|status   (N = 1..$(wc -w <<<"$DTS_PORTS"))" >&2
    return 2
  fi
  ctl=$(_dts_nodes_ctl number "$n") || return 2
  case $action in
    kill | stop | start) "$ctl" "$action" ;;
    status)
      "$ctl" status >/dev/null || rc=$?
      if ((rc != 0)); then
        "$ctl" status || true
        return "$rc"
      fi
      port=$(_dts_ctl_port "$ctl")
      mode=$(_dts_zk_mode "$port")
      echo "$DTS_NAME server $n: running on 127.0.0.1:$port as ${mode:-a server not serving yet}"
      ;;
    *)
      echo "usage: $0 node N kill|stop|start|status" >&2
      return 2
      ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Packages

_dts_want() { [[ " $_DTS_WANT " == *" $1 "* ]]; }
_dts_have() { command -v "$1" >/dev/null 2>&1; }

_dts_find_pgbin() {
  local d
  for d in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/psql ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

_dts_apt_install() { # PACKAGE...
  local created=0 rc=0
  if [[ ! -e $_DTS_POLICY_RC ]]; then
    # Keep Debian from starting the packages' own services (on the standard ports).
    printf '#!/bin/sh\n# temporary, from durable scripts/test-servers.sh\nexit 101\n' >"$_DTS_POLICY_RC"
    chmod 755 "$_DTS_POLICY_RC"
    created=1
    _DTS_REMOVE_POLICY_RC=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "$@" >&2 || rc=$?
  if ((created)); then
    rm -f "$_DTS_POLICY_RC"
    _DTS_REMOVE_POLICY_RC=
  fi
  return $rc
}

_dts_ensure_packages() {
  local need=() optional=()
  if _dts_want redis || _dts_want redis-cluster; then
    _dts_have redis-server && _dts_have redis-cli || need+=(redis-server redis-tools)
  fi
  if _dts_want postgres; then _dts_find_pgbin >/dev/null || need+=(postgresql); fi
  if _dts_want mysql; then
    _dts_have mariadbd && _dts_have mariadb-install-db || need+=(mariadb-server)
    _dts_have mariadb && _dts_have mariadb-admin || need+=(mariadb-client)
  fi
  if _dts_want zookeeper || _dts_want zookeeper-ensemble; then
    [[ -r /usr/share/java/zookeeper.jar ]] && _dts_have java || need+=(zookeeper)
    _dts_have nc || need+=(netcat-openbsd)
  fi
  [[ -x /usr/bin/chromium ]] || optional+=(chromium)
  [[ -x /usr/bin/chromedriver ]] || optional+=(chromium-driver)
  ((${#need[@]} + ${#optional[@]})) || return 0

  if [[ $(id -u) != 0 || ${DURABLE_TEST_NO_INSTALL:-} == 1 ]] || ! _dts_have apt-get; then
    ((${#optional[@]} == 0)) || _dts_warn "not installed: ${optional[*]} (browser tests need them)"
    if ((${#need[@]})); then
      _dts_fail "missing packages: ${need[*]}; install them with:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}"
      return 1
    fi
    return 0
  fi
  _dts_log "installing missing packages: ${need[*]} ${optional[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -o DPkg::Lock::Timeout=300 >&2 ||
    _dts_warn "apt-get update failed; trying to install anyway"
  if ((${#need[@]})); then
    if ! _dts_apt_install "${need[@]}"; then
      _dts_fail "apt-get install ${need[*]} failed"
      return 1
    fi
  fi
  if ((${#optional[@]})); then
    _dts_apt_install "${optional[@]}" || _dts_warn "could not install ${optional[*]}"
  fi
}

# ---------------------------------------------------------------------------------------------
# Ports

# _dts_alloc_ports N: reserve N free ports; the result is in the array _DTS_PORTS.
_dts_alloc_ports() {
  local n=$1 min=${DURABLE_TEST_PORT_MIN:-20000} max=${DURABLE_TEST_PORT_MAX:-30999}
  local range start i p f owner lock hex
  local -A used=()
  _DTS_PORTS=()
  if [[ ! -d $_DTS_PORT_DIR ]]; then
    mkdir -p "$_DTS_PORT_DIR" && chmod 1777 "$_DTS_PORT_DIR" 2>/dev/null
  fi
  if [[ ! -e $_DTS_PORT_DIR/.lock ]]; then
    { : >>"$_DTS_PORT_DIR/.lock" && chmod 666 "$_DTS_PORT_DIR/.lock"; } 2>/dev/null
  fi
  exec {lock}<"$_DTS_PORT_DIR/.lock" || { _dts_fail "cannot open $_DTS_PORT_DIR/.lock"; return 1; }
  if ! flock -w 30 "$lock"; then
    exec {lock}<&-
    _dts_fail "could not lock $_DTS_PORT_DIR/.lock within 30 s"
    return 1
  fi
  while read -r hex; do used[$((16#$hex))]=1; done < <(_dts_used_ports)
  range=$((max - min + 1))
  start=$(((RANDOM * 32768 + RANDOM) % range))
  for ((i = 0; i < range && ${#_DTS_PORTS[@]} < n; i++)); do
    p=$((min + (start + i) % range))
    f=$_DTS_PORT_DIR/$p
    if [[ -e $f ]]; then
      owner=$(_dts_read_pid "$f") || owner=
      _dts_alive "$owner" && continue    # reserved by a live run
      rm -f "$f" 2>/dev/null || continue # stale, but not ours to remove
    fi
    [[ -z ${used[$p]:-} ]] || continue
    echo "$_DTS_OWNER" >"$f" || continue
    echo "$p" >>"$_DTS_TMP/ports"
    _DTS_PORTS+=("$p")
  done
  exec {lock}<&-
  if ((${#_DTS_PORTS[@]} < n)); then
    _dts_fail "found only ${#_DTS_PORTS[@]} of $n free ports in $min-$max"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Start and stop everything

# _dts_stop_all TMPDIR: stop every server registered there, release its ports, remove the dir.
_dts_stop_all() {
  local tmp=$1 ctl pids=() p owner
  [[ -d $tmp ]] || return 0
  if [[ -f $tmp/servers ]]; then
    while read -r ctl; do
      [[ -x $ctl ]] || continue
      "$ctl" teardown &
      pids+=($!)
    done <"$tmp/servers"
    for p in "${pids[@]}"; do wait "$p" || true; done
  fi
  owner=$(_dts_read_pid "$tmp/owner") || owner=
  if [[ -f $tmp/ports && -n $owner ]]; then
    while read -r p; do
      if [[ $(_dts_read_pid "$_DTS_PORT_DIR/$p") == "$owner" ]]; then rm -f "$_DTS_PORT_DIR/$p"; fi
    done <"$tmp/ports"
  fi
  if [[ ${DURABLE_TEST_KEEP_TMP:-} == 1 ]]; then
    _dts_log "kept $tmp (DURABLE_TEST_KEEP_TMP=1)"
  else
    rm -rf "$tmp"
  fi
}

durable_servers_stop() {
  local t0 c
  t0=$(_dts_now_ms)
  if [[ -n ${_DTS_REMOVE_POLICY_RC:-} ]]; then rm -f "$_DTS_POLICY_RC"; fi
  if declare -p _DTS_JOBS >/dev/null 2>&1; then # an interrupted start: end its background jobs
    for c in "${_DTS_JOBS[@]}"; do kill -TERM -- "-$c" 2>/dev/null || true; done
    for c in "${_DTS_JOBS[@]}"; do wait "$c" 2>/dev/null || true; done
    _DTS_JOBS=()
  fi
  [[ -n ${_DTS_TMP:-} && -d $_DTS_TMP ]] || return 0
  _dts_stop_all "$_DTS_TMP"
  _dts_log "servers stopped in $(_dts_elapsed "$t0") s"
  _DTS_TMP=
}

_dts_on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  durable_servers_stop || true
  exit "$rc"
}

_dts_on_signal() {
  local sig=$1 c
  trap - INT TERM HUP
  _dts_log "got SIG$sig, stopping"
  if [[ -n ${_DTS_CHILD:-} ]]; then
    c=$_DTS_CHILD
    kill -TERM -- "-$c" 2>/dev/null || kill -TERM "$c" 2>/dev/null || true
    wait "$c" 2>/dev/null || true
  fi
  case $sig in INT) exit 130 ;; HUP) exit 129 ;; *) exit 143 ;; esac
}

_dts_register() { echo "$1" >>"$_DTS_TMP/servers"; }
_dts_ctl_port() { sed -n 's/^DTS_PORT=//p' "$1"; }

# _dts_bg NAME CTL: run the server's first start (`setup`) in the background, in its own process
# group (so that an interrupted start can end it with all its children); _dts_join NAME waits.
_dts_bg() {
  setsid "$2" setup &
  _DTS_JOBS[$1]=$!
}
_dts_join() {
  local rc=0
  wait "${_DTS_JOBS[$1]}" || rc=$?
  unset "_DTS_JOBS[$1]"
  return $rc
}

durable_servers_start() {
  local t0 base s ok=1 pgbin java='' classpath node_ctls=() i n port ports=() urls
  local zk_ports=() zk_ctls=() zk_servers=()
  local pg_user='' mysql_user=''
  t0=$(_dts_now_ms)
  _DTS_WANT=${DURABLE_TEST_SERVERS:-$_DTS_ALL_SERVERS}
  _DTS_WANT=" ${_DTS_WANT//,/ } "
  _DTS_WANT=${_DTS_WANT// cluster / redis-cluster }
  for s in $_DTS_WANT; do
    if [[ " $_DTS_ALL_SERVERS " != *" $s "* ]]; then
      _dts_fail "unknown server '$s' in DURABLE_TEST_SERVERS (known: $_DTS_ALL_SERVERS)"
      return 1
    fi
  done
  _DTS_TIMEOUT=${DURABLE_TEST_START_TIMEOUT:-60}
  _DTS_OWNER=$$
  declare -gA _DTS_JOBS=()
  trap _dts_on_exit EXIT
  trap '_dts_on_signal INT' INT
  trap '_dts_on_signal TERM' TERM
  trap '_dts_on_signal HUP' HUP

  _dts_ensure_packages || return 1

  # One temporary directory for everything; short and plain (Unix socket paths are limited).
  base=${TMPDIR:-/tmp}
  [[ $base =~ ^/[A-Za-z0-9_./-]*$ && ${#base} -le 40 ]] || base=/tmp
  _DTS_TMP=$(mktemp -d "$base/durable-test.XXXXXXXX") || { _dts_fail "mktemp failed"; return 1; }
  chmod 711 "$_DTS_TMP" # the postgres and mysql users must reach their subdirectories
  echo "$_DTS_OWNER" >"$_DTS_TMP/owner"
  : >"$_DTS_TMP/servers"
  : >"$_DTS_TMP/ports"
  cp "${BASH_SOURCE[0]}" "$_DTS_TMP/lib.sh"
  # Watchdog: if this shell dies without cleaning up (SIGKILL), stop everything anyway.
  setsid bash "$_DTS_TMP/lib.sh" --watchdog "$_DTS_OWNER" "$_DTS_TMP" </dev/null >/dev/null 2>&1 &
  if [[ $(id -u) == 0 ]]; then # root may not run these two itself
    pg_user=postgres
    mysql_user=mysql
  fi

  # --- reserve the ports; write each server's control script; run their first starts in parallel
  local nports=0 next=0
  for s in $_DTS_WANT; do
    case $s in
      redis-cluster) ((nports += 12)) ;;     # six client ports, six cluster bus ports
      zookeeper-ensemble) ((nports += 9)) ;; # three client, quorum and election ports each
      *) ((nports += 1)) ;;
    esac
  done
  _dts_alloc_ports "$nports" || return 1
  local all_ports=("${_DTS_PORTS[@]}")
  if _dts_want postgres; then
    pgbin=$(_dts_find_pgbin) || { _dts_fail "PostgreSQL binaries not found"; return 1; }
    _DTS_PORTS=("${all_ports[next]}")
    ((next += 1))
    mkdir -m 700 "$_DTS_TMP/postgres"
    [[ -z $pg_user ]] || chown "$pg_user:" "$_DTS_TMP/postgres"
    _DTS_CTL_postgres=$(_dts_write_ctl postgres postgres DTS_PORT="${_DTS_PORTS[0]}" \
      DTS_DIR="$_DTS_TMP/postgres" DTS_PGBIN="$pgbin" DTS_RUNAS="$pg_user" \
      DTS_DATABASE=durable_test)
    _dts_register "$_DTS_CTL_postgres"
    _dts_bg postgres "$_DTS_CTL_postgres"
  fi
  if _dts_want mysql; then
    _DTS_PORTS=("${all_ports[next]}")
    ((next += 1))
    mkdir -m 700 "$_DTS_TMP/mysql"
    [[ -z $mysql_user ]] || chown "$mysql_user:" "$_DTS_TMP/mysql"
    _DTS_CTL_mysql=$(_dts_write_ctl mysql mysql DTS_PORT="${_DTS_PORTS[0]}" \
      DTS_DIR="$_DTS_TMP/mysql" DTS_RUNAS="$mysql_user" DTS_DATABASE=durable_test)
    _dts_register "$_DTS_CTL_mysql"
    _dts_bg mysql "$_DTS_CTL_mysql"
  fi
  if _dts_want zookeeper || _dts_want zookeeper-ensemble; then
    java=$(command -v java) || { _dts_fail "java not found (needed by ZooKeeper)"; return 1; }
    classpath=/usr/share/java/zookeeper.jar
    [[ ! -r /usr/share/java/slf4j-simple.jar ]] || classpath+=:/usr/share/java/slf4j-simple.jar
  fi
  if _dts_want zookeeper; then
    _DTS_PORTS=("${all_ports[next]}")
    ((next += 1))
    mkdir -m 700 "$_DTS_TMP/zookeeper"
    _DTS_CTL_zookeeper=$(_dts_write_ctl zookeeper zookeeper DTS_PORT="${_DTS_PORTS[0]}" \
      DTS_DIR="$_DTS_TMP/zookeeper" DTS_JAVA="$java" DTS_CLASSPATH="$classpath" \
      DTS_ZK_HEAP="${DURABLE_TEST_ZOOKEEPER_HEAP:-256m}")
    _dts_register "$_DTS_CTL_zookeeper"
    _dts_bg zookeeper "$_DTS_CTL_zookeeper"
  fi
  if _dts_want zookeeper-ensemble; then
    _DTS_PORTS=("${all_ports[@]:next:9}") # client ports, quorum ports, election ports
    ((next += 9))
    mkdir -m 700 "$_DTS_TMP/zookeeper-ensemble"
    for n in 1 2 3; do
      zk_ports+=("${_DTS_PORTS[n - 1]}")
      zk_servers+=("server.$n=127.0.0.1:${_DTS_PORTS[n + 2]}:${_DTS_PORTS[n + 5]}")
    done
    for n in 1 2 3; do
      mkdir -m 700 "$_DTS_TMP/zookeeper-ensemble/$n"
      zk_ctls+=("$(_dts_write_ctl "zookeeper-ensemble-$n" zookeeper DTS_PORT="${zk_ports[n - 1]}" \
        DTS_DIR="$_DTS_TMP/zookeeper-ensemble/$n" DTS_JAVA="$java" DTS_CLASSPATH="$classpath" \
        DTS_ZK_MYID="$n" DTS_ZK_QUORUM_PORT="${_DTS_PORTS[n + 2]}" \
        DTS_ZK_ELECTION_PORT="${_DTS_PORTS[n + 5]}" DTS_ZK_SERVERS="${zk_servers[*]}")")
    done
    _DTS_CTL_ensemble=$(_dts_write_ctl zookeeper-ensemble zookeeper-ensemble \
      DTS_PORTS="${zk_ports[*]}" DTS_NODE_CTLS="${zk_ctls[*]}" DTS_DIR="$_DTS_TMP/zookeeper-ensemble")
    _dts_register "$_DTS_CTL_ensemble"
    _dts_bg ensemble "$_DTS_CTL_ensemble"
  fi
  if _dts_want redis; then
    _DTS_PORTS=("${all_ports[next]}")
    ((next += 1))
    mkdir -m 700 "$_DTS_TMP/redis"
    _DTS_CTL_redis=$(_dts_write_ctl redis redis DTS_PORT="${_DTS_PORTS[0]}" DTS_DIR="$_DTS_TMP/redis")
    _dts_register "$_DTS_CTL_redis"
    _dts_bg redis "$_DTS_CTL_redis"
  fi
  if _dts_want redis-cluster; then
    _DTS_PORTS=("${all_ports[@]:next:12}") # six client ports, six cluster bus ports
    ((next += 12))
    mkdir -m 700 "$_DTS_TMP/redis-cluster"
    for i in 0 1 2 3 4 5; do # 0-2 become the masters, 3-5 their replicas
      port=${_DTS_PORTS[i]}
      mkdir -m 700 "$_DTS_TMP/redis-cluster/$port"
      node_ctls+=("$(_dts_write_ctl "redis-cluster-$port" redis DTS_PORT="$port" \
        DTS_BUS_PORT="${_DTS_PORTS[i + 6]}" DTS_DIR="$_DTS_TMP/redis-cluster/$port")")
      ports+=("$port")
    done
    _DTS_CTL_cluster=$(_dts_write_ctl redis-cluster redis-cluster DTS_PORTS="${ports[*]}" \
      DTS_NODE_CTLS="${node_ctls[*]}" DTS_DIR="$_DTS_TMP/redis-cluster")
    _dts_register "$_DTS_CTL_cluster"
    _dts_bg cluster "$_DTS_CTL_cluster"
  fi

  # --- collect them ---
  if _dts_want redis; then
    if _dts_join redis; then
      port=$(_dts_ctl_port "$_DTS_CTL_redis")
      export DURABLE_TEST_REDIS_URL="redis://127.0.0.1:$port/"
      export DURABLE_TEST_REDIS_CTL=$_DTS_CTL_redis
    else ok=0; fi
  fi
  if _dts_want redis-cluster; then
    if _dts_join cluster; then
      urls=
      for port in "${ports[@]:0:3}"; do urls+="${urls:+,}redis://127.0.0.1:$port/"; done
      export DURABLE_TEST_REDIS_CLUSTER_URLS=$urls
      for port in "${ports[@]:3}"; do urls+=",redis://127.0.0.1:$port/"; done
      export DURABLE_TEST_REDIS_CLUSTER_ALL_URLS=$urls
      export DURABLE_TEST_REDIS_CLUSTER_CTL=$_DTS_CTL_cluster
    else ok=0; fi
  fi
  if _dts_want postgres; then
    if _dts_join postgres; then
      port=$(_dts_ctl_port "$_DTS_CTL_postgres")
      export DURABLE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/durable_test"
      export DURABLE_TEST_POSTGRES_CTL=$_DTS_CTL_postgres
    else ok=0; fi
  fi
  if _dts_want mysql; then
    if _dts_join mysql; then
      port=$(_dts_ctl_port "$_DTS_CTL_mysql")
      export DURABLE_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/durable_test"
      export DURABLE_TEST_MYSQL_CTL=$_DTS_CTL_mysql
    else ok=0; fi
  fi
  if _dts_want zookeeper; then
    if _dts_join zookeeper; then
      port=$(_dts_ctl_port "$_DTS_CTL_zookeeper")
      export DURABLE_TEST_ZOOKEEPER="127.0.0.1:$port"
      export DURABLE_TEST_ZOOKEEPER_CTL=$_DTS_CTL_zookeeper
    else ok=0; fi
  fi
  if _dts_want zookeeper-ensemble; then
    if _dts_join ensemble; then
      urls=
      for port in "${zk_ports[@]}"; do urls+="${urls:+,}127.0.0.1:$port"; done
      export DURABLE_TEST_ZOOKEEPER_ENSEMBLE=$urls
      export DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL=$_DTS_CTL_ensemble
    else ok=0; fi
  fi
  if ((!ok)); then
    _dts_fail "could not start the test servers (DURABLE_TEST_KEEP_TMP=1 keeps their logs)"
    return 1
  fi
  if [[ -x /usr/bin/chromium && -z ${DURABLE_TEST_CHROMIUM:-} ]]; then
    export DURABLE_TEST_CHROMIUM=/usr/bin/chromium
  fi
  if [[ -x /usr/bin/chromedriver && -z ${DURABLE_TEST_CHROMEDRIVER:-} ]]; then
    export DURABLE_TEST_CHROMEDRIVER=/usr/bin/chromedriver
  fi
  {
    durable_servers_env
    echo 'export DURABLE_TEST_REQUIRE=1'
  } >"$_DTS_TMP/env.sh"
  _dts_log "servers ready in $(_dts_elapsed "$t0") s (in $_DTS_TMP):"
  durable_servers_env | sed 's/^export /  /' >&2
}

# Print the variables as `export NAME=VALUE` lines.
durable_servers_env() {
  local v
  for v in DURABLE_TEST_REDIS_URL DURABLE_TEST_REDIS_CTL DURABLE_TEST_REDIS_CLUSTER_URLS \
    DURABLE_TEST_REDIS_CLUSTER_ALL_URLS DURABLE_TEST_REDIS_CLUSTER_CTL DURABLE_TEST_POSTGRES_URL \
    DURABLE_TEST_POSTGRES_CTL DURABLE_TEST_MYSQL_URL DURABLE_TEST_MYSQL_CTL \
    DURABLE_TEST_ZOOKEEPER DURABLE_TEST_ZOOKEEPER_CTL DURABLE_TEST_ZOOKEEPER_ENSEMBLE \
    DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL DURABLE_TEST_CHROMIUM DURABLE_TEST_CHROMEDRIVER; do
    [[ -n ${!v:-} ]] || continue
    if [[ ${!v} =~ ^[A-Za-z0-9_./:,@=+-]+$ ]]; then
      printf 'export %s=%s\n' "$v" "${!v}"
    else
      printf 'export %s=%q\n' "$v" "${!v}"
    fi
  done
}

# durable_servers_run CMD [ARG...]: run the program CMD in its own session, so that Ctrl-C or
# SIGTERM reach this shell, which then stops CMD's whole process group and the servers.
# Returns CMD's exit status.
durable_servers_run() {
  local rc=0
  setsid "$@" &
  _DTS_CHILD=$!
  wait "$_DTS_CHILD" || rc=$?
  _DTS_CHILD=
  return $rc
}

# ---------------------------------------------------------------------------------------------
# Entry point when executed rather than sourced

_dts_watchdog() { # OWNER_PID TMPDIR
  local owner=$1 tmp=$2
  while [[ -d $tmp ]] && _dts_alive "$owner"; do sleep 1; done
  [[ -d $tmp ]] || return 0
  _dts_stop_all "$tmp"
}

_dts_main() {
  case ${1:-} in
    --watchdog)
      _dts_watchdog "$2" "$3"
      ;;
    -h | --help)
      sed -n '4,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      ;;
    --)
      shift
      if (($# == 0)); then
        echo "usage: $0 -- COMMAND [ARG...]" >&2
        exit 2
      fi
      durable_servers_start || exit 1
      local rc=0
      durable_servers_run "$@" || rc=$?
      exit "$rc"
      ;;
    "" | --servers-only)
      durable_servers_start || exit 1
      echo "# Test servers are running. In another shell: source $_DTS_TMP/env.sh"
      echo "# (or paste the lines below), then run cargo test. Ctrl-C here stops the servers."
      cat "$_DTS_TMP/env.sh"
      while :; do # short sleeps: none outlives this shell for long, even after a SIGKILL
        sleep 5 &
        _DTS_CHILD=$!
        wait "$_DTS_CHILD" || true
      done
      ;;
    *)
      echo "usage: $0 [--servers-only] | -- COMMAND [ARG...] | --help" >&2
      exit 2
      ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  _dts_main "$@"
fi
