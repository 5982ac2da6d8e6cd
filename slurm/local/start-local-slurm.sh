#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for knobsweep's tests and benches (and for trying
# `snakemake --profile slurm` without a cluster): slurmctld + slurmd + slurmdbd (MariaDB, so that
# `sacct` works, as the Slurm executor plugin expects) on localhost, Debian's slurm-wlm + munge.
#
#   sudo slurm/local/start-local-slurm.sh      # ~1 min the first time (apt-get), ~12 s from cold, <1 s if up
#   sudo slurm/local/stop-local-slurm.sh
#
# No systemd: every daemon is started directly and tracked by its PID file. Running it again
# leaves running daemons alone (they restart only when the generated config changed) and waits
# until the node is idle. It writes /etc/slurm/{slurm,gres,slurmdbd}.conf: use it on a machine
# or container of its own, never on a host that is part of a real cluster.
#
# Settings (environment):
#   SLURM_FAKE_GPUS=N         N fake GPUs (gres) when the machine has no /dev/nvidia*: GPU
#                             scheduling and CUDA_VISIBLE_DEVICES can be tested without a GPU
#   SLURM_PARTITION=debug     the (default) partition's name
#   SLURM_CLUSTER=localcluster
#   SLURM_MEM_FRACTION=95     RealMemory = this % of what slurmd detects
set -euo pipefail

FAKE_GPUS=${SLURM_FAKE_GPUS:-0}
PARTITION=${SLURM_PARTITION:-debug}
CLUSTER=${SLURM_CLUSTER:-localcluster}
MEM_FRACTION=${SLURM_MEM_FRACTION:-95}
CONF=/etc/slurm
RUN=/run/slurm
LOG=/var/log/slurm
DB_PASS=knobsweep-local   # MariaDB bound to 127.0.0.1, for slurmdbd only
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

say() { echo "[start-local-slurm $(date +%T)] $*"; }
die() { echo "[start-local-slurm] error: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pid() {
  alive "$1" || { rm -f "$1"; return 0; }
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$1"
}
wait_until() {  # wait_until SECONDS WHAT COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "$what did not come up within ${limit} s (logs: $LOG, /var/log/mysql)"
    sleep 0.5
  done
}

[ "$(id -u)" -eq 0 ] || die "run it as root (it installs packages and starts daemons): sudo $0"

# 1. Packages (Debian / Ubuntu). Maintainer scripts must not start daemons: this script does.
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them (Debian/Ubuntu only)"
  say "installing ${missing[*]}"
  policy_made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_made=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$policy_made" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# 2. This host: name, CPUs, memory (from slurmd itself), GPUs (real ones win over fake ones).
NODE=$(hostname -s)
getent hosts "$NODE" >/dev/null || { say "adding $NODE to /etc/hosts"; echo "127.0.0.1 $NODE" >>/etc/hosts; }
HARDWARE=$(slurmd -C | head -n 1)   # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ... RealMemory=24105
hw() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$HARDWARE"; }
CPUS=$(hw CPUs); MEMORY=$(hw RealMemory)
[ -n "$CPUS" ] && [ -n "$MEMORY" ] || die "cannot read CPUs and memory from 'slurmd -C': $HARDWARE"
NODE_LINE="NodeName=$NODE CPUs=$CPUS Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard)"
NODE_LINE+=" CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore)"
NODE_LINE+=" RealMemory=$((MEMORY * MEM_FRACTION / 100))"
GRES=""
REAL_GPUS=$(compgen -G '/dev/nvidia[0-9]*' | wc -l || true)
if [ "$REAL_GPUS" -gt 0 ]; then
  NODE_LINE+=" Gres=gpu:$REAL_GPUS"; GRES="NodeName=$NODE Name=gpu File=/dev/nvidia[0-$((REAL_GPUS - 1))]"
