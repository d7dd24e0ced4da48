#!/usr/bin/env bash
# A real Open Inference Protocol v2 server for development, tests and
# benchmarks: MLServer from PyPI in a virtual environment, serving a
# scikit-learn model trained on iris at set-up, on 127.0.0.1.
#
#   deploy/mlserver/mlserver.sh setup    # the venv and the model (cached); prints the model's directory
#   deploy/mlserver/mlserver.sh start    # set-up, then MLServer; prints its REST URL once the models are ready
#   deploy/mlserver/mlserver.sh status   # exit 0 running and ready, 3 not running
#   deploy/mlserver/mlserver.sh stop
#
# It serves two models from one file: "iris" (version v1) and "iris-adaptive",
# the same model with MLServer's own adaptive batching on, for comparisons.
# Both run mlserver-sklearn's runtime through runtime.py, which only makes a
# model's error (a wrong input shape) reach the client as HTTP 400 with its
# text instead of a bare 500.
# Both take one FP64 input "input-0" of shape [-1, 4] and answer "predict",
# INT64 [-1, 1], the class (0 setosa, 1 versicolor, 2 virginica).
#
# set-up also writes predictions.json beside the model: what scikit-learn
# predicts for a fixed set of 200 inputs (see train.py), for tests to compare
# the pipeline's answers with.
#
# start is idempotent: with MLServer already running it only prints the URL.
# A warm start installs and trains nothing.
#
# Environment (defaults in brackets):
#   ASYNCINFER_MLSERVER_HTTP_PORT   REST port [8080; "free": a free one]
#   ASYNCINFER_MLSERVER_GRPC_PORT   gRPC port [8083, since asyncinfer dev-broker's registry
#                                   takes MLServer's own default 8081; "free": a free one]
#   ASYNCINFER_MLSERVER_RUN         settings, pid, log and ports of this server [$ASYNCINFER_CACHE/mlserver-run]
#   ASYNCINFER_MLSERVER_MAX_BATCH_SIZE  iris-adaptive's max_batch_size [64]
#   ASYNCINFER_MLSERVER_MAX_BATCH_TIME  iris-adaptive's max_batch_time, seconds [0.005]
#   ASYNCINFER_MLSERVER_START_TIMEOUT   seconds to wait for readiness [120]
#   ASYNCINFER_PYTHON                   the Python 3 to build the venv with [python3]
# and ASYNCINFER_CACHE (where the venv and the model live).
#
# Known here: MLServer 1.7.1 on Python 3.11 fails to load models with its
# parallel inference pool ("There is no current event loop"), so settings.json
# sets "parallel_workers": 0 (models run in the server's process).
set -euo pipefail
. "$(dirname "$0")/../kafka/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

# Pinned: the server, its scikit-learn runtime, and the scikit-learn and NumPy
# that pip resolved for them when this was written (the model file and the
# predictions depend on both); constraints.txt pins every other package of
# the venv to what pip resolved then.
MLSERVER_VERSION=1.7.1
PINS=(mlserver==$MLSERVER_VERSION mlserver-sklearn==$MLSERVER_VERSION scikit-learn==1.9.1 numpy==2.4.6)

base=$ASYNCINFER_CACHE/mlserver-$MLSERVER_VERSION
venv=$base/venv
models=$base/models
run=${ASYNCINFER_MLSERVER_RUN:-$ASYNCINFER_CACHE/mlserver-run}
timeout=${ASYNCINFER_MLSERVER_START_TIMEOUT:-120}
pidfile=$run/mlserver.pid
logfile=$run/mlserver.log

# setup builds the venv and trains the model unless both are there and were
# made from the same pins and train.py (their hash is the stamp).
setup() {
	local stamp want
	want=$(printf '%s\n' "${PINS[@]}" | cat - "$here/train.py" "$here/constraints.txt" | sha256sum | cut -c1-16)
	stamp=$base/stamp
	if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -x "$venv/bin/mlserver" ] && [ -s "$models/iris/predictions.json" ]; then
		echo "$models/iris"
		return
	fi
	local py=${ASYNCINFER_PYTHON:-python3}
	have "$py" || die "needs $py (Python 3.9 to 3.12; 3.11 tested) to build MLServer's virtual environment"
	"$py" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] < (3, 13) else 1)' ||
		die "MLServer $MLSERVER_VERSION needs Python 3.9 to 3.12; $py is $("$py" --version 2>&1)"
	mkdir -p "$base"
	if [ ! -x "$venv/bin/python" ]; then
		log "creating the virtual environment $venv"
		"$py" -m venv "$venv" 2>/dev/null || {
			apt_install python3-venv
			"$py" -m venv "$venv"
		} || die "could not create $venv"
	fi
	log "installing ${PINS[*]} from PyPI (a few minutes the first time)"
	nice -n 10 "$venv/bin/pip" install --disable-pip-version-check -q -c "$here/constraints.txt" "${PINS[@]}" >"$base/pip.log" 2>&1 ||
		die "pip install failed: $(tail -n 3 "$base/pip.log" | tr '\n' ' ') (log: $base/pip.log)"
	log "training the iris model"
	"$venv/bin/python" "$here/train.py" "$models/iris" || die "training the model failed"
	echo "$want" >"$stamp"
	echo "$models/iris"
}

