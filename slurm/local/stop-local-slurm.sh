#!/usr/bin/env bash
# Stop the cluster slurm/local/start-local-slurm.sh started, by PID file: jobs are cancelled first
# (their slurmstepd processes would outlive slurmd). Packages, configuration, state and the
# accounting database stay, so the next start takes seconds.
set -uo pipefail
say() { echo "[stop-local-slurm $(date +%T)] $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # stop NAME PIDFILE
  if alive "$2"; then
    local pid; pid=$(cat "$2")
    say "stopping $1 (pid $pid)"; kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { say "$1 is still running: SIGKILL"; kill -9 "$pid"; }
  fi
  rm -f "$2"
}
[ "$(id -u)" -eq 0 ] || { echo "[stop-local-slurm] error: run it as root: sudo $0" >&2; exit 1; }

if alive /run/slurm/slurmctld.pid; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs $jobs"; scancel $jobs 2>/dev/null
    for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
  fi
fi
stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop slurmdbd /run/slurm/slurmdbd.pid
stop mariadbd /run/mysqld/mysqld.pid
stop munged /run/munge/munged.pid
say "stopped"
