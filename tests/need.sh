#!/usr/bin/env bash
# Installs what the tests and the benchmark start for real and this machine
# lacks: Debian's packages, as root, quietly, once. Where it cannot, it
# names them in one line with the command that installs them, and fails.
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want flock util-linux; want setpriv util-linux; want unshare util-linux; want mount mount
want script bsdutils; want pgrep procps; want rsync rsync; want git git; want cc gcc
want systemd-analyze systemd; want shellcheck shellcheck; want mandoc mandoc
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -x /usr/bin/time ] || need+=(time)
[ -e /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
[ -x "$(git --exec-path 2>/dev/null)/git-daemon" ] || need+=(git)
[ ${#need[@]} -eq 0 ] && exit 0
read -ra need <<<"$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "tests: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "tests: missing ${need[*]}; install them first: apt-get install ${need[*]}" >&2
  exit 1
fi
