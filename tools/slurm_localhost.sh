#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py and CI (root, Debian).
#
#   tools/slurm_localhost.sh install        # apt-get install slurm-wlm munge (if missing)
#   tools/slurm_localhost.sh start [DIR]    # munged + slurmctld + slurmd, state in DIR
#   tools/slurm_localhost.sh stop [DIR]
#
# start writes DIR/slurm.conf (default DIR: /tmp/fpt-slurm) for node "localhost" (127.0.0.1,
# every CPU of the machine), partition "debug"; no cgroups (proctrack/linuxproc, task/none), no
# accounting, the scheduler run every second; its last line on stdout is the SLURM_CONF=... that clients (sbatch, scontrol, the
# jobs) need. A requeued job waits cred_expire (5 s here, 120 s by default) before it starts
# again; KillWait (SIGTERM to SIGKILL) stays SLURM's 30 s. Logs: DIR/*.log.
set -euo pipefail

cmd=${1:-}
dir=${2:-/tmp/fpt-slurm}

need_root() {
    [ "$(id -u)" = 0 ] || { echo "slurm_localhost.sh: error: $1 needs root" >&2; exit 1; }
}

daemons_missing() {
    for tool in munged slurmctld slurmd sbatch scontrol; do
        command -v "$tool" >/dev/null || return 0
    done
    return 1
}

case "$cmd" in
install)
    daemons_missing || { echo "[slurm] slurm-wlm and munge are installed"; exit 0; }
    need_root install
    command -v apt-get >/dev/null || { echo "slurm_localhost.sh: error: no apt-get" >&2; exit 1; }
    echo "[slurm] apt-get install slurm-wlm munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    ;;
start)
    need_root start
    if daemons_missing; then
        echo "slurm_localhost.sh: error: SLURM is not installed (tools/slurm_localhost.sh install)" >&2
        exit 1
    fi
    "$0" stop "$dir" >/dev/null 2>&1 || true
    mkdir -p "$dir/ctld" "$dir/spool" /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    if ! munge -n >/dev/null 2>&1; then
        runuser -u munge -- munged
    fi
    cat >"$dir/slurm.conf" <<EOF
ClusterName=fpt-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -i
    slurmd -N localhost
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
        case "$state" in
        idle*) echo "[slurm] node localhost is idle (state and logs in $dir)"
            echo "SLURM_CONF=$SLURM_CONF"
            exit 0 ;;
        esac
        sleep 0.5
    done
    echo "slurm_localhost.sh: error: node localhost not idle after 30 s (state '$state'; logs in $dir)" >&2
    exit 1
    ;;
stop)
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$pidfile"
        fi
    done
    echo "[slurm] stopped (munged keeps running)"
    ;;
*)
    echo "usage: tools/slurm_localhost.sh install | start [DIR] | stop [DIR]" >&2
    exit 2
    ;;
esac
