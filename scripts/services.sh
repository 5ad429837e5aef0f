#!/usr/bin/env bash
# Local services for developing and testing orderd, without Docker:
#
#   mysql    MariaDB/MySQL on 127.0.0.1:3306, user root, no password (system service)
#   goaws    SQS emulator (github.com/Admiral-Piett/goaws v0.5.4) on 127.0.0.1:$SQS_PORT;
#            orderd talking to it runs with SQS_EMULATOR=goaws (the Makefile sets it), which
#            turns on the workarounds for goaws's departures from SQS (queues/emulator.go)
#   mailpit  SMTP sink on 127.0.0.1:$SMTP_PORT, web UI + API on 127.0.0.1:$MAILPIT_HTTP_PORT
#   local-aws-sqs  a second SQS implementation (npm local-aws-sqs 2.0.2) on 127.0.0.1:$SQS2_PORT,
#            for the tests that run on both, so the code cannot lean on one emulator's quirks
#
# Usage: scripts/services.sh up|down|status
#
#   up      installs/builds what is missing, starts what is not running, waits until
#           every service answers. Safe to run any number of times.
#   down    stops goaws, mailpit and local-aws-sqs if (and only if) this script started them
#           (pid files under .run/). MariaDB is a shared system service and is left running.
#   status  one line per service; exit status 1 if any is not answering.
#
# goaws and mailpit are built once with `go install` into .bin/; local-aws-sqs is installed
# once with `npm ci` (Node.js 18+, versions locked in dev/local-aws-sqs/package-lock.json)
# into .bin/local-aws-sqs/. Pid files and logs live in .run/. Both directories are gitignored.
#
# Environment (defaults in brackets):
#   SQS_PORT [4100]  SQS2_PORT [4101]  SMTP_PORT [1025]  MAILPIT_HTTP_PORT [8025]  MYSQL_PORT [3306]
#   MAILPIT_MAX_MESSAGES [100000]  GOAWS_LOGLEVEL [error]  GO [go]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SQS_PORT="${SQS_PORT:-4100}"
SQS2_PORT="${SQS2_PORT:-4101}"
SMTP_PORT="${SMTP_PORT:-1025}"
MAILPIT_HTTP_PORT="${MAILPIT_HTTP_PORT:-8025}"
MYSQL_HOST=127.0.0.1
MYSQL_PORT="${MYSQL_PORT:-3306}"
MAILPIT_MAX_MESSAGES="${MAILPIT_MAX_MESSAGES:-100000}"
# goaws logs every queue operation at info and every empty receive at warning level,
# which under load costs CPU and fills the disk; errors are what matter.
GOAWS_LOGLEVEL="${GOAWS_LOGLEVEL:-error}"

GOAWS_PKG=github.com/Admiral-Piett/goaws/app/cmd
GOAWS_VERSION=v0.5.4
MAILPIT_PKG=github.com/axllent/mailpit
MAILPIT_VERSION=v1.27.11
# Also in dev/local-aws-sqs/package.json and its package-lock.json, which pin it.
SQS2_VERSION=2.0.2

BIN_DIR="$ROOT/.bin"
RUN_DIR="$ROOT/.run"

# ---------------------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
err() { printf '%s\n' "$*" >&2; }
die() { err "$@"; exit 1; }

# tcp_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
tcp_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for SECONDS CMD...: retry CMD every 0.2 s until it succeeds or time runs out.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# go_cmd: the go tool, also when /usr/local/go/bin is not on PATH (e.g. under sudo).
go_cmd() {
	if [[ -n "${GO:-}" ]]; then
		"$GO" "$@"
	elif command -v go >/dev/null 2>&1; then
		go "$@"
	elif [[ -x /usr/local/go/bin/go ]]; then
		/usr/local/go/bin/go "$@"
	else
		die "go: not found; install Go 1.26 (https://go.dev/dl/) or set GO=/path/to/go"
	fi
}

# pid_cmdline PID: the command line of a live process ('' if it is gone).
pid_cmdline() {
	if [[ -r "/proc/$1/cmdline" ]]; then
		tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
	else
		ps -p "$1" -o command= 2>/dev/null || true
	fi
}

# our_pid NAME: prints the pid from .run/NAME.pid if that process is alive and is
# still our .bin/NAME, or a script under .bin/NAME/ run by an interpreter (guards against a
# recycled pid); fails otherwise.
our_pid() {
	local pidfile="$RUN_DIR/$1.pid" pid cmd
	[[ -f "$pidfile" ]] || return 1
	pid="$(cat "$pidfile")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	cmd="$(pid_cmdline "$pid")"
	[[ "$cmd" == "$BIN_DIR/$1 "* || "$cmd" == *" $BIN_DIR/$1/"* ]] || return 1
	printf '%s\n' "$pid"
}

