#!/usr/bin/env bash
# Serves podman's Docker-compatible API on a unix socket, for testcontainers-go
# on machines without a Docker engine, and prints the DOCKER_HOST to use.
#
#   export DOCKER_HOST=$(deploy/kafka/podman-service.sh start)
#   export TESTCONTAINERS_RYUK_DISABLED=true   # the reaper image cannot be pulled
#   deploy/kafka/podman-service.sh status | stop
#
# start is idempotent: when the socket already answers, it starts nothing.
# ASYNCINFER_PODMAN_SOCKET sets the socket path (default
# /run/asyncinfer-podman.sock as root, else under $XDG_RUNTIME_DIR).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" = 0 ]; then rundir=/run; else rundir=${XDG_RUNTIME_DIR:-/tmp}; fi
sock=${ASYNCINFER_PODMAN_SOCKET:-$rundir/asyncinfer-podman.sock}
pidfile=${sock%.sock}.pid
logfile=${sock%.sock}.log
url=unix://$sock

answers() { have podman && podman --url "$url" version >/dev/null 2>&1; }

start() {
	ensure_podman
	if ! answers; then
		rm -f "$sock"
		# --time=0: serve until stopped, not just until idle for 5 s.
		nohup setsid podman system service --time=0 "$url" >"$logfile" 2>&1 </dev/null &
		echo $! >"$pidfile"
		local i
		for ((i = 0; i < 100; i++)); do
			answers && break
			kill -0 "$(cat "$pidfile")" 2>/dev/null || die "podman system service exited: $(tail -n 1 "$logfile") (log: $logfile)"
			sleep 0.1
		done
		answers || die "podman system service does not answer on $sock (log: $logfile)"
		log "serving the Docker API on $sock (pid $(cat "$pidfile")); for testcontainers also set TESTCONTAINERS_RYUK_DISABLED=true"
	fi
	echo "$url"
}

stop() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null) || pid=
	if [ -n "$pid" ] && grep -qa 'system.service' "/proc/$pid/cmdline" 2>/dev/null; then
		kill -TERM "$pid"
		log "stopped (pid $pid)"
	elif answers; then
		die "$sock is served by a process this script did not start; not stopping it"
	else
		log "not running"
	fi
	rm -f "$pidfile"
}

status() {
	if answers; then
		echo "serving on $url"
	else
		echo "not running"
		exit 3
	fi
}

case "${1-}" in
start | stop | status) "$1" ;;
*) die "usage: podman-service.sh start|stop|status" ;;
esac
