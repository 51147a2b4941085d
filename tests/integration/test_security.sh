#!/usr/bin/env bash
# test_security.sh CHAND CHAN - who may connect, and limits (docs/SECURITY.md):
# peer uid/gid allow-lists and prefix rules (PERMISSION_DENIED, exit 10,
# logged once per connection), plain tcp refused when access control is on,
# tls+tcp client certificates (a throwaway CA made with openssl here), the
# memory budget against one flooding producer, the socket's mode and group,
# the same settings as config-file keys, --max-channels and --max-counters.
#
# The uid checks run chan as nobody (setpriv) and need root; without root
# they are reported as skipped, the rest still runs.
# VERBOSE=1 prints every passing check too.
set -uo pipefail

CHAND=${1:?usage: test_security.sh CHAND CHAN}
CHAN=${2:?usage: test_security.sh CHAND CHAN}
# shellcheck source=harness.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

SKIPPED=0
skip() {
	SKIPPED=$((SKIPPED + 1))
	echo "SKIP: $*"
}

# run "${NOBODY[@]}" CMD...: CMD as nobody:nogroup, no supplementary groups.
NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups)

# The private dirs are 0700 (mktemp); nobody must reach the socket.
open_dirs() {
	chmod 0711 "$WORK" "$CHAND_DIR"
}

# log_count TEXT: lines of chand's log containing TEXT.
log_count() {
	grep -cF -- "$1" "$CHAND_LOG" || true
}

# listen_port URL_PREFIX: the port chand logged for a port-0 listener.
listen_port() {
	local i p
	for ((i = 0; i < 100 * SLOW; i++)); do
		p=$(sed -n "s|.*listening on $1[^ ]* (port \([0-9]*\)).*|\1|p" \
			"$CHAND_LOG" | head -1)
		[ -n "$p" ] && { echo "$p"; return 0; }
		sleep 0.05
	done
	return 1
}

# ---- peer credentials -------------------------------------------------------
t_uid_refused() {
	local before
	if [ "$(id -u)" -ne 0 ]; then
		skip "uid checks need root (setpriv to nobody)"
		return
	fi
	start_chand --allow-uid 4242 --socket-mode 0666
	open_dirs

	run "${NOBODY[@]}" "$CHAN" ping
	expect_rc 10 "ping from a uid not in --allow-uid"
	expect_err_prefix "chan: ping: " "refusal message prefix"
	expect_err_has "permission denied" "refusal says permission denied"
	expect_err_has "uid 65534" "refusal names the peer's uid"
	run "${NOBODY[@]}" "$CHAN" send q hello
	expect_rc 10 "send from a refused uid"
	run "${NOBODY[@]}" "$CHAN" --timeout 1s recv q
	expect_rc 10 "recv from a refused uid (no hang)"
	run "${NOBODY[@]}" "$CHAN" counter add c
	expect_rc 10 "counter add from a refused uid"
	# Three refused connections, three log lines: once per connection,
	# not per request (send may make more than one request).
	check "[ $(log_count 'uid 65534') -eq 4 ]" \
		"each refused connection logged once ($(log_count 'uid 65534') lines)"

	# Root (the daemon's own user here) keeps every right; nothing of the
	# refused requests reached the engine.
	run "$CHAN" try-recv q
	expect_rc 3 "refused send stored nothing"
	run "$CHAN" counter get c
	expect_rc 6 "refused counter add created nothing"
	before=$(log_count 'uid 65534')
	run "$CHAN" ping
	expect_rc 0 "root still served"
	check "[ $(log_count 'uid 65534') -eq $before ]" "allowed peers are not logged"
	stop_chand
}

t_uid_allowed() {
	if [ "$(id -u)" -ne 0 ]; then
		skip "uid checks need root (setpriv to nobody)"
		return
	fi
	start_chand --allow-uid 4242,nobody --socket-mode 0666
	open_dirs
	run "${NOBODY[@]}" "$CHAN" send q hello
	expect_rc 0 "send from an allowed uid (by name)"
	run "${NOBODY[@]}" "$CHAN" counter add c 5
	expect_rc 0 "counter from an allowed uid"
	expect_out $'5\n' "counter value"
	run "$CHAN" recv q
	expect_rc 0 "root receives it"
	expect_out $'hello\n' "the allowed uid's message"
	stop_chand

	start_chand --allow-gid nogroup --socket-mode 0666
	open_dirs
	run "${NOBODY[@]}" "$CHAN" send q hi
	expect_rc 0 "send from an allowed primary gid"
	run setpriv --reuid=nobody --regid=daemon --clear-groups "$CHAN" send q hi
	expect_rc 10 "send from nobody with another gid"
	stop_chand
}