# install_tool NAME PKG VERSION: go install PKG@VERSION into .bin/NAME unless that exact
# version is already there (recorded in .bin/NAME.version).
install_tool() {
	local name="$1" pkg="$2" version="$3" built log
	if [[ -x "$BIN_DIR/$name" && "$(cat "$BIN_DIR/$name.version" 2>/dev/null)" == "$version" ]]; then
		return 0
	fi
	mkdir -p "$BIN_DIR" "$RUN_DIR"
	log="$RUN_DIR/$name-build.log"
	err "$name: building $pkg@$version into .bin/ (first time only; mailpit takes a few minutes)"
	# `go install pkg@version` ignores our go.mod; GOFLAGS is cleared so that e.g. a
	# -mod=vendor meant for this project does not break it.
	if ! GOBIN="$BIN_DIR" GOFLAGS='' go_cmd install "$pkg@$version" >"$log" 2>&1; then
		cat "$log" >&2
		die "$name: go install $pkg@$version failed (log: $log)"
	fi
	built="$BIN_DIR/$(basename "$pkg")" # goaws's main package is named "cmd"
	if [[ "$built" != "$BIN_DIR/$name" ]]; then
		mv -f "$built" "$BIN_DIR/$name"
	fi
	printf '%s\n' "$version" >"$BIN_DIR/$name.version"
}

# start_bg NAME ARGS...: start .bin/NAME in the background (start_cmd_bg NAME CMD ARGS...:
# start CMD under the name NAME), in its own session (so a
# Ctrl-C in the terminal that ran `make run` does not take it down), logging to
# .run/NAME.log and recording its pid in .run/NAME.pid. This script runs without job
# control, so the child is not a process-group leader and setsid(1) execs in place
# instead of forking: $! is the service's own pid.
start_bg() {
	start_cmd_bg "$1" "$BIN_DIR/$1" "${@:2}"
}

start_cmd_bg() {
	local name="$1"
	shift
	mkdir -p "$RUN_DIR"
	local setsid=()
	command -v setsid >/dev/null 2>&1 && setsid=(setsid)
	nohup "${setsid[@]}" "$@" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
	printf '%s\n' "$!" >"$RUN_DIR/$name.pid"
}

# wait_started NAME SECONDS PROBE...: wait until PROBE succeeds; fail early, with the
# end of the log, if the process dies first.
wait_started() {
	local name="$1" secs="$2" deadline
	shift 2
	deadline=$((SECONDS + secs))
	until "$@"; do
		if ! our_pid "$name" >/dev/null; then
			tail -n 20 "$RUN_DIR/$name.log" >&2 || true
			rm -f "$RUN_DIR/$name.pid"
			die "$name: exited during start-up (log: .run/$name.log)"
		fi
		((SECONDS < deadline)) || die "$name: not answering after ${secs}s (log: .run/$name.log)"
		sleep 0.2
	done
}

# stop NAME: stop the process recorded in .run/NAME.pid, if it is ours.
stop() {
	local name="$1" pid
	if ! pid="$(our_pid "$name")"; then
		rm -f "$RUN_DIR/$name.pid"
		say "$name: not running (nothing started by this script)"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_for 10 bash -c "! kill -0 $pid 2>/dev/null"; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$RUN_DIR/$name.pid"
	say "$name: stopped (pid $pid)"
}

# ------------------------------------------------------------------------------ mysql

mysql_client() {
	if command -v mariadb >/dev/null 2>&1; then
		echo mariadb
	elif command -v mysql >/dev/null 2>&1; then
		echo mysql
	fi
}

# mysql_answers: the server accepts root without a password over TCP (what orderd and
# its tests use). Without a client binary, an open port is the best we can check.
mysql_answers() {
	local client
	client="$(mysql_client)"
	if [[ -n "$client" ]]; then
		"$client" -uroot -h"$MYSQL_HOST" -P"$MYSQL_PORT" --connect-timeout=2 -e 'select 1' >/dev/null 2>&1
	else
		tcp_open "$MYSQL_PORT"
	fi
}

mysql_version() {
	local client
	client="$(mysql_client)"
	[[ -n "$client" ]] || { echo "version unknown: no mariadb/mysql client"; return; }
	"$client" -uroot -h"$MYSQL_HOST" -P"$MYSQL_PORT" -N -e 'select version()' 2>/dev/null || echo "?"
}

