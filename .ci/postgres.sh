#!/usr/bin/env bash
# A real PostgreSQL for the tests of `kexp sweep --storage postgresql://` (tests/test_sweep_search.py):
# Debian's package, its default cluster started, a role and a database for the tests. Prints the URL
# on stdout, alone, since .ci/run captures it (what the tools print goes to stderr); prints why on
# stderr and exits non-zero when it cannot (the tests then skip, saying so).
set -uo pipefail
if ! command -v pg_lsclusters >/dev/null; then
  (apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || { echo "postgres: apt-get install postgresql failed" >&2; exit 1; }
fi
cluster=$(pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1, $2}')
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$version" main >/dev/null || { echo "postgres: pg_createcluster failed" >&2; exit 1; }
  cluster="$version main"
fi
set -- $cluster
# A server killed with the machine leaves its pid file (pg_ctl removes it) and its socket's lock file
# (it does not): remove a lock whose process is gone, then start; a few tries, as a killed server's
# process can take a moment to be gone
start_cluster() {
  for lock in /var/run/postgresql/.s.PGSQL.*.lock; do
    [ -f "$lock" ] && ! kill -0 "$(head -n 1 "$lock")" 2>/dev/null && rm -f "$lock"
  done
  pg_ctlcluster "$1" "$2" start >&2 || pg_lsclusters --no-header | grep -q online
}
started=no
for _ in 1 2 3 4 5; do start_cluster "$1" "$2" && { started=yes; break; }; sleep 1; done
[ "$started" = yes ] || { echo "postgres: cluster $1/$2 did not start" >&2; exit 1; }
port=$(pg_lsclusters --no-header | awk -v v="$1" -v c="$2" '$1 == v && $2 == c {print $3}')
as_postgres() { su postgres -c "psql -p $port -qtAc \"$1\"" 2>/dev/null; }
for _ in $(seq 1 30); do as_postgres "select 1" >/dev/null && break; sleep 0.5; done
[ "$(as_postgres "select 1 from pg_roles where rolname='kexp'")" = "1" ] || as_postgres "create role kexp login createdb password 'kexp'" >/dev/null
[ "$(as_postgres "select 1 from pg_database where datname='kexp_test'")" = "1" ] || as_postgres "create database kexp_test owner kexp" >/dev/null
echo "postgresql://kexp:kexp@127.0.0.1:$port/kexp_test"
