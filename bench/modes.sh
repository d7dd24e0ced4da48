#!/usr/bin/env bash
# bench/modes.sh: what each delivery mode costs, at-least-once (alo) against
# exactly-once (eos), on a real Apache Kafka broker. docs/benchmarks.md gives
# the method and the last numbers.
#
# For each repetition it runs, interleaved so that drift hits both modes:
#   A  throughput: --a-requests requests offered at once (load --rate 0);
#      completed results per second from the earliest created_at to the
#      last result a read_committed reader sees
#   B  latency: --b-rate requests/s for --b-seconds; p50/p95/p99 of
#      created_at -> result visible to a read_committed reader, and of
#      created_at -> infer's answer (what asyncinfer verify reports)
# in the order A-alo A-eos B-alo B-eos. Every run has a fresh topic prefix,
# `topics create`, one `run` process per stage (dedup, infer, emit), the
# simulated model, and ends with `asyncinfer verify`.
#
# It starts Apache Kafka with `make kafka` (a fresh data directory, so a fresh
# KRaft cluster) and a schema registry with `asyncinfer dev-broker` (its
# embedded broker is unused), and stops both, and everything else it started,
# when it ends. It prints one JSON line per run, then a JSON line and a
# Markdown table per mode and scenario (medians of the runs); all of it, the
# stage logs and the configuration files stay in OUT.
#
# Environment (defaults in brackets):
#   RUNS          repetitions per mode and scenario [3]
#   MODES         [alo eos]          SCENARIOS   [A B]
#   A_REQUESTS    scenario A requests [20000]
#   B_RATE        scenario B requests per second [1000]
#   B_SECONDS     scenario B duration [20]
#   WARMUP        requests of an unmeasured run per mode first (creates the
#                 broker's internal topics); 0: none [1000]
#   PARTITIONS    partitions of every topic [4]
#   MODEL         the models: entry [{name: sim, max_batch_items: 64, sim: {fixed: 5ms, per_item: 250us}}]
#   EXTRA_CONFIG  more YAML lines for every stage's configuration file []
#   BROKERS       use this broker instead of starting one (not stopped) []
#   KAFKA_PORT    port of the broker make kafka starts [9092]
#   REGISTRY_ADDR address of the registry dev-broker serves [127.0.0.1:18081]
#   REGISTRY      use this registry instead of starting one []
#   RUN_TIMEOUT   seconds a run may take before it is given up [300]
#   OUT           output directory [${TMPDIR:-/tmp}/asyncinfer-modes-<UTC time>]
#   SOURCE        what asyncinfer is built from: a git revision (exported with
#                 git archive, so edits in progress stay out), or worktree [HEAD]
#   BIN           an asyncinfer binary to use instead of building one []
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

