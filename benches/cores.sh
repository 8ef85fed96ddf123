# benches/cores.sh: split this machine's cores between load generators and servers, and count
# the CPU a server spends (sourced by compare.sh and ab.sh).
#
#   split_cores LIST     # LIST in taskset syntax (0, 0-1, 0,2); empty: everything shares every core
#
# Sets CLIENT_RUN and SERVER_RUN (command prefixes: taskset, or nothing), SERVER_CORES (one core
# a line), SERVER_CORE_N, CLIENT_CORE_N, and NGINX_AFFINITY (the worker_cpu_affinity value that
# keeps nginx's workers on the server cores: "auto" alone pins its first worker to core 0 whatever
# taskset says). Returns 1 with a message on stderr for a list it cannot use.

# cores_of LIST: taskset-style list -> one core a line
cores_of() {
  local part
  for part in ${1//,/ }; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ $part =~ ^[0-9]+$ ]]; then echo "$part"
    else return 1; fi
  done
}

split_cores() {
  local list=$1 all cc c mask=""
  all=$(cores_of "$(awk '/^Cpus_allowed_list/{print $2}' /proc/self/status)") || all=$(seq 0 $(($(nproc) - 1)))
  CLIENT_RUN=()
  SERVER_RUN=()
  SERVER_CORES=$all
  CLIENT_CORE_N=$(echo "$all" | wc -l)
  NGINX_AFFINITY=auto
  if [[ -n $list ]]; then
    cc=$(cores_of "$list") || { echo "--client-cores wants a core list such as 0 or 0-1, got: $list" >&2; return 1; }
    for c in $cc; do
      grep -qx "$c" <<<"$all" || { echo "--client-cores: core $c is not one this process may use ($(echo $all))" >&2; return 1; }
    done
    SERVER_CORES=$(grep -vx -F "$cc" <<<"$all")
    [[ -n $SERVER_CORES ]] || { echo "--client-cores $list leaves no core for the servers" >&2; return 1; }
    CLIENT_RUN=(taskset -c "$(echo $cc | tr ' ' ,)")
    SERVER_RUN=(taskset -c "$(echo $SERVER_CORES | tr ' ' ,)")
    CLIENT_CORE_N=$(echo "$cc" | wc -l)
    for ((c = $(echo "$all" | sort -n | tail -n1); c >= 0; c--)); do
      if grep -qx "$c" <<<"$SERVER_CORES"; then mask+=1; else mask+=0; fi
    done
    NGINX_AFFINITY="auto $mask"
  fi
  SERVER_CORE_N=$(echo "$SERVER_CORES" | wc -l)
}

# cpu_ticks PID: user+system clock ticks of the process and its children's live processes
# (nginx's workers), every thread included (io_uring's io-wq threads are the server's threads).
cpu_ticks() {
  local p t=0
  for p in $1 $(pgrep -P "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
