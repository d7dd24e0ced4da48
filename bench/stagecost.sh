#!/usr/bin/env bash
# bench/stagecost.sh: what one request costs each stage process, for one or
# more asyncinfer binaries side by side (before and after a change).
#
#   bench/stagecost.sh [-n REQUESTS] [-r RUNS] BIN [BIN ...]
#
# It starts `asyncinfer dev-broker` (the embedded kfake broker and registry,
# in a process of their own) with the first binary, and for each run and
# each binary, interleaved: a fresh topic prefix, `topics create` (4
# partitions), REQUESTS requests preloaded with `load --rate 0`, then one
# `run` process per stage (dedup, infer, emit) with a model that costs 1 µs a
# call. When emit has emitted them all it reads each process's /metrics:
# CPU (process_cpu_seconds_total) and heap allocations
# (go_memstats_mallocs_total) per request, resident memory; and the drain's
# wall time (processes started to the last result). Figures include each
# process's start-up and state restore; compare binaries within one
# invocation, not across machines.
set -euo pipefail
N=200000 RUNS=3
while getopts n:r: o; do case $o in n) N=$OPTARG;; r) RUNS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-n REQUESTS] [-r RUNS] BIN [BIN ...]" >&2; exit 2; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kport=$(free) rport=$(free)
"$1" dev-broker --kafka-addr 127.0.0.1:$kport --registry-addr 127.0.0.1:$rport >"$dir/broker.log" 2>&1 &
pids+=($!)
sleep 2
for run in $(seq "$RUNS"); do
	i=0
	for bin in "$@"; do
		i=$((i + 1))
		p="cost$run-$i-$RANDOM"
		cat >"$dir/$p.yaml" <<EOC
kafka: {brokers: [127.0.0.1:$kport]}
registry: {url: http://127.0.0.1:$rport}
topics: {prefix: $p., partitions: 4}
log_level: warn
models: [{name: sim, max_batch_items: 64, sim: {fixed: 1us, per_item: 0s}}]
EOC
		"$bin" topics create --config "$dir/$p.yaml" >/dev/null
		"$bin" load --config "$dir/$p.yaml" --requests "$N" --rate 0 --model sim >/dev/null
		start=$(date +%s.%N)
		ports=()
		stage_pids=()
		for st in dedup infer emit; do
			port=$(free)
			ports+=("$port")
			"$bin" run --config "$dir/$p.yaml" --stages "$st" --instance-id "$st-0" --admin-addr "127.0.0.1:$port" >"$dir/$p-$st.log" 2>&1 &
			stage_pids+=($!)
		done
		until [ "$(curl -s "http://127.0.0.1:${ports[2]}/metrics" | awk '/^asyncinfer_results_emitted_total/ {s += $2} END {printf "%d", s}')" -ge "$N" ]; do sleep 0.1; done
		end=$(date +%s.%N)
		k=0
		for st in dedup infer emit; do
			curl -s "http://127.0.0.1:${ports[$k]}/metrics" | awk -v bin="$bin" -v st="$st" -v n="$N" -v run="$run" '
				/^process_cpu_seconds_total/ {cpu = $2}
				/^go_memstats_mallocs_total/ {al = $2}
				/^process_resident_memory_bytes/ {rss = $2}
				END {printf "{\"run\":%d,\"bin\":\"%s\",\"stage\":\"%s\",\"cpu_us_per_request\":%.1f,\"allocs_per_request\":%.1f,\"rss_mib\":%.0f}\n", run, bin, st, cpu*1e6/n, al/n, rss/1048576}'
			k=$((k + 1))
		done
		awk -v bin="$bin" -v s="$start" -v e="$end" -v n="$N" -v run="$run" 'BEGIN {printf "{\"run\":%d,\"bin\":\"%s\",\"drain_seconds\":%.2f,\"results_per_second\":%.0f}\n", run, bin, e-s, n/(e-s)}'
		kill "${stage_pids[@]}" 2>/dev/null || true
		wait "${stage_pids[@]}" 2>/dev/null || true
	done
done