RUNS=${RUNS:-3}
MODES=${MODES:-alo eos}
SCENARIOS=${SCENARIOS:-A B}
A_REQUESTS=${A_REQUESTS:-20000}
B_RATE=${B_RATE:-1000}
B_SECONDS=${B_SECONDS:-20}
WARMUP=${WARMUP:-1000}
PARTITIONS=${PARTITIONS:-4}
MODEL=${MODEL:-"{name: sim, max_batch_items: 64, sim: {fixed: 5ms, per_item: 250us}}"}
EXTRA_CONFIG=${EXTRA_CONFIG:-}
BROKERS=${BROKERS:-}
KAFKA_PORT=${KAFKA_PORT:-9092}
REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:18081}
REGISTRY=${REGISTRY:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
OUT=${OUT:-${TMPDIR:-/tmp}/asyncinfer-modes-$(date -u +%Y%m%dT%H%M%SZ)}
SOURCE=${SOURCE:-HEAD}

log() { printf 'modes: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}
command -v jq >/dev/null || die "needs jq"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
started=$(date +%s)

# --- what we start, and stop whatever happens --------------------------------
pids=()       # processes of the current run
registry_pid= # dev-broker
kafka_started=
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "$registry_pid" ]; then
		kill -TERM "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
	fi
	if [ -n "$kafka_started" ]; then
		ASYNCINFER_KAFKA_PORT=$KAFKA_PORT ASYNCINFER_KAFKA_DATA=$OUT/kafka make -s -C "$root" kafka-stop >&2 || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- binaries ----------------------------------------------------------------
if [ -n "${BIN:-}" ]; then
	built="binary $BIN"
elif [ "$SOURCE" = worktree ]; then
	BIN=$OUT/asyncinfer
	go build -o "$BIN" ./cmd/asyncinfer
	built="worktree of $(git rev-parse --short HEAD)"
	git diff --quiet HEAD -- . ':!bench' || built+=" with uncommitted changes"
else
	BIN=$OUT/asyncinfer
	rm -rf "$OUT/src" && mkdir -p "$OUT/src"
	git archive "$SOURCE" | tar -x -C "$OUT/src"
	(cd "$OUT/src" && go build -o "$BIN" ./cmd/asyncinfer)
	built="commit $(git rev-parse --short "$SOURCE")"
fi
WATCH=$OUT/modes
go build -o "$WATCH" ./bench/modes

# --- broker and registry -----------------------------------------------------
if [ -z "$BROKERS" ]; then
	kafka_started=1
	BROKERS=$(ASYNCINFER_KAFKA_PORT=$KAFKA_PORT ASYNCINFER_KAFKA_DATA=$OUT/kafka make -s kafka)
fi
if [ -z "$REGISTRY" ]; then
	"$BIN" dev-broker --kafka-addr 127.0.0.1:0 --registry-addr "$REGISTRY_ADDR" >"$OUT/dev-broker.log" 2>&1 &
	registry_pid=$!
	REGISTRY=http://$REGISTRY_ADDR
	for _ in $(seq 100); do
		curl -fs "$REGISTRY/subjects" >/dev/null 2>&1 && break
		kill -0 "$registry_pid" 2>/dev/null || die "dev-broker exited: $(cat "$OUT/dev-broker.log")"
		sleep 0.1
	done
fi
kafka_pid() {
	local p
	p=$(cat "$OUT/kafka/kafka.pid" 2>/dev/null) || return 1
	# run-broker.sh execs java, so the pid is the JVM's.
	[ -r "/proc/$p/stat" ] && echo "$p"
}

# cpu_s prints the user+system CPU seconds of the given processes so far.
tck=$(getconf CLK_TCK)
cpu_s() {
	local p t=0 f
	for p in "$@"; do
		[ -n "$p" ] || continue
		# Fields 14 and 15 after the ")" that ends the command name.
		f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
		t=$((t + $(echo "$f" | awk '{print $12 + $13}')))
	done
	awk -v t="$t" -v k="$tck" 'BEGIN { printf "%.2f", t / k }'
}

# --- one run -----------------------------------------------------------------
# run_one MODE SCENARIO REP: one run; its JSON line goes to $last_run. Not in
# a subshell, so that the EXIT trap knows the processes it started.
last_run=
run_one() {
	local mode=$1 scenario=$2 rep=$3 requests rate
	case $scenario in
	A) requests=$A_REQUESTS rate=0 ;;
	B) requests=$((B_RATE * B_SECONDS)) rate=$B_RATE ;;
	W) requests=$WARMUP rate=500 ;;
	esac
	local prefix
	prefix="bench.$(date +%s).$scenario.$mode.$rep."
	local dir=$OUT/runs/$scenario-$mode-$rep
	mkdir -p "$dir"
	local eos=false
	[ "$mode" = eos ] && eos=true
	cat >"$dir/config.yaml" <<-EOF
		kafka: {brokers: [$BROKERS]}
		registry: {url: $REGISTRY}
		topics: {prefix: $prefix, partitions: $PARTITIONS}
		exactly_once: $eos
		log_level: warn
		admin_addr: 127.0.0.1:0
		models: [$MODEL]
		$EXTRA_CONFIG
	EOF
	"$BIN" topics create --config "$dir/config.yaml" >"$dir/topics.log" 2>&1 ||
		die "topics create failed: $(cat "$dir/topics.log")"

	pids=()
	local s stage_pids=()
	for s in dedup infer emit; do
		"$BIN" run --config "$dir/config.yaml" --stages "$s" --instance-id "$s-0" >"$dir/$s.log" 2>&1 &
		pids+=($!)
		stage_pids+=($!)
	done
	# Ready: every stage joined its group and restored its state.
	local deadline=$((SECONDS + 90)) addr
	for s in dedup infer emit; do
		until addr=$(grep -om1 'admin http://[0-9.:]*' "$dir/$s.log" | sed 's|admin http://||') && [ -n "$addr" ] &&
			curl -fs "http://$addr/readyz" >/dev/null 2>&1; do
			((SECONDS < deadline)) || die "$s of $scenario-$mode-$rep not ready in 90s: $(tail -n 3 "$dir/$s.log")"
			sleep 0.2
		done
	done

	rm -f "$dir/ready"
	"$WATCH" --brokers "$BROKERS" --registry "$REGISTRY" --prefix "$prefix" --want "$requests" \
		--timeout "${RUN_TIMEOUT}s" --ready "$dir/ready" >"$dir/watch.json" 2>"$dir/watch.log" &
	local watch_pid=$!
	pids+=("$watch_pid")
	until [ -e "$dir/ready" ]; do
		kill -0 "$watch_pid" 2>/dev/null || die "the results reader exited: $(cat "$dir/watch.log")"
		sleep 0.05
	done
	local kp cpu0 kcpu0 load0
	load0=$(cut -d' ' -f1 /proc/loadavg)
	kp=$(kafka_pid || true)
	cpu0=$(cpu_s "${stage_pids[@]}")
	kcpu0=$(cpu_s "$kp")
	"$BIN" load --config "$dir/config.yaml" --requests "$requests" --rate "$rate" >"$dir/load.json" 2>"$dir/load.log" ||
		die "load failed: $(cat "$dir/load.log")"
	local watch_rc=0
	wait "$watch_pid" || watch_rc=$?
	local cpu1 kcpu1
	cpu1=$(cpu_s "${stage_pids[@]}")
	kcpu1=$(cpu_s "$kp")

	# verify: retry while results are pending (the groups commit last).
	# In exactly-once mode a group's committed offset stops one short of
	# the end (the last transaction marker), so settled may stay false:
	# pending 0 three times running is then as good as it gets.
	local try
	for try in $(seq 20); do
		"$BIN" verify --config "$dir/config.yaml" --report json >"$dir/verify.json" 2>"$dir/verify.log" || true
		jq -e '.pending == 0 and .settled' "$dir/verify.json" >/dev/null 2>&1 && break
		((try >= 3)) && jq -e '.pending == 0' "$dir/verify.json" >/dev/null 2>&1 && break
		sleep 0.5
	done

	for p in "${stage_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${stage_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()

	local logs
	logs=$(cat "$dir"/{dedup,infer,emit}.log)
	jq -cn --arg mode "$mode" --arg scenario "$scenario" --argjson rep "$rep" --arg prefix "$prefix" \
		--argjson requests "$requests" --argjson rate "$rate" --argjson watch_rc "$watch_rc" \
		--slurpfile w "$dir/watch.json" --slurpfile v "$dir/verify.json" --slurpfile l "$dir/load.json" \
		--argjson cpu "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')" \
		--argjson kcpu "$(awk -v a="$kcpu0" -v b="$kcpu1" 'BEGIN{printf "%.2f", b-a}')" \
		--argjson load0 "$load0" --argjson load1 "$(cut -d' ' -f1 /proc/loadavg)" \
		--argjson timeouts "$(grep -ci 'transaction timed out' <<<"$logs" || true)" \
		--argjson aborts "$(grep -ci 'abort' <<<"$logs" || true)" \
		--argjson errors "$(grep -c 'level=ERROR' <<<"$logs" || true)" \
		--argjson warns "$(grep -c 'level=WARN' <<<"$logs" || true)" \
		'($w[0] // {}) as $w | ($v[0] // {}) as $v | ($l[0] // {}) as $l | {
			mode: $mode, scenario: $scenario, rep: $rep, prefix: $prefix,
			requests: $requests, offered_rps: $rate, load_seconds: $l.seconds,
			complete: ($w.complete // false), answered: $w.distinct,
			throughput_rps: $w.throughput_rps, span_s: $w.span_s,
			visible_ms: $w.visible_ms, infer_ms: $w.infer_ms, commit_ms: $w.commit_ms,
			verify: {requests: $v.requests, lost: $v.lost, pending: $v.pending, repeated: $v.repeated,
				conflicting: $v.conflicting, settled: $v.settled, latency_ms: $v.latency_ms},
			stage_cpu_s: $cpu, broker_cpu_s: $kcpu,
			stage_cpu_us_per_request: ($cpu * 1e6 / $requests | round),
			broker_cpu_us_per_request: (if $kcpu > 0 then ($kcpu * 1e6 / $requests | round) else null end),
			loadavg_1m: [$load0, $load1],
			logs: {txn_timeouts: $timeouts, aborts: $aborts, errors: $errors, warns: $warns}}' >"$dir/run.json"
	last_run=$dir/run.json
}

