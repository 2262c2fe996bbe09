#!/usr/bin/env bash
# A private PostgreSQL server for the study tests (Debian's postgresql; no system service is touched).
#   postgres.sh install                 install the Debian package when the server binaries are missing (root)
#   postgres.sh start DATA_DIR PORT     create a cluster in DATA_DIR, start it on 127.0.0.1:PORT, print its URL
#   postgres.sh stop DATA_DIR           stop that server
# As root the cluster belongs to the `postgres` user (initdb refuses to run as root).
set -euo pipefail
bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "${1:-}" in
  install)
    if bindir >/dev/null; then exit 0; fi
    if [ "$(id -u)" -ne 0 ]; then
      echo "postgres.sh: no PostgreSQL server binaries and not root; run: apt-get install postgresql" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    ;;
  start)
    data=$2; port=$3
    bin=$(bindir) || { echo "postgres.sh: no PostgreSQL server binaries (postgres.sh install)" >&2; exit 1; }
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$data"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$data" -U deepobf --auth=trust >/dev/null
    fi
    as_owner "$bin/pg_ctl" -D "$data" -o "-p $port -k $data -c listen_addresses=127.0.0.1" -l "$data/server.log" \
      -w start >/dev/null
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U deepobf studies 2>/dev/null || true
    echo "postgresql://deepobf@127.0.0.1:$port/studies"
    ;;
  stop)
    bin=$(bindir)
    as_owner "$bin/pg_ctl" -D "$2" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: postgres.sh install | start DATA_DIR PORT | stop DATA_DIR" >&2
    exit 2
    ;;
esac