elif [ "$FAKE_GPUS" -gt 0 ]; then
  mkdir -p $RUN/fakegpu
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    # slurmd only takes character devices: /dev/null's numbers
    [ -c $RUN/fakegpu/nvidia$i ] || mknod $RUN/fakegpu/nvidia$i c 1 3
  done
  NODE_LINE+=" Gres=gpu:$FAKE_GPUS"; GRES="NodeName=$NODE Name=gpu File=$RUN/fakegpu/nvidia[0-$((FAKE_GPUS - 1))]"
fi

# 3. Directories and configuration.
mkdir -p /run/munge $RUN /var/spool/slurmctld /var/spool/slurmd $LOG /run/mysqld /var/log/mysql
chown munge:munge /run/munge && chmod 755 /run/munge
chown slurm:slurm $RUN /var/spool/slurmctld $LOG
chown mysql:mysql /run/mysqld /var/log/mysql

changed=0
write_if_changed() {  # write_if_changed PATH OWNER MODE < content
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; changed=1; say "wrote $1"; fi
  chown "$2" "$1"; chmod "$3" "$1"
}

write_if_changed $CONF/slurm.conf root:root 644 <<EOF_CONF
# written by knobsweep's slurm/local/start-local-slurm.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
MailProg=/bin/true
# a container has no cgroups to give: track processes by PID
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# finished jobs stay visible to squeue/scontrol for 10 minutes (the executor plugin may poll them)
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
GresTypes=gpu
$NODE_LINE State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF_CONF

printf '# written by knobsweep slurm/local/start-local-slurm.sh\n%s\n' "$GRES" | write_if_changed $CONF/gres.conf root:root 644

write_if_changed $CONF/slurmdbd.conf slurm:slurm 600 <<EOF_DBD
# written by knobsweep's slurm/local/start-local-slurm.sh (slurmdbd wants 0600, owned by SlurmUser)
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF_DBD

if [ "$changed" = 1 ]; then
  say "configuration changed: restarting whatever runs"
  stop_pid $RUN/slurmd.pid; stop_pid $RUN/slurmctld.pid; stop_pid $RUN/slurmdbd.pid
fi

# 4. munge (authentication between the daemons and the clients).
[ -s /etc/munge/munge.key ] || { say "creating the munge key"; mungekey --create --keyfile=/etc/munge/munge.key; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
alive /run/munge/munged.pid || { say "starting munged"; runuser -u munge -- /usr/sbin/munged; }
wait_until 20 munged bash -c 'munge -n | unmunge'

# 5. MariaDB and slurmdbd (accounting: sacct).
[ -d /var/lib/mysql/mysql ] || { say "initialising MariaDB"; mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null; }
if ! alive /run/mysqld/mysqld.pid; then
  say "starting mariadbd"
  setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --socket=/run/mysqld/mysqld.sock \
    --bind-address=127.0.0.1 --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1 &
fi
wait_until 60 mariadbd mariadb-admin ping
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
alive $RUN/slurmdbd.pid || { say "starting slurmdbd"; /usr/sbin/slurmdbd; }
wait_until 60 slurmdbd sacctmgr -n show cluster
sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

# 6. The controller, then the node.
alive $RUN/slurmctld.pid || { say "starting slurmctld"; /usr/sbin/slurmctld; }
wait_until 30 slurmctld bash -c 'scontrol ping | grep -q UP'
alive $RUN/slurmd.pid || { say "starting slurmd"; /usr/sbin/slurmd; }

resumed=0; end=$((SECONDS + 60))
while :; do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in
    idle | mixed | allocated | completing) break ;;
    *drain* | *down* | *inval* | *fail*)
      [ $resumed = 1 ] || { say "node is '$state': resuming it"; scontrol update nodename="$NODE" state=resume || true; resumed=1; } ;;
  esac
  [ $SECONDS -lt $end ] || die "node $NODE is not idle after 60 s ('$state'); see $LOG/slurmd.log and $LOG/slurmctld.log"
  sleep 0.5
done
srun -N1 -n1 -t 1 true || die "a first job step ('srun true') failed; see $LOG/slurmd.log"
say "cluster up: partition $PARTITION on $NODE"
sinfo -N -o '%N %P %T %c %m %G'
