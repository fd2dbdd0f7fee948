# Sourced by the PostgreSQL benches: starts a throwaway cluster in
# $WORK/pg (initdb as the postgres user, which the server needs) on a free
# 127.0.0.1 port, stops it by its PID when the script exits, and defines
# psql. Sets $pgbin and $port.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
rm -rf "$WORK" && mkdir -p "$WORK/pg"
chown -R postgres:postgres "$WORK/pg"
setpriv --reuid=postgres --regid=postgres --clear-groups -- \
  "$pgbin/initdb" -A trust -U postgres -E UTF8 --locale=C -D "$WORK/pg/data" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The server's defaults but for shared_buffers (256 MB, a small dedicated
# host's); fsync stays on, as a migration's state would run. setpriv execs
# the server, so $! is the postmaster's PID.
setpriv --reuid=postgres --regid=postgres --clear-groups -- \
  "$pgbin/postgres" -D "$WORK/pg/data" -p "$port" -h 127.0.0.1 -k "$WORK/pg" \
  -c shared_buffers=256MB >"$WORK/pg/log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
until "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port"; do sleep 0.1; done
psql() { "$pgbin/psql" -qAt -h 127.0.0.1 -p "$port" -U postgres "$@"; }
