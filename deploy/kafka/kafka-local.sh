#!/usr/bin/env bash
# Runs Apache Kafka as a plain local JVM process (no container): one KRaft node
# that is broker and controller, every listener on 127.0.0.1, settings suited
# to tests (replication factor 1, no initial rebalance delay, no topic
# auto-creation, 4 partitions for each internal topic). For development and
# benchmarks.
#
#   deploy/kafka/kafka-local.sh start    # prints 127.0.0.1:9092 once the broker answers
#   deploy/kafka/kafka-local.sh status   # exit 0 running, 3 not running
#   deploy/kafka/kafka-local.sh stop
#
# start is idempotent: with the broker already up it only prints the address.
# The data survive a stop; delete the data directory to start afresh.
#
# Environment (defaults in brackets):
#   ASYNCINFER_KAFKA_PORT             PLAINTEXT listener port [9092]
#   ASYNCINFER_KAFKA_CONTROLLER_PORT  controller listener port [PORT+1]
#   ASYNCINFER_KAFKA_DATA             data, config, log and pid file [$ASYNCINFER_CACHE/kafka-local]
#   ASYNCINFER_KAFKA_START_TIMEOUT    seconds to wait for the broker [90]
#   KAFKA_HEAP_OPTS                   JVM heap [-Xmx512m -Xms256m]
# and those of lib.sh (ASYNCINFER_KAFKA_VERSION, ASYNCINFER_CACHE).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

port=${ASYNCINFER_KAFKA_PORT:-9092}
cport=${ASYNCINFER_KAFKA_CONTROLLER_PORT:-$((port + 1))}
data=${ASYNCINFER_KAFKA_DATA:-$ASYNCINFER_CACHE/kafka-local}
timeout=${ASYNCINFER_KAFKA_START_TIMEOUT:-90}
addr=127.0.0.1:$port
pidfile=$data/kafka.pid
logfile=$data/kafka.log

# running prints the broker's pid when the pid file names a live broker of ours
# (the pid may have been reused by another process since).
running() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[ -n "$pid" ] && grep -qaE 'kafka\.Kafka|run-broker\.sh' "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

start() {
	local pid
	if pid=$(running); then
		"$here/probe.sh" "$addr" >&2 || die "pid $pid is running but $addr does not answer (log: $logfile)"
		echo "$addr"
		return
	fi
	port_open "$port" && die "127.0.0.1:$port is already taken by another process"
	port_open "$cport" && die "controller port 127.0.0.1:$cport is already taken by another process"

	local libs
	libs=$("$here/fetch-kafka.sh")
	"${JAVA_HOME:+$JAVA_HOME/bin/}java" -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || die "the Kafka $ASYNCINFER_KAFKA_VERSION broker needs Java 17 or newer on PATH"

	mkdir -p "$data"
	[ -s "$data/cluster.id" ] || new_cluster_id >"$data/cluster.id"
	[ -f "$logfile" ] && mv -f "$logfile" "$logfile.1"

	# The same entry point as the container image, fed the same variables a
	# test gives the image. env -i keeps the caller's own KAFKA_* variables
	# (KAFKA_BROKERS, say) from turning into broker properties.
	log "starting Apache Kafka $ASYNCINFER_KAFKA_VERSION on $addr (data: $data)"
	# shellcheck disable=SC2054 # the commas are in the values
	local vars=(
		PATH="$PATH" HOME="$HOME"
		ASYNCINFER_KAFKA_LIBS="$libs" ASYNCINFER_KAFKA_CONFIG="$data/config" ASYNCINFER_KAFKA_FILE_INPUT=/nonexistent
		CLUSTER_ID="$(cat "$data/cluster.id")"
		KAFKA_NODE_ID=1
		KAFKA_PROCESS_ROLES=broker,controller
		KAFKA_LISTENERS="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
		KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://127.0.0.1:$port"
		KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
		KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER
		KAFKA_CONTROLLER_QUORUM_VOTERS="1@127.0.0.1:$cport"
		KAFKA_INTER_BROKER_LISTENER_NAME=PLAINTEXT
		KAFKA_LOG_DIRS="$data/kraft-combined-logs"
		KAFKA_NUM_PARTITIONS=1
		KAFKA_AUTO_CREATE_TOPICS_ENABLE=false
		KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1
		KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1
		KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1
		KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR=1
		KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR=1
		KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0
		# 50 partitions each by default: creating them on first use made the
		# first transaction take 8.6 s here instead of 2.7 s.
		KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS=4
		KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS=4
	)
	[ -z "${JAVA_HOME-}" ] || vars+=(JAVA_HOME="$JAVA_HOME")
	[ -z "${KAFKA_HEAP_OPTS-}" ] || vars+=(KAFKA_HEAP_OPTS="$KAFKA_HEAP_OPTS")
	nohup setsid env -i "${vars[@]}" "$here/run-broker.sh" >"$logfile" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$pidfile"

	local deadline=$((SECONDS + timeout))
	until "$here/probe.sh" "$addr" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			local why
			why=$(grep -E 'ERROR|Exception|Error' "$logfile" | head -n 1)
			[ -n "$why" ] || why=$(grep -v '^\s*$' "$logfile" | tail -n 1)
			die "the broker exited during start: $why (log: $logfile)"
		fi
		((SECONDS < deadline)) || die "the broker did not answer on $addr within ${timeout}s (pid $pid, log: $logfile)"
		sleep 0.5
	done
	log "$("$here/probe.sh" "$addr") (pid $pid)"
	echo "$addr"
}

stop() {
	local pid i
	if ! pid=$(running); then
		rm -f "$pidfile"
		log "not running"
		return
	fi
	# SIGTERM makes a controlled shutdown; give it time before insisting.
	kill -TERM "$pid"
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIGTERM for 30s, killing it"
		kill -KILL "$pid"
	fi
	rm -f "$pidfile"
	log "stopped (pid $pid)"
}

status() {
	local pid
	if pid=$(running); then
		if "$here/probe.sh" "$addr"; then
			echo "running, pid $pid, data $data"
		else
			echo "running but not answering on $addr, pid $pid (log: $logfile)"
			exit 1
		fi
	else
		echo "not running"
		exit 3
	fi
}

case "${1-}" in
start | stop | status) "$1" ;;
*) die "usage: kafka-local.sh start|stop|status" ;;
esac