mysqld_path() {
	local p
	for p in mariadbd mysqld; do
		if command -v "$p" >/dev/null 2>&1; then command -v "$p"; return 0; fi
		if [[ -x "/usr/sbin/$p" ]]; then echo "/usr/sbin/$p"; return 0; fi
	done
	return 1
}

mysql_install_hint() {
	cat >&2 <<EOF
mysql: nothing answers on $MYSQL_HOST:$MYSQL_PORT and this script cannot install it.
  Install MariaDB (10.11+) or MySQL 8, listening on $MYSQL_HOST:$MYSQL_PORT, with a root
  user that may log in over TCP without a password, e.g. on Debian/Ubuntu:
    sudo apt-get install -y mariadb-server && sudo service mariadb start
    sudo mariadb -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket"
  or with Docker:  docker compose up -d mysql
EOF
}

# mysql_start: start an installed but stopped server (needs root).
mysql_start() {
	local mysqld="$1" log="$RUN_DIR/mysql-start.log"
	mkdir -p "$RUN_DIR"
	[[ "$(id -u)" == 0 ]] || die "mysql: $mysqld is installed but not running; start it, e.g. sudo service mariadb start"
	# Start the daemon directly first: containers without an init system often lack a
	# working init script (Debian's checks liveness with credentials from
	# /etc/mysql/debian.cnf, and reports a healthy server "not responding" without it).
	# mariadbd drops to the `mysql` user given in my.cnf; it needs /run/mysqld for its
	# socket and pid file. start-stop-daemon detaches it into its own session.
	if command -v start-stop-daemon >/dev/null 2>&1; then
		install -d -o mysql -g mysql /run/mysqld 2>/dev/null || mkdir -p /run/mysqld
		start-stop-daemon --start --oknodo --background --exec "$mysqld" >>"$log" 2>&1 || true
		wait_for 20 tcp_open "$MYSQL_PORT" && return 0
	fi
	if command -v service >/dev/null 2>&1 && [[ -x /etc/init.d/mariadb || -x /etc/init.d/mysql ]]; then
		local svc=mariadb
		[[ -x /etc/init.d/mariadb ]] || svc=mysql
		timeout 60 service "$svc" start >>"$log" 2>&1 || true
	fi
}

# mysql_allow_root_tcp: Debian's fresh MariaDB lets root in only through the unix socket
# (unix_socket auth). Also allow an empty password, as orderd's defaults expect. Done only
# right after this script installed the server itself.
mysql_allow_root_tcp() {
	local client
	client="$(mysql_client)"
	"$client" -uroot -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket" \
		>>"$RUN_DIR/mysql-start.log" 2>&1 || true
}

mysql_up() {
	if mysql_answers; then
		say "mysql: up $MYSQL_HOST:$MYSQL_PORT ($(mysql_version))"
		return 0
	fi
	if tcp_open "$MYSQL_PORT" && [[ -n "$(mysql_client)" ]]; then
		die "mysql: $MYSQL_HOST:$MYSQL_PORT answers but root cannot log in without a password over TCP.
  Allow it, e.g.: sudo mariadb -e \"ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket\""
	fi
	local mysqld fresh=""
	if ! mysqld="$(mysqld_path)"; then
		if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
			mkdir -p "$RUN_DIR"
			err "mysql: installing mariadb-server with apt-get"
			if ! { DEBIAN_FRONTEND=noninteractive apt-get update &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server; } >"$RUN_DIR/mysql-install.log" 2>&1; then
				tail -n 30 "$RUN_DIR/mysql-install.log" >&2
				die "mysql: apt-get install mariadb-server failed (log: .run/mysql-install.log)"
			fi
			mysqld="$(mysqld_path)" || die "mysql: mariadb-server installed but no mariadbd found"
			fresh=1
		else
			mysql_install_hint
			exit 1
		fi
	fi
	# apt's post-install may already have started it.
	mysql_answers || tcp_open "$MYSQL_PORT" || mysql_start "$mysqld"
	wait_for 60 tcp_open "$MYSQL_PORT" || die "mysql: $mysqld did not start listening on $MYSQL_HOST:$MYSQL_PORT within 60s (see /var/log/mysql/error.log, .run/mysql-start.log)"
	[[ -z "$fresh" ]] || mysql_allow_root_tcp
	wait_for 30 mysql_answers || die "mysql: listening on $MYSQL_HOST:$MYSQL_PORT but root cannot log in without a password over TCP"
	say "mysql: started $MYSQL_HOST:$MYSQL_PORT ($(mysql_version))"
}

