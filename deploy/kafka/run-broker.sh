#!/usr/bin/env bash
# Starts one Apache Kafka broker (KRaft) configured the way the upstream
# apache/kafka image is: from KAFKA_* environment variables. It is the entry
# point of localhost/asyncinfer-kafka (as /etc/kafka/docker/run, upstream's
# path), and kafka-local.sh runs it on the host too, so both paths share it.
#
# What it takes from upstream (docker/resources/common-scripts in apache/kafka):
#   - every KAFKA_X_Y variable becomes property x.y (KAFKA_ stripped, lower
#     case, "_" -> ".", "__" -> "_", "___" -> "-"), except the JVM and log
#     settings listed in `excluded` below;
#   - unset variables get upstream's single-node defaults (configureDefaults);
#   - KAFKA_LISTENERS defaults to KAFKA_ADVERTISED_LISTENERS with 0.0.0.0 hosts;
#   - CLUSTER_ID is required in KRaft mode, and the storage is formatted with
#     it unless it already is;
#   - a server.properties in /mnt/shared/config is the base that the
#     environment adds to; KEY=VALUE arguments override the environment;
#   - KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_GC_LOG_OPTS,
#     KAFKA_JMX_OPTS / KAFKA_JMX_PORT, KAFKA_LOG4J_OPTS, KAFKA_OPTS,
#     KAFKA_LOG4J_ROOT_LOGLEVEL and KAFKA_LOG4J_LOGGERS mean what they mean
#     there.
# What differs: the default heap is 512 MiB rather than 1 GiB, and logging is
# log4j2 to stdout only.
#
# Paths are those of the image unless these are set (kafka-local.sh sets them):
# ASYNCINFER_KAFKA_LIBS (jars), ASYNCINFER_KAFKA_CONFIG (rendered config),
# ASYNCINFER_KAFKA_FILE_INPUT (upstream's /mnt/shared/config).
set -euo pipefail

libs=${ASYNCINFER_KAFKA_LIBS:-/opt/kafka/libs}
conf=${ASYNCINFER_KAFKA_CONFIG:-/opt/kafka/config}
file_input=${ASYNCINFER_KAFKA_FILE_INPUT:-/mnt/shared/config}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

say() { echo "===> $*"; }
fail() {
	echo "run-broker: $*" >&2
	exit 1
}

for kv in "$@"; do
	[[ $kv == *=* ]] || fail "arguments are KEY=VALUE environment overrides, got: $kv"
	export "${kv?}"
done

# Upstream's defaults: a single combined broker+controller on localhost.
# shellcheck disable=SC2054 # the commas are in the values
declare -A defaults=(
	[CLUSTER_ID]=5L6g3nShT-eMCtK--X86sw
	[KAFKA_NODE_ID]=1
	[KAFKA_LISTENER_SECURITY_PROTOCOL_MAP]=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PLAINTEXT_HOST:PLAINTEXT
	[KAFKA_LISTENERS]=PLAINTEXT://localhost:29092,CONTROLLER://localhost:29093,PLAINTEXT_HOST://0.0.0.0:9092
	[KAFKA_ADVERTISED_LISTENERS]=PLAINTEXT://localhost:29092,PLAINTEXT_HOST://localhost:9092
	[KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR]=1
	[KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS]=0
	[KAFKA_TRANSACTION_STATE_LOG_MIN_ISR]=1
	[KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR]=1
	[KAFKA_PROCESS_ROLES]=broker,controller
	[KAFKA_CONTROLLER_QUORUM_VOTERS]=1@localhost:29093
	[KAFKA_INTER_BROKER_LISTENER_NAME]=PLAINTEXT
	[KAFKA_CONTROLLER_LISTENER_NAMES]=CONTROLLER
	[KAFKA_LOG_DIRS]=/tmp/kraft-combined-logs
)
if [ -z "${KAFKA_ZOOKEEPER_CONNECT-}" ]; then
	for key in "${!defaults[@]}"; do
		[ -n "${!key-}" ] || export "$key=${defaults[$key]}"
	done
fi

if [ -n "${KAFKA_PROCESS_ROLES-}" ]; then
	[ -n "${CLUSTER_ID-}" ] || fail "CLUSTER_ID environment variable not set"
	if [ "$KAFKA_PROCESS_ROLES" = controller ]; then
		[ -z "${KAFKA_ADVERTISED_LISTENERS-}" ] || fail "KAFKA_ADVERTISED_LISTENERS is not supported on a KRaft controller"
		unset KAFKA_ADVERTISED_LISTENERS
	fi