# --- the runs ----------------------------------------------------------------
results=$OUT/results.jsonl
: >"$results"
if [ "$WARMUP" -gt 0 ]; then
	for mode in $MODES; do
		log "warm-up $mode ($WARMUP requests)"
		run_one "$mode" W 0
		cp "$last_run" "$OUT/warmup-$mode.json"
	done
fi
for rep in $(seq "$RUNS"); do
	for scenario in $SCENARIOS; do
		for mode in $MODES; do
			log "run $rep/$RUNS: scenario $scenario, $mode"
			run_one "$mode" "$scenario" "$rep"
			tee -a "$results" <"$last_run"
		done
	done
done

# --- summary -----------------------------------------------------------------
# shellcheck source=deploy/kafka/lib.sh
kafka_version=$(. deploy/kafka/lib.sh && echo "$ASYNCINFER_KAFKA_VERSION")
jq -cn --arg nproc "$(nproc)" --arg ram "$(free -h | awk '/^Mem:/ {print $2}')" --arg kernel "$(uname -r)" \
	--arg go "$(go version | awk '{print $3}')" --arg built "$built" --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
	--arg broker "$([ -n "$kafka_started" ] && echo "Apache Kafka $kafka_version, make kafka (local process, KRaft single node), $BROKERS" || echo "$BROKERS")" \
	--argjson seconds "$(($(date +%s) - started))" \
	'{env: true, nproc: ($nproc | tonumber), ram: $ram, kernel: $kernel, go: $go, asyncinfer: $built,
	  broker: $broker, date: $date, seconds: $seconds}' | tee "$OUT/env.json"

