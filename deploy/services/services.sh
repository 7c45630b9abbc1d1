#!/usr/bin/env bash
# Start, stop and report the real services Kaliko talks to: etcd, Mosquitto and a Kafka broker.
#
# Owns: the Debian packages these need, the generated configs, the processes, their PID files and
#       logs under .run/services/, and the Kafka jars cache .cache/kafka-libs/ (from pom.xml).
# Does not own: the project's venv (`make venv`), the Kafka topics other than kaliko.node-diffs.
# Invariants: everything listens on 127.0.0.1 only; `up` is idempotent (a running, answering
#   service is left alone) and returns only when every service answers, or exits non-zero naming
#   the service and its log file; `down` sends SIGTERM, waits, then SIGKILL; one `up`/`down` at a
#   time (flock), since several people share this machine.
#
# Usage: services.sh up|down|status
#   env: KALIKO_DIFF_PARTITIONS (default 64), KALIKO_SERVICES_TIMEOUT (seconds, default 120),
#        KALIKO_PYTHON (default .venv/bin/python), JAVA (default java)
#
#   service    port(s)                        log
#   etcd       2379 client, 2380 peer         .run/services/etcd.log
#   mosquitto  1883                           .run/services/mosquitto.log
#   kafka      9092 PLAINTEXT, 9093 CONTROLLER .run/services/kafka.log (+ kafka.out: JVM stdout)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/deploy/services"
RUN="$ROOT/.run/services"
LIBS="$ROOT/.cache/kafka-libs"
PY="${KALIKO_PYTHON:-$ROOT/.venv/bin/python}"
JAVA="${JAVA:-java}"
TIMEOUT="${KALIKO_SERVICES_TIMEOUT:-120}"
STOP_TIMEOUT=30
SERVICES=(etcd mosquitto kafka)

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Stop and disable a daemon that the package's maintainer scripts may have started, so the ports
# are ours. Only called right after we installed that package.
stop_distro_daemon() {
  local unit="$1"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$unit" ]; then
    "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
    update-rc.d "$unit" disable >/dev/null 2>&1 || true
  fi
}

ensure_packages() {
  local want=() pkg
  for pkg in etcd-server mosquitto nftables iproute2 python3-nftables maven curl; do
    deb_installed "$pkg" || want+=("$pkg")
  done
  command -v "$JAVA" >/dev/null || want+=(openjdk-17-jre-headless)
  [ ${#want[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${want[*]}); run as root or install them"
  say "installing ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q --no-install-recommends "${want[@]}")
  if ! "${apt[@]}" >"$RUN/apt.log" 2>&1; then
    say "apt-get install failed; running apt-get update and retrying"
    apt-get update -q >>"$RUN/apt.log" 2>&1 || die "apt-get update failed (see $RUN/apt.log)"
    "${apt[@]}" >>"$RUN/apt.log" 2>&1 || die "apt-get install ${want[*]} failed (see $RUN/apt.log)"
  fi
  for pkg in "${want[@]}"; do
    case "$pkg" in
      etcd-server) stop_distro_daemon etcd ;;
      mosquitto) stop_distro_daemon mosquitto ;;
    esac
  done
}

# Kafka jars from Maven Central; the marker records the pom's hash so an edited pom refetches.
ensure_kafka_libs() {
  local want have=""
  want="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
  [ -f "$LIBS/.pom.sha256" ] && have="$(cat "$LIBS/.pom.sha256")"
  [ "$want" = "$have" ] && return 0
  say "fetching Kafka jars with Maven into $LIBS"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$LIBS")"
  if ! mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$tmp" \
      >"$RUN/mvn.log" 2>&1; then
    rm -rf "$tmp"
    die "mvn could not fetch the Kafka jars (see $RUN/mvn.log)"
  fi
  echo "$want" >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

# ---------------------------------------------------------------- processes

pidfile() { echo "$RUN/$1.pid"; }

# The pid of a running service, or nothing. Checks the command line so a recycled pid is not ours.
service_pid() {
  local name="$1" pid pattern
  [ -f "$(pidfile "$name")" ] || return 0
  pid="$(cat "$(pidfile "$name")")"
  case "$name" in
    etcd) pattern='etcd' ;;
    mosquitto) pattern='mosquitto' ;;
    kafka) pattern='kafka.Kafka' ;;
  esac
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$pattern"; then
    echo "$pid"
  fi
}

