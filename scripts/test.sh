#!/usr/bin/env bash
# The test command (README, .ci/run): installs and starts what the tests need on a fresh machine
# of this kind (python-svc), builds valarfast with its compiled kernels, and runs the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k blobs`).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[test.sh] %s\n' "$*"; }

# openssh-server: the tunnel tests start their own sshd on 127.0.0.1
if [ ! -x /usr/sbin/sshd ]; then
  say "installing openssh-server (tunnel tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq openssh-server openssh-client >/dev/null
fi

# MariaDB: this machine kind starts it before the session; start it if it is down
if ! mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  say "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 60); do
    mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 1
  done
fi

say "building and installing valarfast with its test extras"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# the compiled kernels must be what runs: a missing or stale extension is an import error
export VALARFAST_REQUIRE_COMPILED=1
python3 -c 'import valarfast.blobs as b; print("[test.sh] kernels:", b.BACKEND)'
python3 -m pytest "$@"
