#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the tests and print its URL on stdout (nothing on
# failure). Debian's `postgresql` package provides the server; it is installed when missing and
# apt can reach its mirror. The cluster lives in a temporary folder, owned by the `postgres`
# user when this runs as root (the server refuses to run as root), and listens on a local port
# only. Stop it with: pg_ctl -D "$PGDATA" stop (the folder is printed on stderr).
set -u
port="${GPT2TUI_TEST_PG_PORT:-54329}"
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bin="$(find_bin)"
if [ -z "$bin" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "postgres: installing Debian's postgresql package" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || true
    bin="$(find_bin)"
fi
if [ -z "$bin" ]; then
    echo "postgres: no PostgreSQL server here and apt could not install one; the PostgreSQL tests skip" >&2
    exit 0
fi
data="$(mktemp -d /tmp/gpt2tui-pg.XXXXXX)"
as_owner=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$data"
    as_owner=(runuser -u postgres --)
fi
if ! "${as_owner[@]}" "$bin/initdb" -D "$data/db" -U gpt2tui --auth=trust -E UTF8 >"$data/initdb.log" 2>&1 \
    || ! "${as_owner[@]}" "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w \
        -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >&2; then
    echo "postgres: could not start a server (see $data); the PostgreSQL tests skip" >&2
    exit 0
fi
"${as_owner[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U gpt2tui gpt2tui_test >&2 || true
echo "postgres: server in $data on 127.0.0.1:$port" >&2
echo "postgresql://gpt2tui@127.0.0.1:$port/gpt2tui_test"
