#!/usr/bin/env bash
# Make a Docker engine answer on this machine, for the code node sandbox and its tests.
#
# Idempotent: installs Debian's docker.io and debootstrap when they are missing, starts dockerd
# in the background when no engine answers, then waits (bounded) until `docker info` works.
# Containers of the sandbox never get a network, so the daemon runs without a bridge and
# without touching iptables. Nothing here pulls an image: the sandbox image is built locally
# by `nexusflow sandbox build`.
#
# Environment:
#   NEXUSFLOW_DOCKERD_LOG   where dockerd logs (default: /var/log/nexusflow-dockerd.log)
#   NEXUSFLOW_DOCKER_WAIT_S how long to wait for the engine (default: 60)
#   NEXUSFLOW_DOCKER_NONINTERACTIVE  set: never prompt for a sudo password, fail instead
set -euo pipefail

log_file="${NEXUSFLOW_DOCKERD_LOG:-/var/log/nexusflow-dockerd.log}"
wait_s="${NEXUSFLOW_DOCKER_WAIT_S:-60}"

say() { echo "setup-docker: $*" >&2; }

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif [ -n "${NEXUSFLOW_DOCKER_NONINTERACTIVE:-}" ]; then
        sudo -n "$@" 2>/dev/null || {
            say "this needs root (sudo asks for a password): run sudo bash scripts/setup-docker.sh"
            exit 1
        }
    else
        sudo "$@"
    fi
}

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

if [ "$(id -u)" -ne 0 ] && [ -n "${NEXUSFLOW_DOCKER_NONINTERACTIVE:-}" ] &&
    ! engine_answers && ! sudo -n true 2>/dev/null; then
    say "no Docker engine answers, and making one needs root (sudo asks for a password):"
    say "run sudo bash scripts/setup-docker.sh"
    exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if engine_answers; then
    say "the Docker engine already answers"
    exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix:///var/run/docker.sock" ]; then
    say "DOCKER_HOST=${DOCKER_HOST} does not answer, and it is not an engine this script starts"
    exit 1
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: ${log_file})"
    mkdir -p "$(dirname "${log_file}")"
    sudo_if_needed setsid dockerd --bridge=none --iptables=false --ip6tables=false \
        >>"${log_file}" 2>&1 </dev/null &
    disown || true
fi

deadline=$((SECONDS + wait_s))
until engine_answers; do
    if [ "${SECONDS}" -ge "${deadline}" ]; then
        say "the Docker engine did not answer within ${wait_s} s; last lines of ${log_file}:"
        tail -n 20 "${log_file}" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "the Docker engine answers ($(docker version --format '{{.Server.Version}}'))"
