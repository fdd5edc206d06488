#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `slurm` tests and for trying videxp's sweeps on a
# laptop: Debian's slurmctld + slurmd + slurmdbd (accounting in a private MariaDB, so `sacct` answers as on a
# real cluster) and munge. Needs root and apt (Debian/Ubuntu).
#
#   tests/slurm/cluster.sh start    # install what is missing, write the configs, start, wait for an idle node
#   eval "$(tests/slurm/cluster.sh env)"   # SLURM_CONF for sbatch/squeue/sacct and videxp's launcher
#   tests/slurm/cluster.sh status   # the daemons, sinfo and the queue
#   tests/slurm/cluster.sh stop     # stop the daemons this script started (by their pids)
#
# Everything lives in $VIDEXP_SLURM_DIR (default /tmp/videxp-slurm): configs, state, logs, pids and the
# database; /etc/slurm is never written. The script refuses to start next to a SLURM it did not start.
set -euo pipefail

DIR=${VIDEXP_SLURM_DIR:-/tmp/videxp-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
DB_PORT=${VIDEXP_SLURM_DB_PORT:-3307}     # the private MariaDB (TCP on 127.0.0.1 only)
PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
DAEMONS=(mariadbd munged slurmdbd slurmctld slurmd)   # start order; stop goes backwards

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

pid_of() { [[ -s $DIR/$1.pid ]] && cat "$DIR/$1.pid" || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

wait_for() {  # wait_for <seconds> <what> <command...>: poll until the command succeeds
    local limit=$1 what=$2; shift 2
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        (( SECONDS - t0 < limit )) || die "$what not ready after ${limit}s; logs in $DIR/*.log"
        sleep 0.5
    done
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    (( ${#missing[@]} == 0 )) && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/apt.log" 2>&1 \
             && apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1; } \
        || die "apt-get install ${missing[*]} failed; see $DIR/apt.log"
}

foreign_slurm() {  # slurm daemons running that this script did not start
    local d p
    for d in slurmctld slurmd slurmdbd; do
        for p in $(pgrep -x "$d" || true); do
            [[ $p == "$(pid_of "$d")" ]] || echo "$d (pid $p)"
        done
    done
}

write_configs() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)   # ~80% of the memory
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/mysql"
    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: one node ($HOST), one partition, accounting through slurmdbd.
ClusterName=videxp
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=10
ReturnToService=2
JobRequeue=1
SlurmctldParameters=preempt_send_user_signal
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
DefMemPerCPU=$(( mem_mb / cpus ))
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
# Written by tests/slurm/cluster.sh: accounting into the private MariaDB on 127.0.0.1:$DB_PORT.
AuthType=auth/munge
DbdHost=$HOST
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=videxp
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start_mariadb() {
    if [[ ! -d $DIR/mysql/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
            >"$DIR/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/mariadb-install.log"
    fi
    mariadbd --user=root --datadir="$DIR/mysql" --socket="$DIR/mysql.sock" --pid-file="$DIR/mariadbd.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --log-error="$DIR/mariadbd.log" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb --socket="$DIR/mysql.sock" -e "select 1"
    mariadb --socket="$DIR/mysql.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'videxp';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_munged() {
    if pgrep -x munged >/dev/null && ! alive munged; then
        log "using the munged that is already running"
        return
    fi
    [[ -s /etc/munge/munge.key ]] || mungekey --create >/dev/null 2>&1 \
        || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid --force
    wait_for 20 munged test -s /run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/munged.pid"
    wait_for 20 munge bash -c 'munge -n | unmunge'
}

node_idle() { sinfo -h -N -o %t | grep -qx idle; }

start() {
    [[ $(id -u) == 0 ]] || die "needs root (it installs packages and starts daemons as root)"
    mkdir -p "$DIR"
    local foreign; foreign=$(foreign_slurm)
    [[ -z $foreign ]] || die "a SLURM this script did not start is running ($foreign); not touching it"
    if alive slurmctld && alive slurmd; then
        export SLURM_CONF=$CONF
        wait_for 60 "the node" node_idle
        log "already running ($DIR)"
        return
    fi
    local t0=$SECONDS
    install_packages
    stop_daemons
    write_configs
    export SLURM_CONF=$CONF
    alive mariadbd || start_mariadb
    alive munged || start_munged
    slurmdbd    # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 60 slurmdbd bash -c "ss -ltn | grep -q ':6819 '"
    sacctmgr -i add cluster videxp >/dev/null 2>&1 || true    # exists already after a restart
    slurmctld -f "$CONF"
    wait_for 60 slurmctld scontrol ping
    slurmd -f "$CONF"
    wait_for 60 "the node" node_idle
    log "cluster up in $(( SECONDS - t0 ))s ($DIR); run: eval \"\$($0 env)\""
}

stop_daemons() {  # the daemons with a pid file here, newest first; waits until each has exited
    local i d p
    for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do
        d=${DAEMONS[i]}
        p=$(pid_of "$d")
        [[ -n $p ]] || continue
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$p" 2>/dev/null || true
        fi
        rm -f "$DIR/$d.pid"
    done
}

status() {
    local d
    for d in "${DAEMONS[@]}"; do
        if alive "$d"; then echo "$d: running (pid $(pid_of "$d"))"; else echo "$d: stopped"; fi
    done
    if alive slurmctld; then
        SLURM_CONF=$CONF sinfo
        SLURM_CONF=$CONF squeue
    else
        return 3
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop_daemons ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: $0 start|stop|status|env" ;;
esac
