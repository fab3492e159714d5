#!/usr/bin/env bash
# A one-node SLURM cluster on this Debian machine, for running profiles/slurm for real (as root).
#
#   scripts/local_slurm.sh up DIR     install what is missing, write the configs into DIR, start munged,
#                                     MariaDB, slurmdbd, slurmctld and slurmd; return once the node is idle
#   scripts/local_slurm.sh down DIR   stop every daemon `up` started, by the process ids it wrote in DIR
#
# The node looks like a GPU server whatever this machine is: 32 CPUs, 512 GiB, four "h100" GPUs
# (gres backed by dummy files), partitions `cpu` and `gpu`, accounting through slurmdbd with the account
# `valueguide`. So every sbatch line of profiles/slurm is accepted as written, while jobs compute on the
# CPU (run with `device: cpu`). Its daemons run as root and keep everything under DIR.
set -euo pipefail

ACCOUNT=valueguide
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

usage() { echo "usage: $0 up|down DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
case $2 in
  *[!A-Za-z0-9._/+-]*) echo "local_slurm: DIR must be a plain path (letters, digits, . _ / + -): the SLURM configs hold it unquoted" >&2; exit 2 ;;
esac
mkdir -p "$2"
dir=$(cd "$2" && pwd)
host=$(hostname -s)

say() { echo "local_slurm: $*" >&2; }
fail() { say "$*"; exit 1; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until the command succeeds
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 4))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  fail "$what did not come up in ${seconds}s (logs in $dir/log)"
}

start() {  # start NAME COMMAND...: run a daemon in the foreground mode, in the background, pid kept
  local name=$1
  shift
  "$@" >"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/pids/$name"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  # policy-rc.d keeps the packages' own services from starting: this script starts what it needs
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$dir/log/apt.log" 2>&1 \
    || { apt-get update -q >>"$dir/log/apt.log" 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$dir/log/apt.log" 2>&1; } \
    || fail "apt-get install ${missing[*]} failed (see $dir/log/apt.log)"
}

write_configs() {
  mkdir -p "$dir/etc" "$dir/state" "$dir/spool" "$dir/dev"
  local gpu
  for gpu in 0 1 2 3; do : >"$dir/dev/gpu$gpu"; done
  cat >"$dir/etc/slurm.conf" <<EOF
ClusterName=valueguide
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/state/slurmctld.pid
SlurmdPidFile=$dir/state/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$host CPUs=32 RealMemory=524288 Gres=gpu:h100:4 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
  cat >"$dir/etc/gres.conf" <<EOF
NodeName=$host Name=gpu Type=h100 File=$dir/dev/gpu[0-3]
EOF
  cat >"$dir/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=16819
SlurmUser=root
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/state/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$dir/etc/slurmdbd.conf"
  # Where every SLURM command looks, job steps inside jobs included: links to these files. A
  # configuration that is not ours is never replaced.
  mkdir -p /etc/slurm
  local name
  for name in slurm.conf gres.conf slurmdbd.conf; do
    if [ -e "/etc/slurm/$name" ] && [ ! -L "/etc/slurm/$name" ]; then
      fail "/etc/slurm/$name exists and is not a link made by this script: this machine has SLURM set up already"
    fi
    ln -sfn "$dir/etc/$name" "/etc/slurm/$name"
  done
}

up() {
  mkdir -p "$dir/log" "$dir/pids" "$dir/mysql" "$dir/munge"
  [ "$(id -u)" -eq 0 ] || fail "needs root (the daemons run as root)"
  install_packages
  write_configs
  [ -s /etc/munge/munge.key ] || /usr/sbin/mungekey --create >/dev/null 2>&1 \
    || fail "no munge key and mungekey could not make one"
  if ! munge -n >/dev/null 2>&1; then  # the clients (sacctmgr among them) use munge's default socket
    mkdir -p /run/munge
    start munged /usr/sbin/munged --foreground --force --pid-file="$dir/munge/munged.pid" \
      --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
    wait_for 20 munged munge -n
  fi
  if [ ! -d "$dir/mysql/mysql" ]; then
    mariadb-install-db --user=root --datadir="$dir/mysql" --auth-root-authentication-method=normal \
      >"$dir/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed (see $dir/log/mariadb-install.log)"
  fi
  start mariadbd /usr/sbin/mariadbd --user=root --datadir="$dir/mysql" --socket="$dir/mysql.sock" \
    --port=3306 --bind-address=127.0.0.1 --pid-file="$dir/mysql.pid"
  wait_for 60 MariaDB mariadb --socket="$dir/mysql.sock" -uroot -e "select 1"
  mariadb --socket="$dir/mysql.sock" -uroot -e "create database if not exists slurm_acct_db;
    create user if not exists 'slurm'@'localhost' identified by 'slurm';
    create user if not exists 'slurm'@'127.0.0.1' identified by 'slurm';
    grant all on slurm_acct_db.* to 'slurm'@'localhost'; grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1'"
  start slurmdbd /usr/sbin/slurmdbd -D
  wait_for 60 slurmdbd sacctmgr -i show cluster
  sacctmgr -i add cluster valueguide >/dev/null 2>&1 || true
  sacctmgr -i add account "$ACCOUNT" cluster=valueguide >/dev/null 2>&1 || true
  sacctmgr -i add user root account="$ACCOUNT" cluster=valueguide >/dev/null 2>&1 || true
  start slurmctld /usr/sbin/slurmctld -D -i
  wait_for 60 slurmctld scontrol ping
  start slurmd /usr/sbin/slurmd -D
  wait_for 90 "the node" bash -c '[ "$(sinfo -h -N -o %t | sort -u)" = idle ]'
  sacct -n -X -S now >/dev/null 2>&1 || fail "sacct does not answer: accounting is not up (see $dir/log)"
  say "up: node $host idle, account $ACCOUNT, configuration in $dir/etc (linked from /etc/slurm)"
}

down() {
  local name pid
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    [ -f "$dir/pids/$name" ] || continue
    pid=$(cat "$dir/pids/$name")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pids/$name"
  done
  for name in slurm.conf gres.conf slurmdbd.conf; do
    [ "$(readlink "/etc/slurm/$name" 2>/dev/null)" = "$dir/etc/$name" ] && rm -f "/etc/slurm/$name"
  done
  say "down"
}

case $action in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
