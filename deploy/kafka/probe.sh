#!/usr/bin/env bash
# Asks a Kafka broker for its metadata and succeeds only when it answers with
# at least one registered broker: an open port is not enough, because a KRaft
# broker accepts connections before it serves requests.
#
#   deploy/kafka/probe.sh 127.0.0.1:9092
#   -> 127.0.0.1:9092: cluster 5L6g3nShT-eMCtK--X86sw, controller 1, brokers 1@127.0.0.1:9092
#
# It speaks the protocol itself (a Metadata v4 request, which every 4.x broker
# serves: KIP-896 dropped only v0-v3), so it needs nothing but bash and
# coreutils. PROBE_TIMEOUT (seconds, default 5) bounds the whole exchange.
set -euo pipefail

addr=${1:?usage: probe.sh HOST:PORT}
host=${addr%:*} port=${addr##*:}

if [ -z "${_PROBE_BOUNDED-}" ]; then
	_PROBE_BOUNDED=1 exec timeout "${PROBE_TIMEOUT:-5}" "$0" "$@"
fi

fail() {
	echo "probe: $addr: $*" >&2
	exit 1
}

{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || fail "connection refused"

# Request: size, api key 3 (Metadata), version 4, correlation id 7, client id
# "probe"; then an empty topic list (not null, which would mean all topics)
# and allow_auto_topic_creation=false.
printf '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x07\x00\x05probe\x00\x00\x00\x00\x00' >&3

# read_bytes N reads the next N bytes of the response into array b, as numbers.
read_bytes() { read -d '' -ra b < <(dd bs="$1" count=1 iflag=fullblock status=none <&3 | od -An -v -tu1) || true; }
read_bytes 4
[ "${#b[@]}" = 4 ] || fail "no answer"
size=$(((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]))
((size > 0 && size < 1048576)) || fail "not a Kafka response (size $size)"
read_bytes "$size"
r=("${b[@]}")
[ "${#r[@]}" = "$size" ] || fail "short response"

pos=0
int16() { echo $(((r[pos] << 8) | r[pos + 1])); }
int32() { echo $(((r[pos] << 24) | (r[pos + 1] << 16) | (r[pos + 2] << 8) | r[pos + 3])); }
# str prints the nullable string (int16 length, -1 = null) at pos.
str() {
	local n
	n=$(int16)
	if ((n == 65535)); then
		echo ""
		return
	fi
	local s="" i
	for ((i = 0; i < n; i++)); do s+=$(printf '%b' "\\x$(printf %02x "${r[pos + 2 + i]}")"); done
	echo "$s"
}

(($(int32) == 7)) || fail "correlation id mismatch"
pos=8 # correlation id, throttle_time_ms
count=$(int32)
pos=$((pos + 4))
brokers=()
for ((k = 0; k < count; k++)); do
	node=$(int32)
	pos=$((pos + 4))
	h=$(str)
	pos=$((pos + 2 + ${#h}))
	p=$(int32)
	pos=$((pos + 4))
	rack=$(str) # a null rack reads as "", like an empty one: 2 bytes
	pos=$((pos + 2 + ${#rack}))
	brokers+=("$node@$h:$p")
done
cluster=$(str)
pos=$((pos + 2 + ${#cluster}))
controller=$(int32)

((count > 0)) || fail "answers, but no broker is registered yet"
echo "$addr: cluster $cluster, controller $controller, brokers ${brokers[*]}"
