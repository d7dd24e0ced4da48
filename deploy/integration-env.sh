#!/usr/bin/env bash
# Prints the environment the integration suite (integration/) needs, as
# `export` lines for `make test` to eval:
#
#   - KAFKA_BROKERS already set: an existing cluster; nothing to do.
#   - a Docker engine answers: testcontainers uses it with the upstream
#     apache/kafka image (or ASYNCINFER_KAFKA_IMAGE); nothing to do.
#   - otherwise, as root: podman from Debian with its Docker-compatible
#     socket, and the Kafka image built locally (deploy/kafka), both cached
#     so that a warm run rebuilds nothing.
#   - otherwise: nothing; the suite skips with one line (or fails under
#     ASYNCINFER_REQUIRE_INTEGRATION=1).
#
# Progress goes to stderr; a failed set-up says what failed in one line and
# prints nothing, so the suite reports why it has no broker.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${KAFKA_BROKERS:-}" ]; then
	exit 0
fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "integration-env: no Docker engine and not root: the integration suite will skip (set KAFKA_BROKERS to use a cluster)" >&2
	exit 0
fi
image=$("$here/kafka/build-image.sh") || {
	echo "integration-env: building the Kafka image failed (see above); the integration suite has no broker" >&2
	exit 0
}
host=$("$here/kafka/podman-service.sh" start) || {
	echo "integration-env: podman's Docker API socket did not start (see above); the integration suite has no broker" >&2
	exit 0
}
echo "export DOCKER_HOST=$host TESTCONTAINERS_RYUK_DISABLED=true ASYNCINFER_KAFKA_IMAGE=$image"
