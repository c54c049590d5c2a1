#!/usr/bin/env bash
# start-dockerd.sh — idempotent: make sure a Docker engine answers on a unix socket.
# The project's DockerSandbox (sandbox/docker.py) needs an engine; on machines with no
# systemd and no registry (CI, dev boxes here) this is how one gets started.
#   * installs Debian's docker.io if dockerd is missing (needs root + the Debian mirror)
#   * starts dockerd by hand if nothing answers (no systemd here), logs to a file,
#     waits until `docker info` answers (default max 20 s)
#   * prints the socket path on stdout (everything else goes to stderr)
# Safe in CI (CI=true, no stdin): never prompts, never leaves dockerd on our stdout/stderr.
#
# Env overrides: DOCKER_SOCK (/var/run/docker.sock), DOCKERD_PIDFILE (/var/run/docker.pid),
#                DOCKERD_LOG (/var/log/dockerd.log), DOCKERD_WAIT_S (20)
# Stop it again with:  kill "$(cat /var/run/docker.pid)"   (SIGTERM, graceful; takes ~1 s)
# Next step: `python -m sandbox.image` builds the sandbox image (no registry needed).
set -euo pipefail

SOCK="${DOCKER_SOCK:-/var/run/docker.sock}"
PIDFILE="${DOCKERD_PIDFILE:-/var/run/docker.pid}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
WAIT_S="${DOCKERD_WAIT_S:-20}"

log() { echo "start-dockerd: $*" >&2; }
# dockerd lives in /usr/sbin, which a CI/env -i PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if [ "$(id -u)" != 0 ]; then
  log "must run as root"; exit 1
fi

# 1. install ---------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1; then
  log "dockerd not found; installing docker.io from Debian"
  export DEBIAN_FRONTEND=noninteractive
  t0=$(date +%s)
  # --no-install-recommends: skips cgroupfs-mount/needrestart/etc.; postinst's service
  # start is refused by policy-rc.d / missing systemd, which is fine.
  for try in 1 2; do
    apt-get update -qq </dev/null >&2 &&
      apt-get install -y -qq --no-install-recommends docker.io </dev/null >&2 && break
    [ "$try" = 2 ] && { log "apt-get install docker.io failed"; exit 1; }
    sleep 3
  done
  log "docker.io installed in $(( $(date +%s) - t0 )) s"
fi

# Use the client that ships with docker.io (a newer static /usr/local/bin/docker may
# shadow it on PATH; it also works, it just negotiates the API down to 1.41).
DOCKER_CLI=/usr/bin/docker
[ -x "$DOCKER_CLI" ] || DOCKER_CLI="$(command -v docker)"

answers() { "$DOCKER_CLI" -H "unix://$SOCK" info >/dev/null 2>&1; }
# live PID [COMM]: PID exists, is not a zombie (and is named COMM). After `kill -9` the dead
# dockerd/containerd can stay <defunct> for seconds: PID 1 here is not a real init and
# reaps late, and kill -0 (which dockerd uses) still succeeds on a zombie.
live() {
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ] &&
    { [ -z "${2:-}" ] || [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }
}
live_dockerd() { live "$1" dockerd; }

# 2. already running? ------------------------------------------------------
if answers; then
  log "dockerd already answering"
  echo "$SOCK"; exit 0
fi

# A dockerd that is still starting (or a stale pidfile from a killed one)?
if [ -s "$PIDFILE" ]; then
  oldpid="$(cat "$PIDFILE")"
  if live_dockerd "$oldpid"; then
    log "dockerd pid $oldpid exists but does not answer yet; waiting"
    for _ in $(seq 1 $(( WAIT_S * 10 ))); do
      answers && { echo "$SOCK"; exit 0; }
      live_dockerd "$oldpid" || break
      sleep 0.1
    done
    if live_dockerd "$oldpid"; then
      log "dockerd pid $oldpid is alive but does not answer after ${WAIT_S}s; see $LOG"; exit 1
    fi
  fi
  # dockerd refuses to start while its pidfile names a live process; a dead one is stale.
  rm -f "$PIDFILE"
fi
# Same for the containerd that dockerd runs as its child: after `kill -9` of dockerd, the
# old containerd pid (dying or a zombie) makes the new dockerd wait for a socket nobody
# serves -> "failed to start containerd: timeout waiting for containerd to start".
CTRD_PIDFILE=/var/run/docker/containerd/containerd.pid
if [ -s "$CTRD_PIDFILE" ] && ! live "$(cat "$CTRD_PIDFILE")" containerd; then
  log "removing stale $CTRD_PIDFILE"
  rm -f "$CTRD_PIDFILE"
fi

# 3. start ------------------------------------------------------------------
# --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false:
# no docker0 bridge, no iptables/NAT rules, no sysctl change. Plain `dockerd` DOES start
# here, but it creates docker0, adds DOCKER* chains + a MASQUERADE rule to the host's
# iptables and sets net.ipv4.ip_forward=1 (even with --bridge=none unless
# --ip-forward=false). Containers get only loopback; sandbox code also passes
# network_disabled=True.
mkdir -p "$(dirname "$LOG")"
log "starting dockerd (log: $LOG)"
t0=$(date +%s%N)
setsid dockerd \
  --host "unix://$SOCK" \
  --pidfile "$PIDFILE" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
  </dev/null >>"$LOG" 2>&1 &
newpid=$!   # setsid does not fork here (a background child is no group leader)

alive() {  # the child we started, or whatever dockerd the pidfile names
  live "$newpid" && return 0
  [ -s "$PIDFILE" ] && live_dockerd "$(cat "$PIDFILE")"
}

for _ in $(seq 1 $(( WAIT_S * 10 ))); do
  if answers; then
    log "dockerd pid $(cat "$PIDFILE" 2>/dev/null || echo "$newpid") ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    echo "$SOCK"; exit 0
  fi
  if ! alive; then
    log "dockerd exited during start-up; last log lines:"; tail -n 20 "$LOG" >&2; exit 1
  fi
  sleep 0.1
done
log "dockerd did not answer within ${WAIT_S}s; last log lines:"; tail -n 20 "$LOG" >&2
exit 1