t_prefix_rule() {
	if [ "$(id -u)" -ne 0 ]; then
		skip "uid checks need root (setpriv to nobody)"
		return
	fi
	start_chand --allow 'uid=nobody:send:jobs.*' \
		--allow 'uid=nobody:recv,info:results' --socket-mode 0666
	open_dirs
	run "${NOBODY[@]}" "$CHAN" ping
	expect_rc 0 "a peer with some rule may ping"
	run "${NOBODY[@]}" "$CHAN" send jobs.a one
	expect_rc 0 "send inside the prefix"
	run "${NOBODY[@]}" "$CHAN" send other one
	expect_rc 10 "send outside the prefix"
	expect_err_has "may not send to channel 'other'" "message names op and channel"
	run "${NOBODY[@]}" "$CHAN" --timeout 1s recv jobs.a
	expect_rc 10 "recv needs the recv right"
	run "${NOBODY[@]}" "$CHAN" delete jobs.a
	expect_rc 10 "delete needs the manage right"
	run "${NOBODY[@]}" "$CHAN" list
	expect_rc 10 "list needs info on '*'"
	run "$CHAN" send results r1
	expect_rc 0 "root sends a result"
	run "${NOBODY[@]}" "$CHAN" recv results
	expect_rc 0 "recv granted on an exact name"
	expect_out $'r1\n' "the result"
	run "${NOBODY[@]}" "$CHAN" stat results
	expect_rc 0 "stat granted by info"
	run "${NOBODY[@]}" "$CHAN" recv-any results jobs.a
	expect_rc 10 "recv-any needs every listed name"
	run "$CHAN" recv jobs.a
	expect_rc 0 "root receives the job"
	expect_out $'one\n' "the job"
	stop_chand
}

t_bad_options() {
	run "$CHAND" --allow-uid no-such-user-xyz --listen "ipc://$WORK/x.sock"
	expect_rc 64 "unknown user in --allow-uid"
	expect_err_has "no-such-user-xyz" "message names the user"
	run "$CHAND" --allow 'uid=1:write:x' --listen "ipc://$WORK/x.sock"
	expect_rc 64 "bad --allow rule"
	expect_err_has "unknown operation 'write'" "message names the bad op"
	run "$CHAND" --socket-group no-such-group-xyz --listen "ipc://$WORK/x.sock"
	expect_rc 64 "unknown --socket-group"
}