mysql_status() {
	if mysql_answers; then
		say "mysql: up $MYSQL_HOST:$MYSQL_PORT ($(mysql_version))"
	else
		say "mysql: DOWN ($MYSQL_HOST:$MYSQL_PORT not answering as root)"
		return 1
	fi
}

# ------------------------------------------------------------------------------ goaws

sqs_url() { echo "http://127.0.0.1:$SQS_PORT"; }

# sqs_answers URL: an SQS ListQueues call (the JSON protocol aws-sdk-go-v2 speaks) works.
sqs_answers() {
	curl -sf -m 2 -o /dev/null -X POST "$1/" \
		-H 'Content-Type: application/x-amz-json-1.0' \
		-H 'X-Amz-Target: AmazonSQS.ListQueues' -d '{}'
}

goaws_answers() { sqs_answers "$(sqs_url)"; }

# goaws_config: dev/goaws.yaml, or a copy of it with the Local port changed.
goaws_config() {
	if [[ "$SQS_PORT" == 4100 ]]; then
		echo "$ROOT/dev/goaws.yaml"
		return
	fi
	mkdir -p "$RUN_DIR"
	# Rewrites the first "  Port:" line, which belongs to the Local section.
	awk -v port="$SQS_PORT" '!done && /^  Port:/ { print "  Port: " port; done = 1; next } { print }' \
		"$ROOT/dev/goaws.yaml" >"$RUN_DIR/goaws.yaml"
	echo "$RUN_DIR/goaws.yaml"
}

# sqs_already_up NAME PORT PORTVAR: true, saying so, if an SQS endpoint already answers on
# PORT (ours or not); fails if the port is free; dies if something else holds it.
sqs_already_up() {
	local name="$1" port="$2" url="http://127.0.0.1:$2" pid
	if pid="$(our_pid "$name")" && sqs_answers "$url"; then
		say "$name: up $url (pid $pid)"
		return 0
	fi
	tcp_open "$port" || return 1
	sqs_answers "$url" || die "$name: port $port is taken by something that is not an SQS endpoint; stop it or set $3"
	say "$name: up $url (not started by this script; left alone)"
}

goaws_up() {
	# Built even when an emulator is already up: tests start private ones (to kill and
	# restart them) from .bin/goaws.
	install_tool goaws "$GOAWS_PKG" "$GOAWS_VERSION"
	sqs_already_up goaws "$SQS_PORT" SQS_PORT && return 0
	# goaws v0.5.4 reads and writes its queue map from concurrent handlers without a lock, and
	# the Go runtime ends the process on it ("concurrent map read and map write" in
	# GetQueueUrlV1, seen when many tests create queues at once). On one OS thread, without
	# asynchronous preemption, a handler is not interrupted in the middle of a map write.
	GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 start_bg goaws -config "$(goaws_config)" -loglevel "$GOAWS_LOGLEVEL"
	wait_started goaws 30 goaws_answers
	say "goaws: started $(sqs_url) (pid $(cat "$RUN_DIR/goaws.pid"))"
}

# sqs_status NAME URL: one line for the SQS implementation NAME serving URL.
sqs_status() {
	local name="$1" url="$2" pid
	if sqs_answers "$url"; then
		if pid="$(our_pid "$name")"; then
			say "$name: up $url (pid $pid)"
		else
			say "$name: up $url (not started by this script)"
		fi
	else
		say "$name: DOWN ($url not answering)"
		return 1
	fi
}

goaws_status() { sqs_status goaws "$(sqs_url)"; }

# ---------------------------------------------------------------------- local-aws-sqs

sqs2_url() { echo "http://127.0.0.1:$SQS2_PORT"; }

sqs2_answers() { sqs_answers "$(sqs2_url)"; }

