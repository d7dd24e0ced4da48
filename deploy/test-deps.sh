#!/usr/bin/env bash
# Installs what `make test` needs beyond Go, when it is missing and this
# machine can install it (root and apt): Chromium, for the status page's
# browser test. Without root or apt it says what is missing and carries on;
# the browser test then skips (or fails under ASYNCINFER_REQUIRE_BROWSER=1).
#
# Also MLServer's virtual environment and the iris model (deploy/mlserver,
# from PyPI; cached, so a warm run installs nothing), for the integration
# tests against a real model server. When that fails those tests start it
# themselves and say why it failed.
#
# Also the Python client example's virtual environment (client/python/venv.sh,
# from PyPI; cached, so a warm run installs nothing), for the tests that run
# it. When that fails, those tests try again themselves and fail with the
# reason; without any Python they skip (or fail under
# ASYNCINFER_REQUIRE_INTEGRATION=1).
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have chromium; then
	if [ "$(id -u)" = 0 ] && have apt-get; then
		echo "test-deps: installing chromium (browser test of the status page)"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
			apt-get update -qq >/dev/null 2>&1
			apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
				echo "test-deps: apt-get install chromium failed (no package mirror?); the browser test will skip" >&2
		fi
	else
		echo "test-deps: chromium is missing and cannot be installed here (needs root and apt); the browser test will skip" >&2
	fi
fi
if ! "$(dirname "$0")/mlserver/mlserver.sh" setup >/dev/null; then
	echo "test-deps: MLServer's set-up failed (see above); the MLServer integration tests will fail with the same reason" >&2
fi
if ! "$(dirname "$0")/../client/python/venv.sh" >/dev/null; then
	echo "test-deps: the Python client's virtual environment could not be built (see above); its tests will say why" >&2
fi
exit 0