fi
if [ -z "${KAFKA_LISTENERS-}" ] && [ "${KAFKA_PROCESS_ROLES-}" != controller ] && [ -n "${KAFKA_ADVERTISED_LISTENERS-}" ]; then
	export KAFKA_LISTENERS
	# shellcheck disable=SC2001 # a regular expression, which ${//} lacks
	KAFKA_LISTENERS=$(sed -e 's|://[^:]*:|://0.0.0.0:|g' <<<"$KAFKA_ADVERTISED_LISTENERS")
fi

# JVM and logging settings, not broker properties (upstream's excludes, plus
# KAFKA_HEAP_OPTS, which upstream misspells there).
excluded=" KAFKA_VERSION KAFKA_HEAP_OPT KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL "

# property_name turns KAFKA_FOO_BAR__BAZ___QUX into foo.bar_baz-qux.
property_name() {
	local k=${1#KAFKA_}
	k=${k//___/$'\x01'}
	k=${k//__/$'\x02'}
	k=${k//_/.}
	k=${k//$'\x01'/-}
	k=${k//$'\x02'/_}
	echo "${k,,}"
}

mkdir -p "$conf"
props=$conf/server.properties
{
	if [ -f "$file_input/server.properties" ]; then
		say "User provided kafka configs found via file input. Any properties provided via env variables will be appended to this."
		cat "$file_input/server.properties"
		echo
	fi
	while IFS= read -r name; do
		[[ $excluded == *" $name "* ]] && continue
		echo "$(property_name "$name")=${!name}"
	done < <(compgen -e | grep '^KAFKA_' | sort)
} >"$props"

# log4j2: INFO (or KAFKA_LOG4J_ROOT_LOGLEVEL) to stdout, with upstream's
# pattern, so that waits on "Kafka Server started" work with either image.
log4j=$conf/log4j2.properties
{
	cat <<EOF
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG4J_ROOT_LOGLEVEL:-INFO}
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
EOF
	i=0
	IFS=, read -ra loggers <<<"${KAFKA_LOG4J_LOGGERS-}"
	for l in "${loggers[@]}"; do
		[[ $l == *=* ]] || continue
		i=$((i + 1))
		printf 'logger.env%d.name = %s\nlogger.env%d.level = %s\n' "$i" "${l%%=*}" "$i" "${l#*=}"
	done
} >"$log4j"

classpath="$libs/*"
log4j_opts=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$log4j}

# KRaft needs its storage formatted once. Starting a JVM for that costs a few
# seconds, so skip it when every log directory already has its meta.properties.
if [ -n "${KAFKA_PROCESS_ROLES-}" ]; then
	dirs=$(sed -n -e 's/^log\.dirs\{0,1\}=//p' -e 's/^metadata\.log\.dir=//p' "$props" | tr ',' ' ')
	formatted=yes
	for d in $dirs; do [ -f "$d/meta.properties" ] || formatted=no; done
	if [ -z "$dirs" ] || [ $formatted = no ]; then
		say "Using provided cluster id $CLUSTER_ID ..."
		standalone=()
		# Without a static voter set, a lone controller bootstraps a dynamic
		# quorum of itself (KIP-853), as the 4.x quickstart does.
		if [[ ${KAFKA_PROCESS_ROLES} == *controller* ]] && [ -z "${KAFKA_CONTROLLER_QUORUM_VOTERS-}" ]; then
			standalone=(--standalone)
		fi
		# shellcheck disable=SC2086 # the *_OPTS are word lists, as in kafka-run-class.sh
		"$java" ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} $log4j_opts -cp "$classpath" kafka.tools.StorageTool \
			format --ignore-formatted --cluster-id="$CLUSTER_ID" -c "$props" "${standalone[@]}" ||
			fail "formatting the KRaft storage failed"
	fi
fi

jmx_opts=${KAFKA_JMX_OPTS-}
if [ -n "${KAFKA_JMX_PORT-}" ]; then
	jmx_opts+=" -Dcom.sun.management.jmxremote=true -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
	jmx_opts+=" -Dcom.sun.management.jmxremote.local.only=false -Dcom.sun.management.jmxremote.port=$KAFKA_JMX_PORT -Dcom.sun.management.jmxremote.rmi.port=$KAFKA_JMX_PORT"
fi

say "Launching ... "
# The JVM options are kafka-run-class.sh's defaults, with a smaller heap.
# shellcheck disable=SC2086
exec "$java" ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} \
	${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true} \
	${KAFKA_GC_LOG_OPTS-} $jmx_opts $log4j_opts ${KAFKA_OPTS-} \
	-cp "$classpath" kafka.Kafka "$props"
