#!/usr/bin/env bash
# Stop the single-machine SLURM cluster started by slurm/start-cluster.sh.
#
#   slurm/stop-cluster.sh          # stop daemons, keep state (accounting, job history)
#   slurm/stop-cluster.sh --purge  # stop daemons and delete the state folder
#
# Only the daemons whose pid files live in $BRAINXL_SLURM_DIR are stopped.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BRAINXL_SLURM_DIR:-$REPO/.slurm-cluster}"
log() { printf '[stop-cluster] %s\n' "$*"; }

if [ ! -d "$DIR/run" ]; then
    log "no cluster state in $DIR"
    exit 0
fi
export SLURM_CONF="$DIR/etc/slurm.conf"
export PATH="/usr/sbin:/usr/bin:$PATH"
if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null; then
    timeout 10 scancel --user="$(id -un)" >/dev/null 2>&1 || true
fi

stop_pid() {  # name pidfile
    local name="$1" pidfile="$2" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

stop_pid "slurmd n1" "$DIR/run/slurmd-n1.pid"
stop_pid "slurmd n2" "$DIR/run/slurmd-n2.pid"
stop_pid slurmctld "$DIR/run/slurmctld.pid"
stop_pid slurmdbd "$DIR/run/slurmdbd.pid"
stop_pid mariadbd "$DIR/run/mariadb.pid"
stop_pid munged "$DIR/run/munged.pid"

if [ "${1:-}" = "--purge" ]; then
    log "removing $DIR"
    rm -rf "$DIR"
fi
log "stopped"