# sqs2_install: npm ci the locked local-aws-sqs into .bin/local-aws-sqs/ unless that exact
# lock file is installed there already; the launcher is copied on every start, so an edit
# to dev/local-aws-sqs/server.js takes effect at the next `up`.
sqs2_install() {
	local src="$ROOT/dev/local-aws-sqs" dir="$BIN_DIR/local-aws-sqs" log="$RUN_DIR/local-aws-sqs-install.log"
	command -v node >/dev/null 2>&1 ||
		die "local-aws-sqs: node not found; install Node.js 18 or later with npm (e.g. apt-get install -y nodejs npm): the tests run on this second SQS implementation too"
	mkdir -p "$dir" "$RUN_DIR"
	cp "$src/server.js" "$dir/server.js"
	if [[ -f "$dir/node_modules/local-aws-sqs/package.json" ]] && cmp -s "$src/package-lock.json" "$dir/package-lock.json"; then
		return 0
	fi
	command -v npm >/dev/null 2>&1 ||
		die "local-aws-sqs: npm not found; install it (e.g. apt-get install -y npm) to install local-aws-sqs@$SQS2_VERSION, the tests' second SQS implementation"
	err "local-aws-sqs: installing local-aws-sqs@$SQS2_VERSION with npm into .bin/ (first time only)"
	cp "$src/package.json" "$src/package-lock.json" "$dir/"
	if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$dir/package-lock.json" # so that the next `up` tries again
		die "local-aws-sqs: npm ci failed (log: .run/local-aws-sqs-install.log)"
	fi
}

sqs2_up() {
	sqs_already_up local-aws-sqs "$SQS2_PORT" SQS2_PORT && return 0
	sqs2_install
	start_cmd_bg local-aws-sqs node "$BIN_DIR/local-aws-sqs/server.js" --host 127.0.0.1 --port "$SQS2_PORT"
	wait_started local-aws-sqs 30 sqs2_answers
	say "local-aws-sqs: started $(sqs2_url) (pid $(cat "$RUN_DIR/local-aws-sqs.pid"))"
}

sqs2_status() { sqs_status local-aws-sqs "$(sqs2_url)"; }

# ---------------------------------------------------------------------------- mailpit

mailpit_url() { echo "http://127.0.0.1:$MAILPIT_HTTP_PORT"; }

mailpit_answers() {
	curl -sf -m 2 -o /dev/null "$(mailpit_url)/api/v1/messages?limit=1" && tcp_open "$SMTP_PORT"
}

mailpit_up() {
	local pid
	if pid="$(our_pid mailpit)" && mailpit_answers; then
		say "mailpit: up smtp 127.0.0.1:$SMTP_PORT, ui $(mailpit_url) (pid $pid)"
		return 0
	fi
	if tcp_open "$MAILPIT_HTTP_PORT" || tcp_open "$SMTP_PORT"; then
		mailpit_answers || die "mailpit: port $SMTP_PORT or $MAILPIT_HTTP_PORT is taken by something else; stop it or set SMTP_PORT / MAILPIT_HTTP_PORT"
		say "mailpit: up smtp 127.0.0.1:$SMTP_PORT, ui $(mailpit_url) (not started by this script; left alone)"
		return 0
	fi
	install_tool mailpit "$MAILPIT_PKG" "$MAILPIT_VERSION"
	# Without --database mailpit keeps its store in a temporary file under $TMPDIR and
	# deletes it on exit: TMPDIR=.run keeps it with the rest of our state.
	# Any SMTP credentials (or none) are accepted, also without TLS, as orderd may be
	# configured with either.
	TMPDIR="$RUN_DIR" start_bg mailpit \
		--listen "127.0.0.1:$MAILPIT_HTTP_PORT" \
		--smtp "127.0.0.1:$SMTP_PORT" \
		--smtp-auth-accept-any \
		--smtp-auth-allow-insecure \
		--smtp-disable-rdns \
		--max "$MAILPIT_MAX_MESSAGES" \
		--disable-version-check
	wait_started mailpit 30 mailpit_answers
	say "mailpit: started smtp 127.0.0.1:$SMTP_PORT, ui $(mailpit_url) (pid $(cat "$RUN_DIR/mailpit.pid"))"
}

mailpit_status() {
	local pid who="not started by this script"
	if mailpit_answers; then
		pid="$(our_pid mailpit)" && who="pid $pid"
		say "mailpit: up smtp 127.0.0.1:$SMTP_PORT, ui $(mailpit_url) ($who)"
	else
		say "mailpit: DOWN (smtp 127.0.0.1:$SMTP_PORT / $(mailpit_url) not answering)"
		return 1
	fi
}

# ------------------------------------------------------------------------------- main

command -v curl >/dev/null 2>&1 || die "curl: not found; install it (apt-get install -y curl)"

case "${1:-}" in
up)
	mysql_up
	goaws_up
	sqs2_up
	mailpit_up
	;;
down)
	stop goaws
	stop local-aws-sqs
	stop mailpit
	say "mysql: left running (shared system service)"
	;;
status)
	rc=0
	mysql_status || rc=1
	goaws_status || rc=1
	sqs2_status || rc=1
	mailpit_status || rc=1
	exit "$rc"
	;;
*)
	die "usage: $0 up|down|status"
	;;
esac
