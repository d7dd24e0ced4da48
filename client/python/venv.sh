#!/usr/bin/env bash
# The Python example's virtual environment: requirements.txt installed from
# PyPI into $ASYNCINFER_CACHE/pyclient/venv. Prints the path of its python.
#
#   client/python/venv.sh        # e.g. ~/.cache/asyncinfer/pyclient/venv/bin/python
#
# A warm run installs nothing: the stamp is the hash of requirements.txt, and
# a changed file rebuilds the environment from scratch (so no package of an
# older pin lingers). Concurrent runs wait for each other.
#
# Exit status: 0 ready; 2 this machine has no usable Python (3.10 or newer,
# with venv and pip) and cannot install one (that needs root and apt), which
# the tests take as the one reason to skip; 1 anything else, such as pip
# failing (its log is named).
#
# Environment: ASYNCINFER_PYTHON, the Python 3 to build with [python3], and
# ASYNCINFER_CACHE (deploy/kafka/lib.sh).
set -euo pipefail
. "$(dirname "$0")/../../deploy/kafka/lib.sh"
here=$(cd "$(dirname "$0")" && pwd) # lib.sh set it to its own directory

base=$ASYNCINFER_CACHE/pyclient
venv=$base/venv
py=${ASYNCINFER_PYTHON:-python3}

unusable() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
	exit 2
}

want=$(sha256sum <"$here/requirements.txt" | cut -c1-16)
ready() { [ "$(cat "$base/stamp" 2>/dev/null)" = "$want" ] && [ -x "$venv/bin/python" ]; }
if ready; then
	echo "$venv/bin/python"
	exit 0
fi

have "$py" || unusable "needs $py (Python 3.10 or newer) for the Python client's virtual environment"
# The pins (httpx2, truststore) are pip's resolution on Python 3.10 and newer.
"$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)' ||
	unusable "the pins in requirements.txt need Python 3.10 or newer; $py is $("$py" --version 2>&1)"

mkdir -p "$base"
exec 9>"$base/lock"
if have flock; then flock 9; fi
if ready; then # another run built it while we waited
	echo "$venv/bin/python"
	exit 0
fi

rm -rf "$venv" "$base/stamp"
log "creating the virtual environment $venv"
if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
	# Debian's python3 comes without ensurepip (python3-venv).
	rm -rf "$venv"
	if [ "$(id -u)" != 0 ] || ! have apt-get; then
		unusable "$py -m venv failed (no venv or ensurepip module; python3-venv installs them, as root)"
	fi
	apt_install python3-venv
	"$py" -m venv "$venv" || die "could not create $venv"
fi
log "installing client/python/requirements.txt from PyPI"
"$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt" >"$base/pip.log" 2>&1 ||
	die "pip install failed: $(tail -n 3 "$base/pip.log" | tr '\n' ' ') (log: $base/pip.log)"
echo "$want" >"$base/stamp"
echo "$venv/bin/python"