# service_pid for a service just spawned: until the child execs, its command line is still this
# shell's, so one miss is looked at again before the service counts as exited.
started_pid() {
  local pid
  pid="$(service_pid "$1")"
  if [ -z "$pid" ]; then
    sleep 0.2
    pid="$(service_pid "$1")"
  fi
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Refuse to start when someone else holds one of our ports; name the holder.
require_free_ports() {
  local name="$1" port
  shift
  for port in "$@"; do
    if port_open "$port"; then
      die "$name: 127.0.0.1:$port is already taken by another process: $(ss -ltnpH "sport = :$port" 2>/dev/null | head -1)"
    fi
  done
}

# Start a command detached from this shell, stdout/stderr to a log, pid to the pid file.
spawn() {
  local name="$1" log="$2"
  shift 2
  setsid "$@" >>"$log" 2>&1 </dev/null 9>&- &
  echo $! >"$(pidfile "$name")"
}

# Poll CHECK until it succeeds, the process dies, or the deadline passes.
wait_for() {
  local name="$1" log="$2" check="$3" deadline=$((SECONDS + TIMEOUT))
  until $check; do
    [ -n "$(started_pid "$name")" ] || die "$name exited during startup; last lines of $log:
$(tail -n 20 "$log" 2>/dev/null)"
    [ $SECONDS -lt $deadline ] || die "$name did not answer within ${TIMEOUT}s (see $log)"
    sleep 0.2
  done
}

etcd_healthy() { curl -fsS --max-time 2 http://127.0.0.1:2379/health 2>/dev/null | grep -q '"health":"true"'; }
mosquitto_healthy() { port_open 1883; }

start_etcd() {
  if [ -n "$(service_pid etcd)" ] && etcd_healthy; then return 0; fi
  if [ -z "$(service_pid etcd)" ]; then
    require_free_ports etcd 2379 2380
    say "starting etcd"
    spawn etcd "$RUN/etcd.log" etcd --name kaliko --data-dir "$RUN/etcd" \
      --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster kaliko=http://127.0.0.1:2380 --initial-cluster-state new \
      --listen-metrics-urls http://127.0.0.1:2381 --logger zap --log-outputs stderr
  fi
  wait_for etcd "$RUN/etcd.log" etcd_healthy
}

start_mosquitto() {
  if [ -n "$(service_pid mosquitto)" ] && mosquitto_healthy; then return 0; fi
  if [ -z "$(service_pid mosquitto)" ]; then
    require_free_ports mosquitto 1883
    cat >"$RUN/mosquitto.conf" <<EOF
# Generated by deploy/services/services.sh; edits are overwritten.
listener 1883 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
user root
EOF
    say "starting mosquitto"
    spawn mosquitto "$RUN/mosquitto.log" mosquitto -c "$RUN/mosquitto.conf"
  fi
  wait_for mosquitto "$RUN/mosquitto.log" mosquitto_healthy
}

write_kafka_config() {
  mkdir -p "$RUN/kafka"
  cat >"$RUN/kafka/server.properties" <<EOF
# Generated by deploy/services/services.sh; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN/kafka/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$RUN/kafka/log4j2.properties" <<EOF
# Generated by deploy/services/services.sh; edits are overwritten.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $RUN/kafka.log
appender.file.filePattern = $RUN/kafka.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
EOF
}

KAFKA_JAVA=("$JAVA" -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$RUN/kafka/log4j2.properties" -Dkafka.logs.dir="$RUN" -cp "$LIBS/*")

format_kafka_storage() {
  [ -f "$RUN/kafka/data/meta.properties" ] && return 0
  local cluster_id
  cluster_id="$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid 2>>"$RUN/kafka.out" | tail -1)"
  [ -n "$cluster_id" ] || die "kafka: StorageTool random-uuid failed (see $RUN/kafka.out)"
  say "formatting Kafka storage (cluster $cluster_id)"
  "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$RUN/kafka/server.properties" \
    >>"$RUN/kafka.out" 2>&1 || die "kafka: storage format failed (see $RUN/kafka.out)"
}

kafka_ready() {
  local pid
  pid="$(started_pid kafka)"
  [ -n "$pid" ] || die "kafka exited during startup; last lines of $RUN/kafka.log:
$(tail -n 20 "$RUN/kafka.log" 2>/dev/null)"
  "$PY" "$HERE/kafka_ready.py" --bootstrap 127.0.0.1:9092 --timeout "$TIMEOUT" --pid "$pid" \
    || die "kafka did not become ready (see $RUN/kafka.log and $RUN/kafka.out)"
}

start_kafka() {
  [ -x "$PY" ] || die "kafka: $PY not found; run 'make venv' first (its aiokafka checks the broker)"
  if [ -z "$(service_pid kafka)" ]; then
    require_free_ports kafka 9092 9093
    ensure_kafka_libs
    write_kafka_config
    format_kafka_storage
    say "starting kafka"
    local started=$SECONDS
    spawn kafka "$RUN/kafka.out" "${KAFKA_JAVA[@]}" kafka.Kafka "$RUN/kafka/server.properties"
    kafka_ready
    say "kafka answered after $((SECONDS - started))s"
  else
    kafka_ready
  fi
}

stop_one() {
  local name="$1" pid waited=0
  pid="$(service_pid "$name")"
  if [ -z "$pid" ]; then
    rm -f "$(pidfile "$name")"
    return 0
  fi
  say "stopping $name (pid $pid)"
  # spawn() used setsid, so the pid leads its own process group: signal the whole group.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ $waited -ge $((STOP_TIMEOUT * 5)) ]; then
      say "$name did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  rm -f "$(pidfile "$name")"
}

status_one() {
  local name="$1" pid healthy
  pid="$(service_pid "$name")"
  if [ -z "$pid" ]; then
    printf '%-10s stopped\n' "$name"
    return 1
  fi
  case "$name" in
    etcd) etcd_healthy && healthy="answering on 127.0.0.1:2379" || healthy="NOT answering on 127.0.0.1:2379" ;;
    mosquitto) mosquitto_healthy && healthy="answering on 127.0.0.1:1883" || healthy="NOT answering on 127.0.0.1:1883" ;;
    kafka) port_open 9092 && healthy="listening on 127.0.0.1:9092" || healthy="NOT listening on 127.0.0.1:9092" ;;
  esac
  printf '%-10s running  pid %-8s %s  log %s\n' "$name" "$pid" "$healthy" "$RUN/$name.log"
  case "$healthy" in NOT*) return 1 ;; esac
}

# ---------------------------------------------------------------- commands

with_lock() {
  exec 9>"$RUN/.lock"
  flock -w 300 9 || die "another services.sh holds $RUN/.lock for over 300s"
  "$@"
}

cmd_up() {
  local started=$SECONDS
  ensure_packages
  start_etcd
  start_mosquitto
  start_kafka
  say "all up in $((SECONDS - started))s (etcd 127.0.0.1:2379, mosquitto 127.0.0.1:1883, kafka 127.0.0.1:9092)"
}

cmd_down() {
  stop_one kafka
  stop_one mosquitto
  stop_one etcd
}

cmd_status() {
  local rc=0 name
  for name in "${SERVICES[@]}"; do status_one "$name" || rc=3; done
  return $rc
}

mkdir -p "$RUN"
case "${1:-}" in
  up) with_lock cmd_up ;;
  down) with_lock cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 up|down|status" ;;
esac