jq -sc 'def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor]
		else (.[length/2-1] + .[length/2]) / 2 end;
	group_by([.scenario, .mode])[] | {
		summary: true, scenario: .[0].scenario, mode: .[0].mode, runs: length,
		throughput_rps: ([.[].throughput_rps] | median), throughput_runs: [.[].throughput_rps],
		visible_p50: ([.[].visible_ms.p50] | median), visible_p95: ([.[].visible_ms.p95] | median),
		visible_p99: ([.[].visible_ms.p99] | median),
		visible_p50_runs: [.[].visible_ms.p50], visible_p99_runs: [.[].visible_ms.p99],
		verify_p50: ([.[].verify.latency_ms.p50] | median), verify_p95: ([.[].verify.latency_ms.p95] | median),
		verify_p99: ([.[].verify.latency_ms.p99] | median),
		verify_p99_runs: [.[].verify.latency_ms.p99],
		stage_cpu_us_per_request: ([.[].stage_cpu_us_per_request] | median),
		broker_cpu_us_per_request: ([.[].broker_cpu_us_per_request | values] | median),
		lost: ([.[].verify.lost] | add), pending: ([.[].verify.pending] | add),
		repeated: ([.[].verify.repeated] | add), conflicting: ([.[].verify.conflicting] | add),
		incomplete: ([.[] | select(.complete | not)] | length),
		txn_timeouts: ([.[].logs.txn_timeouts] | add), aborts: ([.[].logs.aborts] | add),
		errors: ([.[].logs.errors] | add)}' "$results" | tee "$OUT/summary.jsonl"

runs() { jq -r '[.[] | tostring] | join(" / ")'; }
{
	echo
	echo "| scenario | mode | median | runs | lost / repeated / conflicting | CPU µs/request: stages, broker |"
	echo "|---|---|---|---|---|---|"
	while read -r s; do
		sc=$(jq -r .scenario <<<"$s")
		if [ "$sc" = A ]; then
			what="$(jq -r '.throughput_rps' <<<"$s") results/s"
			runs_=$(jq -c '.throughput_runs' <<<"$s" | runs)
		else
			what=$(jq -r '"p50 \(.visible_p50) / p95 \(.visible_p95) / p99 \(.visible_p99) ms visible (verify: \(.verify_p50) / \(.verify_p95) / \(.verify_p99))"' <<<"$s")
			runs_="p50 $(jq -c '.visible_p50_runs' <<<"$s" | runs); p99 $(jq -c '.visible_p99_runs' <<<"$s" | runs)"
		fi
		echo "| $sc | $(jq -r .mode <<<"$s") | $what | $runs_ | $(jq -r '"\(.lost) / \(.repeated) / \(.conflicting)"' <<<"$s") | $(jq -r '"\(.stage_cpu_us_per_request), \(.broker_cpu_us_per_request)"' <<<"$s") |"
	done <"$OUT/summary.jsonl"
} | tee "$OUT/table.md"
log "output in $OUT"
