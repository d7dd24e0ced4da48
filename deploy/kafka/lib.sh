# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this
# Sourced by the scripts beside it: the versions we run, where the cache lives,
# and the few helpers every script needs. Not meant to be run on its own.
#
# Every setting can be overridden from the environment; none of ours starts with
# KAFKA_, because the broker's entry point (run-broker.sh) turns every KAFKA_*
# variable into a broker property, as the upstream apache/kafka image does.

# Apache Kafka from Maven Central: the newest 4.x served when this was written.
ASYNCINFER_KAFKA_VERSION=${ASYNCINFER_KAFKA_VERSION:-4.4.0}
# kafka-server 4.4.0 itself depends on log4j-api/log4j-core 2.25.5, so the
# binding we add matches it. Kafka's poms still name slf4j-api 1.7.36, which
# log4j-slf4j2-impl cannot bind to: we pin the 2.0 API it is built for.
ASYNCINFER_LOG4J_VERSION=${ASYNCINFER_LOG4J_VERSION:-2.25.5}
ASYNCINFER_SLF4J_VERSION=${ASYNCINFER_SLF4J_VERSION:-2.0.17}
# Pinned so that mvn does not look up the newest plugin on every run.
ASYNCINFER_MAVEN_DEPENDENCY_PLUGIN=${ASYNCINFER_MAVEN_DEPENDENCY_PLUGIN:-3.8.1}

# Everything downloaded or generated lives under one directory.
ASYNCINFER_CACHE=${ASYNCINFER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/asyncinfer}
kafka_dir=$ASYNCINFER_CACHE/kafka-$ASYNCINFER_KAFKA_VERSION
kafka_libs=$kafka_dir/libs

# The images build-image.sh makes (podman's local storage is their cache).
ASYNCINFER_BASE_IMAGE=${ASYNCINFER_BASE_IMAGE:-localhost/asyncinfer-jre17:bookworm}
ASYNCINFER_KAFKA_IMAGE_LOCAL=${ASYNCINFER_KAFKA_IMAGE_LOCAL:-localhost/asyncinfer-kafka:$ASYNCINFER_KAFKA_VERSION}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# log prints progress on stderr, so that stdout carries only the one answer a
# script gives (an address, a directory, a DOCKER_HOST) for callers to capture.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

# die prints one line saying what failed and exits.
die() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# apt_install installs Debian packages when we are root and apt exists; the
# package lists are refreshed only when a first try fails, which keeps a warm
# machine off the network.
apt_install() {
	if [ "$(id -u)" != 0 ] || ! have apt-get; then
		die "needs $* (install them, or run as root on Debian)"
	fi
	log "installing $* from Debian packages"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq "$@" >/dev/null 2>&1; then
		apt-get update -qq >/dev/null 2>&1 || true
		apt-get install -y -qq "$@" >/dev/null 2>&1 || die "could not install Debian packages: $*"
	fi
}

# port_open reports whether something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a port on 127.0.0.1 that nothing listens on, from a random
# start, so that concurrent runs seldom pick the same one. It picks below the
# kernel's ephemeral range: a port inside it can be taken between this check
# and the server's bind by the local end of any outgoing connection (a test
# suite opens hundreds to its broker), and the server then fails to bind.
free_port() {
	local lo=32768 span p i
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
	((lo > 12000)) || lo=32768
	span=$((lo - 10000))
	p=$((10000 + RANDOM % span))
	for ((i = 0; i < 200; i++)); do
		port_open "$p" || {
			echo "$p"
			return 0
		}
		p=$((10000 + (p - 10000 + 1) % span))
	done
	die "no free port found on 127.0.0.1"
}

# new_cluster_id prints a random KRaft cluster id in the form that
# `kafka-storage random-uuid` prints (a UUID in URL-safe base64 without padding,
# never starting with '-'), without paying for a JVM start.
new_cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		[ "${id:0:1}" != - ] && break
	done
	echo "$id"
}

# ensure_podman installs podman and runc from Debian when missing, and gives
# them the two settings this kind of machine needs (a drop-in file, so the
# machine's own containers.conf stays as it is):
#   - runc, because crun fails here (cgroups in hybrid mode);
#   - ulimits within the machine's hard limits (nofile 20000): podman's
#     defaults exceed them and every container fails with
#     "setrlimit RLIMIT_NOFILE: Operation not permitted".
ensure_podman() {
	if ! have podman || ! have runc; then
		apt_install podman runc
	fi
	local conf=/etc/containers/containers.conf.d/50-asyncinfer.conf want
	local nofile nproc
	nofile=$(ulimit -Hn)
	nproc=$(ulimit -Hu)
	[ "$nofile" = unlimited ] && nofile=1048576
	[ "$nproc" = unlimited ] && nproc=4096
	((nofile > 1048576)) && nofile=1048576
	((nproc > 4096)) && nproc=4096
	want=$(
		cat <<CONF
# Written by asyncinfer's deploy/kafka/lib.sh (ensure_podman).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
CONF
	)
	if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
		[ "$(id -u)" = 0 ] || die "podman needs $conf (as root: re-run this script)"
		mkdir -p "${conf%/*}"
		echo "$want" >"$conf"
		log "wrote $conf (runtime runc, ulimits nofile $nofile, nproc $nproc)"
	fi
}