t_tcp_refused() {
	local port
	start_chand --allow-uid 4242 --listen tcp://127.0.0.1:0
	if ! port=$(listen_port tcp://127.0.0.1); then
		fail "no tcp port in chand's log"
		cat "$CHAND_LOG" >&2
		stop_chand
		return
	fi
	run "$CHAN" --url "tcp://127.0.0.1:$port" ping
	expect_rc 10 "plain tcp refused when access control is on"
	expect_err_has "tcp" "refusal explains tcp has no credentials"
	run "$CHAN" ping
	expect_rc 0 "ipc from root still served"
	stop_chand
}

# ---- socket mode and group --------------------------------------------------
t_socket_perms() {
	local d mode grp
	d=$WORK/sockdir-$$
	rm -rf "$d"
	"$CHAND" --listen "ipc://$d/sub/s.sock" --socket-mode 0660 \
		--socket-group nogroup </dev/null >"$WORK/perm.log" 2>&1 &
	CHAND_PID=$!
	CHAND_LOG=$WORK/perm.log
	CHAND_DIR=$d
	for ((i = 0; i < 100 * SLOW; i++)); do
		[ -S "$d/sub/s.sock" ] && break
		sleep 0.05
	done
	check "[ -S $d/sub/s.sock ]" "socket created in a new directory"
	mode=$(stat -c %a "$d/sub/s.sock")
	grp=$(stat -c %G "$d/sub/s.sock")
	check "[ '$mode' = 660 ]" "socket mode 0660 (got $mode)"
	check "[ '$grp' = nogroup ]" "socket group nogroup (got $grp)"
	mode=$(stat -c %a "$d/sub")
	check "[ '$mode' = 750 ]" "created directory mode 0750 (got $mode)"
	run "$CHAN" --url "ipc://$d/sub/s.sock" ping
	expect_rc 0 "served through the new socket"
	stop_chand
	rm -rf "$d"
}

# ---- tls+tcp with client certificates --------------------------------------
make_pki() {
	local p=$WORK/pki
	mkdir -p "$p"
	(
		cd "$p" || exit 1
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
			-keyout ca.key -out ca.pem
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue-ca \
			-keyout rogue.key -out rogue.pem
		openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
			-keyout server.key -out server.csr
		printf 'subjectAltName=DNS:localhost\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key \
			-CAcreateserial -days 2 -extfile server.ext -out server.pem
		openssl req -newkey rsa:2048 -nodes -subj /CN=client \
			-keyout client.key -out client.csr
		openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key \
			-CAcreateserial -days 2 -out client.crt
		cat client.crt client.key >client.pem
		openssl req -newkey rsa:2048 -nodes -subj /CN=intruder \
			-keyout intruder.key -out intruder.csr
		openssl x509 -req -in intruder.csr -CA rogue.pem -CAkey rogue.key \
			-CAcreateserial -days 2 -out intruder.crt
		cat intruder.crt intruder.key >intruder.pem
	) >"$WORK/openssl.log" 2>&1
}

# tls_chan CERTFILE|"" ARGS...: chan over tls+tcp, verifying chand's cert.
tls_chan() {
	local cert=$1
	shift
	if [ -n "$cert" ]; then
		run env CHAN_TLS_CA_FILE="$WORK/pki/ca.pem" CHAN_TLS_SERVER_NAME=localhost \
			CHAN_TLS_CERT_KEY_FILE="$cert" "$CHAN" --url "$TLS_URL" "$@"
	else
		run env -u CHAN_TLS_CERT_KEY_FILE CHAN_TLS_CA_FILE="$WORK/pki/ca.pem" \
			CHAN_TLS_SERVER_NAME=localhost "$CHAN" --url "$TLS_URL" "$@"
	fi
}

t_tls_client_cert() {
	local port
	if ! command -v openssl >/dev/null; then
		fail "openssl is needed for the tls test"
		return
	fi
	if ! make_pki; then
		fail "could not make the test CA"
		cat "$WORK/openssl.log" >&2
		return
	fi
	# Access control on too: a verified client certificate is enough.
	start_chand --listen tls+tcp://127.0.0.1:0 \
		--tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server.key" \
		--tls-ca "$WORK/pki/ca.pem" --allow-uid 4242
	if ! port=$(listen_port tls+tcp://127.0.0.1); then
		fail "no tls port in chand's log"
		cat "$CHAND_LOG" >&2
		stop_chand
		return
	fi
	TLS_URL=tls+tcp://127.0.0.1:$port

	tls_chan "$WORK/pki/client.pem" send q over-tls
	expect_rc 0 "client with a certificate the CA signed"
	tls_chan "$WORK/pki/client.pem" recv q
	expect_rc 0 "and receives"
	expect_out $'over-tls\n' "its message"

	tls_chan "" --timeout 3s ping
	expect_rc 69 "client without a certificate refused (connection fails)"
	tls_chan "$WORK/pki/intruder.pem" --timeout 3s ping
	expect_rc 69 "client with a certificate of another CA refused"

	# The same through chan's flags (cert and key in two files, or one).
	local flags=(--url "$TLS_URL" --tls-ca "$WORK/pki/ca.pem")
	run env CHAN_TLS_SERVER_NAME=localhost "$CHAN" "${flags[@]}" \
		--tls-cert "$WORK/pki/client.crt" --tls-key "$WORK/pki/client.key" ping
	expect_rc 0 "--tls-ca, --tls-cert and --tls-key (two files)"
	run env CHAN_TLS_SERVER_NAME=localhost "$CHAN" ping "${flags[@]}" \
		--tls-cert "$WORK/pki/client.pem"
	expect_rc 0 "--tls-cert with the key in the same file, after the command"
	run env CHAN_TLS_SERVER_NAME=localhost "$CHAN" "${flags[@]}" --timeout 3s ping
	expect_rc 69 "--tls-ca alone (no client certificate) refused"

	tls_chan "$WORK/pki/client.pem" ping
	expect_rc 0 "daemon keeps serving tls clients afterwards"
	run "$CHAN" ping
	expect_rc 0 "and ipc clients"
	stop_chand
}

# ---- the same settings as config-file keys ---------------------------------
t_config_keys() {
	local cfg=$WORK/sec.conf big=$WORK/big-cfg
	head -c 102400 /dev/zero | tr '\0' 'y' >"$big"
	cat >"$cfg" <<-EOF
		socket-mode = 0666
		allow = uid=nobody:send:cfg.*
		allow-gid = 4242
		max-memory = 150K
		max-pending = 8
		max-connections = 100
	EOF
	start_chand --config "$cfg"
	run "$CHAN" send --raw cfg.big <"$big"
	expect_rc 0 "config max-memory: one 100 KiB message fits"
	run "$CHAN" send --raw cfg.big <"$big"
	expect_rc 11 "config max-memory: the second does not"
	expect_err_has "memory limit" "the refusal names the memory limit"
	if [ "$(id -u)" -eq 0 ]; then
		open_dirs
		run "${NOBODY[@]}" "$CHAN" send cfg.a x
		expect_rc 0 "config allow rule grants its prefix"
		run "${NOBODY[@]}" "$CHAN" send other x
		expect_rc 10 "config allow rule refuses the rest"
	else
		skip "config allow rule (needs root)"
	fi
	stop_chand
	run "$CHAND" --config "$cfg" --max-pending x --listen "ipc://$WORK/y.sock"
	expect_rc 64 "bad --max-pending"
}

# ---- channel and counter limits ----------------------------------------------
t_object_limits() {
	start_chand --max-channels 3 --max-counters 2
	run "$CHAN" create a
	expect_rc 0 "create 1 of 3 channels"
	run "$CHAN" send b x
	expect_rc 0 "auto-create 2 of 3"
	run "$CHAN" create c --capacity 2
	expect_rc 0 "create 3 of 3"
	run "$CHAN" create d
	expect_rc 11 "a fourth channel: RESOURCE_EXHAUSTED"
	expect_err_has "--max-channels" "the refusal names the limit"
	run "$CHAN" send e x
	expect_rc 11 "a send that would auto-create a fourth"
	expect_err_has "no room for channel 'e'" "the refusal names the channel"
	run "$CHAN" --timeout 1s recv-any b f
	expect_rc 11 "a recv-any that would auto-create a fourth"
	run "$CHAN" send b y
	expect_rc 0 "existing channels still take messages"
	run "$CHAN" delete a
	expect_rc 0 "delete one"
	run "$CHAN" send e x
	expect_rc 0 "room again after a delete"

	run "$CHAN" counter add k1
	expect_rc 0 "counter 1 of 2"
	run "$CHAN" counter set k2 5
	expect_rc 0 "counter 2 of 2"
	run "$CHAN" counter add k3
	expect_rc 11 "a third counter: RESOURCE_EXHAUSTED"
	expect_err_has "--max-counters" "the refusal names the limit"
	run "$CHAN" counter add k1
	expect_rc 0 "existing counters still work"
	expect_out $'2\n' "counter value"
	run "$CHAN" counter delete k2
	expect_rc 0 "delete a counter"
	run "$CHAN" counter add k3
	expect_rc 0 "room again after a counter delete"
	stop_chand
}

# ---- memory budget -----------------------------------------------------------
t_memory_budget() {
	local i rc=0 sent=0 big=$WORK/big
	head -c 102400 /dev/zero | tr '\0' 'x' >"$big"
	start_chand --max-memory 1048576
	# One producer floods an unbounded channel with 100 KiB messages.
	for ((i = 0; i < 40; i++)); do
		rc=0
		"$CHAN" send --raw flood <"$big" >/dev/null 2>"$WORK/flood.err" || rc=$?
		[ "$rc" -ne 0 ] && break
		sent=$((sent + 1))
	done
	RC=$rc
	cp "$WORK/flood.err" "$ERR_FILE"
	expect_rc 11 "flood stopped by the budget with RESOURCE_EXHAUSTED"
	expect_err_prefix "chan: send: " "flood refusal message prefix"
	expect_err_has "memory limit" "flood refusal names the memory limit"
	check "[ $sent -ge 5 ] && [ $sent -le 10 ]" \
		"about 1 MiB held before refusing ($sent x 100 KiB)"
	run "$CHAN" send --raw flood <"$big"
	expect_rc 11 "still refused while the budget is full"
	run "$CHAN" stat flood
	expect_out_has "depth: $sent" "a refused send stored nothing"

	run "$CHAN" ping
	expect_rc 0 "ping from another client"
	run "$CHAN" counter add c 3
	expect_rc 0 "counter from another client"
	expect_out $'3\n' "counter value"
	run "$CHAN" send small s
	expect_rc 0 "a small message still fits"
	run "$CHAN" recv small
	expect_rc 0 "receive from another channel"
	run "$CHAN" recv -n 2 flood
	expect_rc 0 "a receiver drains the flood"
	run "$CHAN" send --raw flood <"$big"
	expect_rc 0 "room again once received"
	stop_chand
}

t_bad_options
t_uid_refused
t_uid_allowed
t_prefix_rule
t_tcp_refused
t_socket_perms
t_tls_client_cert
t_config_keys
t_object_limits
t_memory_budget
[ "$SKIPPED" -gt 0 ] && echo "$SKIPPED sections skipped"
finish