# running prints MLServer's pid when the pid file names a live MLServer.
running() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[ -n "$pid" ] && grep -qa 'mlserver' "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

# ready says whether every model answers its readiness endpoint.
ready() {
	local url=$1 m
	for m in iris iris-adaptive; do
		curl -fsS -o /dev/null --max-time 2 "$url/v2/models/$m/ready" 2>/dev/null || return 1
	done
}

# model_settings writes one model's model-settings.json.
model_settings() {
	local dir=$1 name=$2 batching=$3
	mkdir -p "$dir"
	cp "$here/runtime.py" "$dir/runtime.py"
	cat >"$dir/model-settings.json" <<JSON
{
  "name": "$name",
  "implementation": "runtime.SKLearnModelWithErrors",
  "parameters": {"uri": "$models/iris/model.joblib", "version": "v1"},
  "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
  "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}]$batching
}
JSON
}

start() {
	local pid url attempt
	have curl || apt_install curl
	if pid=$(running); then
		url=$(cat "$run/url")
		ready "$url" || die "pid $pid is running but $url is not ready (log: $logfile)"
		echo "$url"
		return
	fi
	setup >/dev/null
	# A port picked free can still be lost before MLServer binds it (another
	# process's bind, or an outgoing connection's local end): launch reports
	# that as status 2, and free ports are picked again, three times at most.
	for attempt in 1 2 3; do
		if url=$(launch); then
			echo "$url"
			return
		else
			[ $? -eq 2 ] && [ "$attempt" -lt 3 ] || exit 1
		fi
		log "a port was taken while MLServer started; picking others"
	done
}

# launch starts MLServer once and prints its URL when the models are ready;
# it exits 2 when MLServer could not bind a port picked free.
launch() {
	local pid http grpc url
	http=${ASYNCINFER_MLSERVER_HTTP_PORT:-8080}
	[ "$http" = free ] && http=$(free_port)
	grpc=${ASYNCINFER_MLSERVER_GRPC_PORT:-8083}
	if [ "$grpc" = free ]; then
		grpc=$(free_port)
		while [ "$grpc" = "$http" ]; do grpc=$(free_port); done
	fi
	port_open "$http" && die "127.0.0.1:$http is already taken by another process (set ASYNCINFER_MLSERVER_HTTP_PORT)"
	port_open "$grpc" && die "127.0.0.1:$grpc is already taken by another process (set ASYNCINFER_MLSERVER_GRPC_PORT)"
	url=http://127.0.0.1:$http

	mkdir -p "$run/models"
	cat >"$run/models/settings.json" <<JSON
{
  "debug": false,
  "host": "127.0.0.1",
  "http_port": $http,
  "grpc_port": $grpc,
  "metrics_endpoint": null,
  "parallel_workers": 0,
  "load_models_at_startup": true
}
JSON
	model_settings "$run/models/iris" iris ""
	model_settings "$run/models/iris-adaptive" iris-adaptive ",
  \"max_batch_size\": ${ASYNCINFER_MLSERVER_MAX_BATCH_SIZE:-64},
  \"max_batch_time\": ${ASYNCINFER_MLSERVER_MAX_BATCH_TIME:-0.005}"
	echo "$url" >"$run/url"
	echo "127.0.0.1:$grpc" >"$run/grpc"
	[ -f "$logfile" ] && mv -f "$logfile" "$logfile.1"

	log "starting MLServer $MLSERVER_VERSION on $url (gRPC 127.0.0.1:$grpc, run dir $run)"
	# MLServer reads settings.json from the folder it is given and finds the
	# models below it. Its own session, so that stop ends its children too.
	nohup setsid "$venv/bin/mlserver" start "$run/models" >"$logfile" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$pidfile"

	local deadline=$((SECONDS + timeout))
	until ready "$url"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			local why
			why=$(grep -E 'Error|error|Exception' "$logfile" | tail -n 1)
			if grep -qiE 'failed to bind|address already in use' "$logfile" &&
				[ "${ASYNCINFER_MLSERVER_HTTP_PORT:-}" = free ] && [ "${ASYNCINFER_MLSERVER_GRPC_PORT:-}" = free ]; then
				log "MLServer exited during start: ${why:-see the log} (log: $logfile)"
				exit 2
			fi
			die "MLServer exited during start: ${why:-see the log} (log: $logfile)"
		fi
		((SECONDS < deadline)) || die "MLServer was not ready on $url within ${timeout}s (pid $pid, log: $logfile)"
		sleep 0.3
	done
	log "ready: models iris and iris-adaptive (pid $pid); stop with: make mlserver-stop"
	echo "$url"
}

stop() {
	local pid i
	if ! pid=$(running); then
		rm -f "$pidfile"
		log "not running"
		return
	fi
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
	for ((i = 0; i < 40; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.25
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIGTERM for 10s, killing it"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
	fi
	rm -f "$pidfile"
	log "stopped (pid $pid)"
}

status() {
	local pid url
	if pid=$(running); then
		url=$(cat "$run/url")
		if ready "$url"; then
			echo "running, pid $pid, $url, run dir $run"
		else
			echo "running but not ready on $url, pid $pid (log: $logfile)"
			exit 1
		fi
	else
		echo "not running"
		exit 3
	fi
}

case "${1-}" in
setup | start | stop | status) "$1" ;;
*) die "usage: mlserver.sh setup|start|stop|status" ;;
esac
