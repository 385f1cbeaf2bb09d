#!/usr/bin/env bash
# End-to-end proof against real Portage (bug 684940): real emaint/emerge from
# PyPI's portage, a real rsync daemon and a real git daemon on 127.0.0.1, real
# concurrent syncs and real SIGKILLs. rsync: 1 control (unwrapped syncs
# collide), 2 wrapped syncs never fail and leave the tree identical to the
# source, 3 SIGKILL during the copy then recovery, 4 an unwrapped sync that a
# wrapped one waits for. git: 5 control, 6 wrapped, 7 SIGKILL while git holds
# .git/shallow.lock then recovery. Every wait is bounded; each daemon is
# stopped by its own PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
rounds=${PROOF_ROUNDS:-3}

say() { printf 'proof: %s\n' "$*"; }
die() { printf 'proof: FAILED: %s\n' "$*" >&2; exit 1; }

command -v rsync >/dev/null || die "rsync is needed: apt-get install rsync"
# Where cargo put the binary (target/release, or under CARGO_TARGET_DIR).
synclock=$(cargo build --quiet --release --manifest-path "$top/Cargo.toml" --message-format=json |
  python3 -c 'import json, sys; print(*[m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")])')

# Portage from PyPI, in a venv cached under target/.
venv=$top/target/portage-venv
if [ ! -x "$venv/bin/emaint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet portage==3.0.83
fi

work=$(mktemp -d /tmp/synclock-proof.XXXXXX)
daemon_pid='' git_daemon_pid=''
cleanup() {
  for pid in $daemon_pid $git_daemon_pid; do
    if kill "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

src=$work/src repo=$work/repos/proof lock=$work/sync.lock
mkdir -p "$work/repos" "$work/config/etc/portage" "$work/tmp"
python3 "$here/gentree.py" "$src" 1 0
ln -s "$src/profiles/base" "$work/config/etc/portage/make.profile"
say "source tree: $(find "$src" -type f | wc -l) files"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/rsyncd.conf" <<CONF
use chroot = no
uid = root
gid = root
[gentoo-portage]
path = $src
read only = yes
CONF
rsync --daemon --no-detach --address=127.0.0.1 --port="$port" --config="$work/rsyncd.conf" &
daemon_pid=$!
# await_daemon NAME PID CHECK...: until CHECK answers (bounded), or the
# daemon has died.
await_daemon() {
  local name=$1 pid=$2 _
  shift 2
  for _ in $(seq 100); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "$name did not start"
    sleep 0.05
  done
  die "$name did not answer"
}
await_daemon "rsync daemon" "$daemon_pid" rsync --list-only "rsync://127.0.0.1:$port/"

export PORTAGE_REPOSITORIES="[DEFAULT]
main-repo = proof
[proof]
location = $repo
sync-type = rsync
sync-uri = rsync://127.0.0.1:$port/gentoo-portage
auto-sync = yes
sync-rsync-verify-metamanifest = no
"
export PORTAGE_USERNAME=root PORTAGE_GRPNAME=root PORTAGE_CONFIGROOT=$work/config
export PORTAGE_TMPDIR=$work/tmp SYNCLOCK_LOCKFILE=$lock
# Every Portage run is bounded: a hung sync fails the proof instead of CI.
emaint=(timeout 300 "$venv/bin/emaint" sync -r proof)
emerge=(timeout 300 "$venv/bin/emerge" --sync proof)

same_as_source() {
  diff -r --exclude=.tmp-unverified-download-quarantine "$src" "$repo" >/dev/null
}
next_round=2
# SIGKILLs every process of the session $1 (setsid made it its leader:
# timeout(1) puts itself in a process group of its own, not a session), and
# fails ($2 names the round) if any is left after a bounded wait.
kill_session() {
  pkill -KILL -s "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  for _ in $(seq 500); do pgrep -s "$1" >/dev/null || return 0; sleep 0.01; done
  die "$2: processes of the killed sync are left: $(pgrep -a -s "$1" | tr '\n' ' ')"
}
new_round() { python3 "$here/gentree.py" "$src" "$next_round" 0.05; next_round=$((next_round + 1)); }

"$synclock" -q -- "${emaint[@]}" >"$work/first.log" 2>&1 || die "first sync failed: $(tail -3 "$work/first.log")"
same_as_source || die "first sync: tree differs from the source"

# 1. Control: two unwrapped syncs 0.3 s apart.
collisions=0
for round in $(seq "$rounds"); do
  new_round
  "${emaint[@]}" >"$work/c1.log" 2>&1 & a=$!
  sleep 0.3
  "${emaint[@]}" >"$work/c2.log" 2>&1 & b=$!
  ra=0 rb=0; wait "$a" || ra=$?; wait "$b" || rb=$?
  if [ "$ra" != 0 ] || [ "$rb" != 0 ]; then
    collisions=$((collisions + 1))
    why=$(grep -hoE "cannot remove '[^']*': Directory not empty|RepoStorageException|mkstemp .* failed: No such file or directory" "$work"/c?.log | sort -u | head -2 | tr '\n' ' ')
    say "control round $round: exit codes $ra $rb: $why"
  fi
done
say "1. control: $collisions of $rounds rounds of unwrapped concurrent syncs failed"
[ "$collisions" -ge 1 ] || die "the control never collided: the test does not exercise the race"
"$synclock" -q -- "${emaint[@]}" >"$work/reset.log" 2>&1 || die "reset sync failed"

# 2. Wrapped: three concurrent syncs per round, emaint and emerge mixed.
# wrapped_round PREFIX SPACING: runs them; counts a failure in $failures.
wrapped_round() {
  local pids=() i cmd
  for i in 1 2 3; do
    if [ "$i" = 2 ]; then cmd=("${emerge[@]}"); else cmd=("${emaint[@]}"); fi
    "$synclock" --wait 5m -- "${cmd[@]}" >"$work/$1$i.log" 2>&1 & pids+=($!)
    sleep "$2"
  done
  for i in 0 1 2; do
    wait "${pids[$i]}" || { failures=$((failures + 1)); say "wrapped sync $((i + 1)) of round $round failed: $(tail -2 "$work/$1$((i + 1)).log")"; }
  done
}
failures=0
for round in $(seq "$rounds"); do
  new_round
  wrapped_round w 0.3
  same_as_source || die "round $round: synced tree differs from the source"
done
say "2. wrapped: $failures failures in $rounds rounds x 3 concurrent syncs; tree identical to the source after each round"
[ "$failures" = 0 ] || die "wrapped syncs failed"

# 3. Faults: SIGKILL the whole wrapped sync during the copy, then recover.
for round in $(seq "$rounds"); do
  new_round
  setsid "$synclock" --wait 5m -- "${emaint[@]}" >"$work/k.log" 2>&1 & victim=$!
  for _ in $(seq 400); do
    [ -d "$repo/.tmp-unverified-download-quarantine" ] && break
    kill -0 "$victim" 2>/dev/null || break
    sleep 0.01
  done
  sleep "0.$((RANDOM % 5))"
  kill_session "$victim" "round $round"
  "$synclock" --wait 5m -- "${emaint[@]}" >"$work/r.log" 2>&1 || die "recovery sync of round $round failed: $(tail -3 "$work/r.log")"
  grep -q "did not finish; .*proof: forced a full compare" "$work/r.log" || die "round $round: the interrupted run was not reported"
  [ ! -e "$repo/.tmp-unverified-download-quarantine" ] || die "round $round: quarantine left behind"
  same_as_source || die "round $round: tree differs from the source after recovery"
done
say "3. faults: $rounds wrapped syncs SIGKILLed (their whole session) during the copy; each recovery reported the interrupted run, forced a full compare, left no quarantine and an identical tree"

# 4. Mixed: an unwrapped sync first, a wrapped one 0.3 s later waits for it.
new_round
"${emaint[@]}" >"$work/u.log" 2>&1 & unwrapped=$!
sleep 0.3
kill -0 "$unwrapped" 2>/dev/null || die "the unwrapped sync ended within 0.3 s; nothing to wait for"
"$synclock" --wait 5m -- "${emaint[@]}" >"$work/m.log" 2>&1 || die "wrapped sync failed: $(tail -3 "$work/m.log")"
wait "$unwrapped" || die "unwrapped sync failed: $(tail -3 "$work/u.log")"
grep -q "which runs\? outside synclock" "$work/m.log" || die "the wrapped sync did not wait for the unwrapped one: $(cat "$work/m.log")"
same_as_source || die "mixed: tree differs from the source"
say "4. mixed: the wrapped sync waited for the unwrapped one ($(grep -o 'waiting for PID [0-9]*' "$work/m.log")); both succeeded"

# 5-7. git: a sync-type = git repository served by git daemon on 127.0.0.1.
# Portage writes its repo_revisions under ROOT and runs `git config
# --system`: both go to files of the proof.
gsrc=$work/gitsrc grepo=$work/repos/gitproof
commit_round() { # $1: the fraction of packages that change
  python3 "$here/gentree.py" "$gsrc" "$next_round" "$1"
  next_round=$((next_round + 1))
  git -C "$gsrc" add -A && git -C "$gsrc" -c user.name=proof -c user.email=proof@localhost commit -qm "round $next_round"
}
python3 "$here/gentree.py" "$gsrc" 1 0
git -C "$gsrc" init -q && git -C "$gsrc" add -A && git -C "$gsrc" -c user.name=proof -c user.email=proof@localhost commit -qm "round 1"
gport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
git daemon --base-path="$work" --export-all --listen=127.0.0.1 --port="$gport" --reuseaddr "$gsrc" 2>"$work/git-daemon.log" &
git_daemon_pid=$!
await_daemon "git daemon" "$git_daemon_pid" git ls-remote "git://127.0.0.1:$gport/gitsrc"
export PORTAGE_REPOSITORIES="[DEFAULT]
main-repo = proof
[proof]
location = $grepo
sync-type = git
sync-uri = git://127.0.0.1:$gport/gitsrc
auto-sync = yes
"
mkdir -p "$work/root"
export ROOT=$work/root GIT_CONFIG_SYSTEM=$work/gitconfig-system GIT_CONFIG_GLOBAL=$work/gitconfig-global
touch "$GIT_CONFIG_SYSTEM" "$GIT_CONFIG_GLOBAL"
git_same() {
  [ "$(git -C "$grepo" rev-parse HEAD)" = "$(git -C "$gsrc" rev-parse HEAD)" ] &&
    [ -z "$(git -C "$grepo" status --porcelain)" ] &&
    diff -r --exclude=.git "$gsrc" "$grepo" >/dev/null
}
"$synclock" -q -- "${emaint[@]}" >"$work/gfirst.log" 2>&1 || die "first git sync failed: $(tail -3 "$work/gfirst.log")"
git_same || die "first git sync: tree differs from the source"

# 5. Control: three unwrapped syncs 0.05 s apart, half of the packages
# changed; a round fails when a sync fails or the tree then differs.
grounds=$rounds collisions=0
for round in $(seq "$grounds"); do
  commit_round 0.5
  pids=()
  for i in 1 2 3; do "${emaint[@]}" >"$work/gc$i.log" 2>&1 & pids+=($!); sleep 0.05; done
  codes=""; for pid in "${pids[@]}"; do code=0; wait "$pid" || code=$?; codes="$codes $code"; done
  if [ "$codes" != " 0 0 0" ] || ! git_same; then
    collisions=$((collisions + 1))
    why=$(grep -hoE "(fatal|error): .*" "$work"/gc?.log | sed "s|$work/|.../|g" | sort -u | head -2 | tr '\n' ' ')
    say "git control round $round: exit codes$codes; $(git_same && echo "tree as the source" || echo "tree differs from the source"); $why"
    "$synclock" -q -- "${emaint[@]}" >"$work/greset.log" 2>&1 || die "git reset sync failed: $(tail -3 "$work/greset.log")"
  fi
done
say "5. git control: $collisions of $grounds rounds of unwrapped concurrent syncs failed or left a tree unlike the source"
[ "$collisions" -ge 1 ] || die "the git control never collided: the test does not exercise the race"

# 6. Wrapped: as 2.
failures=0
for round in $(seq "$rounds"); do
  commit_round 0.5
  wrapped_round gw 0.05
  git_same || die "git round $round: HEAD, status or tree differs from the source"
done
say "6. git wrapped: $failures failures in $rounds rounds x 3 concurrent syncs; HEAD as the source's, status clean, tree identical after each round"
[ "$failures" = 0 ] || die "wrapped git syncs failed"

# 7. SIGKILL a wrapped git sync while git holds .git/shallow.lock (seen,
# not guessed); the next wrapped sync removes the lock and succeeds.
lock="$grepo/.git/shallow.lock" killed=0
for attempt in $(seq 20); do
  commit_round 0.5
  setsid "$synclock" --wait 5m -- "${emaint[@]}" >"$work/gk.log" 2>&1 & victim=$!
  seen=0
  for _ in $(seq 200000); do
    [ -e "$lock" ] && { seen=1; break; }
    kill -0 "$victim" 2>/dev/null || break
  done
  kill_session "$victim" "git attempt $attempt"
  if [ "$seen" = 1 ] && [ -e "$lock" ]; then killed=1; break; fi
  "$synclock" -q -- "${emaint[@]}" >"$work/gr.log" 2>&1 || true
done
[ "$killed" = 1 ] || die "git never held $lock long enough to be killed holding it (20 attempts)"
start=$(date +%s%N)
"$synclock" --wait 5m -- "${emaint[@]}" >"$work/gr.log" 2>&1 || die "recovery git sync failed: $(tail -3 "$work/gr.log")"
took=$((($(date +%s%N) - start) / 1000000))
grep -q "removed stale git lock $lock" "$work/gr.log" || die "the recovery did not say it removed $lock: $(cat "$work/gr.log")"
git_same || die "git recovery: HEAD, status or tree differs from the source"
say "7. git faults: a wrapped git sync SIGKILLed (its whole session) while git held .git/shallow.lock; the next one removed the lock, said so, and succeeded in $took ms"
say "7 passed, 0 failed"
