#!/usr/bin/env bash
# Builds the local Apache Kafka image, localhost/asyncinfer-kafka:<version>,
# with podman and without any container registry:
#   1. podman and runc from Debian, configured for this kind of machine;
#   2. a Java 17 base image, localhost/asyncinfer-jre17:bookworm, made with
#      debootstrap from Debian packages (the slow step: minutes);
#   3. the broker jars from fetch-kafka.sh and run-broker.sh as entry point;
#   4. a check that the new image serves on 127.0.0.1 (host networking).
# Each step is skipped when its result exists: podman's storage is the cache of
# both images, and the Kafka image carries a label with the hash of its inputs,
# so a changed entry point or version rebuilds it and nothing else does.
#
#   deploy/kafka/build-image.sh          # prints the image name
#   deploy/kafka/build-image.sh verify   # only step 4, on the existing image
#
# Environment: ASYNCINFER_DEBIAN_MIRROR (default: the machine's apt source),
# ASYNCINFER_BASE_IMAGE, ASYNCINFER_KAFKA_IMAGE_LOCAL, and those of lib.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

suite=bookworm
base=$ASYNCINFER_BASE_IMAGE
image=$ASYNCINFER_KAFKA_IMAGE_LOCAL

image_exists() { podman image exists "$1" 2>/dev/null; }

# debian_mirror prints the Debian archive this machine installs from.
debian_mirror() {
	local m=${ASYNCINFER_DEBIAN_MIRROR-}
	[ -n "$m" ] || m=$(sed -n 's/^URIs: *\([^ ]*debian\/*\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	[ -n "$m" ] || m=$(sed -n 's/^deb  *\(http[^ ]*\) .*main.*/\1/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1)
	echo "${m:-http://deb.debian.org/debian}"
}

build_base() {
	if image_exists "$base"; then
		return
	fi
	have debootstrap || apt_install debootstrap
	local mirror
	mirror=$(debian_mirror)
	rootfs=$(mktemp -d /var/tmp/asyncinfer-rootfs.XXXXXX)
	# debootstrap mounts /proc and /sys inside the tree; never delete through
	# a mount that a failed run left behind.
	remove_rootfs() {
		{ findmnt -rno TARGET | grep "^$rootfs/" || true; } | sort -r | xargs -r umount -l
		rm -rf --one-file-system "$rootfs"
	}
	trap remove_rootfs EXIT
	log "building $base with debootstrap from $mirror (takes minutes; log: $rootfs.log)"
	if ! debootstrap --variant=minbase --include=openjdk-17-jre-headless "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
		die "debootstrap of $suite with openjdk-17-jre-headless from $mirror failed: $(grep -E '^(E|W): ' "$rootfs.log" | tail -n 1) (log: $rootfs.log)"
	fi
	# What an image does not need: package lists and caches, docs, man pages.
	chroot "$rootfs" apt-get clean
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
	tar -C "$rootfs" -c . | podman import --quiet \
		--change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
		--message "debootstrap --variant=minbase --include=openjdk-17-jre-headless $suite" \
		- "$base" >/dev/null
	remove_rootfs
	trap - EXIT
	rm -f "$rootfs.log"
	log "built $base: $(podman run --rm --network none "$base" java -version 2>&1 | head -n 1)"
}

build_kafka() {
	local libs inputs ctx
	libs=$("$here/fetch-kafka.sh")
	inputs=$({
		podman image inspect --format '{{.Id}}' "$base"
		cat "$libs/.asyncinfer-complete" "$here/Containerfile" "$here/run-broker.sh"
	} | sha256sum | cut -c1-16)
	if image_exists "$image" &&
		[ "$(podman image inspect --format '{{index .Labels "asyncinfer.inputs"}}' "$image")" = "$inputs" ]; then
		log "$image is up to date"
		built=no
		return
	fi
	# The image this build replaces, removed once the new one is tagged.
	local old
	old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
	ctx=$(mktemp -d /var/tmp/asyncinfer-kafka-image.XXXXXX)
	trap 'rm -rf "$ctx"' EXIT
	cp -a "$libs" "$ctx/libs"
	cp "$here/Containerfile" "$here/run-broker.sh" "$ctx/"
	log "building $image"
	# --layers=false: our label, not podman's layer cache, decides what to
	# rebuild, and no intermediate images pile up.
	podman build --quiet --layers=false --network none -f "$ctx/Containerfile" --build-arg BASE="$base" \
		--label asyncinfer.inputs="$inputs" \
		--label org.opencontainers.image.title="Apache Kafka" \
		--label org.opencontainers.image.version="$ASYNCINFER_KAFKA_VERSION" \
		-t "$image" "$ctx" >/dev/null || die "podman build of $image failed"
	rm -rf "$ctx"
	trap - EXIT
	[ -z "$old" ] || podman rmi "$old" >/dev/null 2>&1 || true
	built=yes
}

# verify starts the image as a test would (upstream's variables, host
# networking, free ports on 127.0.0.1) and waits until the broker answers.
verify() {
	image_exists "$image" || die "$image does not exist: run build-image.sh first"
	local port cport name start
	port=$(free_port)
	cport=$(free_port)
	[ "$cport" != "$port" ] || cport=$((port + 1))
	name=asyncinfer-kafka-verify-$$
	start=$SECONDS
	podman run -d --rm --name "$name" --network host \
		-e KAFKA_NODE_ID=1 \
		-e KAFKA_PROCESS_ROLES=broker,controller \
		-e KAFKA_LISTENERS="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport" \
		-e KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://127.0.0.1:$port" \
		-e KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER \
		-e KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT \
		-e KAFKA_CONTROLLER_QUORUM_VOTERS="1@127.0.0.1:$cport" \
		-e KAFKA_INTER_BROKER_LISTENER_NAME=PLAINTEXT \
		-e KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 \
		-e KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 \
		-e KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 \
		-e KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 \
		-e CLUSTER_ID="$(new_cluster_id)" \
		"$image" >/dev/null || die "podman run $image failed"
	trap 'podman rm -f -t 0 "$name" >/dev/null 2>&1' EXIT
	local out
	until out=$("$here/probe.sh" "127.0.0.1:$port" 2>/dev/null); do
		if ! podman container exists "$name"; then
			die "the container exited before its broker answered"
		fi
		((SECONDS - start < 90)) || die "$image did not answer on 127.0.0.1:$port within 90s: $(podman logs "$name" 2>&1 | grep -E 'ERROR|Exception' | head -n 1)"
		sleep 0.5
	done
	log "verified $image in $((SECONDS - start))s: $out"
	podman stop -t 20 "$name" >/dev/null
	trap - EXIT
}

case "${1-build}" in
build)
	ensure_podman
	# One build at a time: a second caller waits, then finds the images made.
	# The lock is released before verify, whose container must not inherit it.
	mkdir -p "$ASYNCINFER_CACHE"
	{
		flock 9
		build_base
		build_kafka
	} 9>"$ASYNCINFER_CACHE/.build-image.lock"
	[ "$built" = no ] || verify
	echo "$image"
	;;
verify)
	ensure_podman
	verify
	;;
*) die "usage: build-image.sh [build|verify]" ;;
esac
