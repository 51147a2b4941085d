#!/usr/bin/env bash
# cli_test.sh CHAND CHAN - the chan CLI against a real chand, per SPEC:
# exit codes, exact stdout, "chan: <command>: <message>" on stderr.
#
# VERBOSE=1 prints every passing check too.
set -uo pipefail

CHAND=${1:?usage: cli_test.sh CHAND CHAN}
CHAN=${2:?usage: cli_test.sh CHAND CHAN}
# shellcheck source=harness.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

# settle: time for a command just started in the background to park in
# the daemon (scaled for sanitized builds). Where `chan stat` can see the
# parking, tests poll instead.
settle() {
	sleep "$(awk "BEGIN { print 0.3 * $SLOW }")"
}

# parked_receiver NAME: waits until a background receiver is attached to
# NAME. Polls `chan stat` (it attaches nothing, so it cannot make the
# background receiver BUSY the way a probing recv could).
parked_receiver() {
	local i
	for ((i = 0; i < 100 * SLOW; i++)); do
		"$CHAN" stat "$1" 2>/dev/null | grep -q 'receiver_attached: true' && return 0
		sleep 0.05
	done
	fail "no receiver attached to $1 within $((5 * SLOW)) s"
}

# parked_sender NAME: waits until a background send is blocked on NAME.
parked_sender() {
	local i
	for ((i = 0; i < 100 * SLOW; i++)); do
		"$CHAN" stat "$1" 2>/dev/null | grep -q 'blocked_senders: [1-9]' && return 0
		sleep 0.05
	done
	fail "no sender blocked on $1 within $((5 * SLOW)) s"
}

NAME_RULE='[A-Za-z0-9._:-]'

# ---- no daemon, help, usage -------------------------------------------------
t_no_daemon() {
	run "$CHAN" --url "ipc://$WORK/nobody/s.sock" ping
	expect_rc 69 "ping with no daemon"
	expect_err_prefix "chan: ping: " "no daemon message"
	run env CHAN_URL="ipc://$WORK/nobody/s.sock" "$CHAN" send q x
	expect_rc 69 "send with no daemon (CHAN_URL)"
	expect_err_prefix "chan: send: " "no daemon message for send"
	run env CHAN_URL="ipc://$WORK/nobody/s.sock" "$CHAN" recv q
	expect_rc 69 "recv with no daemon (CHAN_URL)"
}

t_help_usage() {
	local c
	run "$CHAN" --help
	expect_rc 0 "chan --help"
	for c in ping stats list create send recv try-recv recv-any close \
		delete stat counter --url --timeout --json; do
		expect_out_has "$c" "chan --help mentions $c"
	done
	run "$CHAN" recv --help
	expect_rc 0 "chan recv --help"
	expect_out_has "--follow" "recv --help mentions --follow"
	expect_out_has "-n" "recv --help mentions -n"
	for c in ping stats list create send try-recv recv-any close delete \
		stat counter; do
		run "$CHAN" "$c" --help
		expect_rc 0 "chan $c --help"
	done
	run "$CHAN" send --help
	expect_out_has "--try" "send --help mentions --try"
	expect_out_has "--raw" "send --help mentions --raw"
	run "$CHAN" create --help
	expect_out_has "--capacity" "create --help mentions --capacity"
	expect_out_has "--rendezvous" "create --help mentions --rendezvous"

	run "$CHAN" frobnicate
	expect_rc 64 "unknown command"
	expect_err_prefix "chan: " "unknown command message"
	run "$CHAN"
	expect_rc 64 "no command"
	run "$CHAN" recv
	expect_rc 64 "recv without a name"
	run "$CHAN" recv q --bogus-flag
	expect_rc 64 "recv with an unknown flag"
	run "$CHAN" --timeout soon recv q
	expect_rc 64 "bad --timeout value"
	# Before the command too, the error names it: "chan: <command>: <message>".
	run "$CHAN" --timeout 5x recv q
	expect_rc 64 "bad --timeout unit before the command"
	expect_err_prefix "chan: recv: --timeout: " "bad --timeout before the command names the command"
	run "$CHAN" --timeout -5 counter wait c '>' 1
	expect_rc 64 "negative --timeout"
	expect_err_prefix "chan: counter: --timeout: " "negative --timeout names the command"
	run "$CHAN" counter frob x
	expect_rc 64 "unknown counter subcommand"
	run "$CHAN" counter add c notanumber
	expect_rc 64 "counter add with a non-number"
	run "$CHAN" create q --capacity lots
	expect_rc 64 "create --capacity non-number"
}

# ---- basics --------------------------------------------------------------------
t_ping_stats_list() {
	run "$CHAN" ping
	expect_rc 0 "ping"
	run "$CHAN" --url "$CHAN_URL" ping
	expect_rc 0 "ping with --url"
	# --url beats CHAN_URL, which beats the default.
	run env CHAN_URL="ipc://$WORK/nobody/s.sock" "$CHAN" --url "$CHAN_URL" ping
	expect_rc 0 "--url overrides CHAN_URL"
	run "$CHAN" stats
	expect_rc 0 "stats"
	run "$CHAN" create listed
	run "$CHAN" list
	expect_rc 0 "list"
	expect_out_has "listed" "list shows a created channel"
}

t_create() {
	run "$CHAN" create u1
	expect_rc 0 "create unbounded"
	run "$CHAN" create u1
	expect_rc 0 "create unbounded again (idempotent)"
	run "$CHAN" create u1 --capacity 3
	expect_rc 8 "create unbounded as bounded"
	expect_err_prefix "chan: create: " "ALREADY_EXISTS message"
	run "$CHAN" create b2 --capacity 2
	expect_rc 0 "create bounded 2"
	run "$CHAN" create b2 --capacity 2
	expect_rc 0 "create bounded 2 again"
	run "$CHAN" create b2 --capacity 3
	expect_rc 8 "create bounded 2 as 3"
	run "$CHAN" create b2
	expect_rc 8 "create bounded 2 as unbounded"
	run "$CHAN" create b2 --rendezvous
	expect_rc 8 "create bounded 2 as rendezvous"
	run "$CHAN" create r0 --rendezvous
	expect_rc 0 "create rendezvous"
	run "$CHAN" create r0 --rendezvous
	expect_rc 0 "create rendezvous again"
	run "$CHAN" create r0 --capacity 1
	expect_rc 8 "create rendezvous as bounded"
	run "$CHAN" stat b2
	expect_rc 0 "stat bounded"
	expect_out_has "2" "stat shows the capacity"
}

# ---- send / recv ------------------------------------------------------------
t_send_recv() {
	run "$CHAN" send s1 a "b c" d
	expect_rc 0 "send three args"
	run "$CHAN" recv s1 -n 3
	expect_rc 0 "recv -n 3"
	expect_out $'a\nb c\nd\n' "each MSG argument is one message, in order"

	run "$CHAN" send r1 hello
	run "$CHAN" recv r1
	expect_rc 0 "recv one"
	expect_out $'hello\n' "recv prints payload and a newline"

	run_in $'l1\nl2\n\nl4\n' "$CHAN" send s2
	expect_rc 0 "send stdin lines"
	run "$CHAN" recv s2 -n 4
	expect_out $'l1\nl2\n\nl4\n' "one message per stdin line"
	run "$CHAN" try-recv s2
	expect_rc 3 "stdin lines: no extra message"

	run_in $'x\ny' "$CHAN" send s2b
	run "$CHAN" recv s2b -n 2
	expect_out $'x\ny\n' "last stdin line without newline is a message"

	printf 'a\0b c\0' >"$WORK/nul.in"
	RC=0
	timeout 20 "$CHAN" send s3 -0 <"$WORK/nul.in" >"$OUT_FILE" 2>"$ERR_FILE" || RC=$?
	expect_rc 0 "send -0"
	run "$CHAN" recv s3 -n 2
	expect_out $'a\nb c\n' "send -0 splits on NUL"
	run "$CHAN" send s3 $'multi\nline'
	run "$CHAN" recv s3 -0
	printf 'multi\nline\0' >"$WORK/exp0"
	check "cmp -s $OUT_FILE $WORK/exp0" "recv -0 ends a payload with NUL"

	run_in $'multi\nline\n' "$CHAN" send s4 --raw
	expect_rc 0 "send --raw"
	run "$CHAN" recv s4
	expect_out $'multi\nline\n\n' "--raw: all of stdin is one message"
	run "$CHAN" try-recv s4
	expect_rc 3 "--raw: exactly one message"

	# Messages left behind by -n stay queued, in order.
	run "$CHAN" send s5 one two three
	run "$CHAN" recv s5 -n 2
	expect_out $'one\ntwo\n' "recv -n 2 of 3"
	run "$CHAN" try-recv s5
	expect_rc 0 "try-recv with a message"
	expect_out $'three\n' "try-recv gets the third"

	# -n 0: "exits 0 after N messages" with N = 0 takes nothing.
	run "$CHAN" send s5b kept
	run "$CHAN" recv -n 0 s5b
	expect_rc 0 "recv -n 0 exits 0"
	expect_out "" "recv -n 0 prints nothing"
	run "$CHAN" try-recv s5b
	expect_out $'kept\n' "recv -n 0 took nothing"

	# An empty payload is a message too.
	run "$CHAN" send s6 ""
	expect_rc 0 "send empty payload"
	run "$CHAN" recv s6
	expect_rc 0 "recv empty payload"
	expect_out $'\n' "empty payload prints just a newline"
}

t_empty_timeout() {
	local t0 t1
	run "$CHAN" try-recv e1
	expect_rc 3 "try-recv on empty"
	expect_out "" "try-recv on empty prints nothing"
	t0=$(now_ms)
	run "$CHAN" --timeout 200ms recv e1
	t1=$(now_ms)
	expect_rc 2 "recv --timeout 200ms on empty"
	expect_out "" "timed-out recv prints nothing"
	check "[ $((t1 - t0)) -ge 180 ]" "recv timeout waited ~200ms (took $((t1 - t0)) ms)"
	run "$CHAN" --timeout 0.2 recv e1
	expect_rc 2 "recv --timeout 0.2 (bare seconds)"
	run "$CHAN" --timeout 200ms recv-any e1 e2
	expect_rc 2 "recv-any timeout"
}

t_bounded() {
	local t0 t1
	run "$CHAN" create full --capacity 1
	run "$CHAN" send full a
	expect_rc 0 "send to bounded with room"
	run "$CHAN" send full b --try
	expect_rc 4 "send --try to full"
	expect_err_prefix "chan: send: " "FULL message"
	t0=$(now_ms)
	run "$CHAN" --timeout 200ms send full c
	t1=$(now_ms)
	expect_rc 2 "send --timeout 200ms to full"
	check "[ $((t1 - t0)) -ge 180 ]" "send timeout waited ~200ms (took $((t1 - t0)) ms)"
	run "$CHAN" recv full
	expect_out $'a\n' "the full channel kept only the first"
	run "$CHAN" try-recv full
	expect_rc 3 "failed sends left nothing"

	# A blocked send completes once a receiver makes room.
	run "$CHAN" send full x
	bg "$WORK/bsend" "$CHAN" send full y
	local sp=$BG_PID
	settle
	check "kill -0 $sp 2>/dev/null" "send to full channel waits"
	run "$CHAN" recv full
	expect_out $'x\n' "recv makes room"
	wait_bg "$sp" 5
	check "[ $BG_RC -eq 0 ]" "blocked send completed (exit $BG_RC)"
	run "$CHAN" recv full
	expect_out $'y\n' "the blocked send's message arrived"

	# Rendezvous: a send completes only with a receiver.
	run "$CHAN" create rv --rendezvous
	run "$CHAN" --timeout 200ms send rv lonely
	expect_rc 2 "rendezvous send with no receiver times out"
	run "$CHAN" send rv lonely --try
	expect_rc 4 "rendezvous send --try with no receiver is FULL"
	bg "$WORK/rvrecv" "$CHAN" recv rv
	local rp=$BG_PID
	settle
	run "$CHAN" --timeout 5s send rv handoff
	expect_rc 0 "rendezvous send with a waiting receiver"
	wait_bg "$rp" 5
	check "[ $BG_RC -eq 0 ]" "rendezvous receiver exited 0 (got $BG_RC)"
	check "[ \"\$(cat $WORK/rvrecv)\" = handoff ]" "rendezvous receiver got the message"
}

t_close_delete() {
	run "$CHAN" send c1 m1 m2
	run "$CHAN" close c1
	expect_rc 0 "close"
	run "$CHAN" send c1 m3
	expect_rc 5 "send to closed"
	expect_err_prefix "chan: send: " "CLOSED message for send"
	run "$CHAN" recv c1
	expect_rc 0 "recv drains closed (1)"
	expect_out $'m1\n' "drain 1"
	run "$CHAN" recv c1
	expect_out $'m2\n' "drain 2 (nothing stored by the send to closed)"
	run "$CHAN" recv c1
	expect_rc 5 "recv on closed and drained"
	expect_err_prefix "chan: recv: " "CLOSED message for recv"
	run "$CHAN" try-recv c1
	expect_rc 5 "try-recv on closed and drained"

	# --follow prints until the channel closes, then exits 5.
	bg "$WORK/follow" "$CHAN" recv f1 --follow
	local fp=$BG_PID
	settle
	run "$CHAN" send f1 a b
	run "$CHAN" send f1 c
	run "$CHAN" close f1
	wait_bg "$fp" 5
	check "[ $BG_RC -eq 5 ]" "recv --follow exits 5 at close (got $BG_RC)"
	printf 'a\nb\nc\n' >"$WORK/follow.exp"
	check "cmp -s $WORK/follow $WORK/follow.exp" "recv --follow printed every message"

	# --follow also ends on a signal, with what it got printed whole.
	bg "$WORK/follow2" "$CHAN" recv f2 --follow
	fp=$BG_PID
	settle
	run "$CHAN" send f2 one two
	settle
	kill -TERM "$fp" 2>/dev/null
	wait_bg "$fp" 3
	check "[ $BG_RC -ne 124 ]" "recv --follow ends on SIGTERM"
	printf 'one\ntwo\n' >"$WORK/follow2.exp"
	check "cmp -s $WORK/follow2 $WORK/follow2.exp" "recv --follow printed whole messages before the signal"

	run "$CHAN" create d1
	run "$CHAN" send d1 x
	run "$CHAN" delete d1
	expect_rc 0 "delete"
	run "$CHAN" stat d1
	expect_rc 6 "stat after delete"
	expect_err_prefix "chan: stat: " "NOT_FOUND message"

	# delete wakes a waiting receiver with NOT_FOUND.
	bg "$WORK/delwait" "$CHAN" recv d2
	local dp=$BG_PID
	parked_receiver d2
	run "$CHAN" delete d2
	wait_bg "$dp" 5
	check "[ $BG_RC -eq 6 ]" "receiver waiting on a deleted channel exits 6 (got $BG_RC)"
	# close wakes a waiting receiver with CLOSED.
	bg "$WORK/closewait" "$CHAN" recv d3
	dp=$BG_PID
	parked_receiver d3
	run "$CHAN" close d3
	wait_bg "$dp" 5
	check "[ $BG_RC -eq 5 ]" "receiver waiting on a closed channel exits 5 (got $BG_RC)"
}

t_busy() {
	bg "$WORK/slow" "$CHAN" recv slow
	local sp=$BG_PID
	parked_receiver slow
	run "$CHAN" try-recv slow
	expect_rc 7 "try-recv while another receiver is attached"
	run "$CHAN" --timeout 200ms recv slow
	expect_rc 7 "second receiver"
	expect_err_prefix "chan: recv: " "BUSY message"
	run "$CHAN" send slow wake
	wait_bg "$sp" 5
	check "[ $BG_RC -eq 0 ]" "first receiver exits 0 after its message (got $BG_RC)"
	check "[ \"\$(cat $WORK/slow)\" = wake ]" "first receiver printed the message"
	# The CLI receiver detached when it exited.
	run "$CHAN" send slow again
	run "$CHAN" recv slow
	expect_rc 0 "recv after the first receiver left"
	expect_out $'again\n' "new receiver gets the next message"
}

t_names() {
	local long129
	long129=$(printf 'a%.0s' $(seq 129))
	run "$CHAN" send 'a b' x
	expect_rc 64 "send to a name with a space"
	expect_err_prefix "chan: send: " "invalid name message for send"
	expect_err_has "$NAME_RULE" "invalid name message gives the rule"
	run "$CHAN" recv 'caf'$'\xc3\xa9'
	expect_rc 64 "recv from a UTF-8 name"
	expect_err_prefix "chan: recv: " "invalid name message for recv"
	run "$CHAN" create "$long129"
	expect_rc 64 "create a 129-byte name"
	expect_err_prefix "chan: create: " "invalid name message for create"
	run "$CHAN" create "${long129:1}"
	expect_rc 0 "create a 128-byte name"
	run "$CHAN" stat 'x/y'
	expect_rc 64 "stat an invalid name"
	run "$CHAN" try-recv ''
	expect_rc 64 "try-recv an empty name"
	run "$CHAN" counter add 'bad name'
	expect_rc 64 "counter add an invalid name"
	expect_err_prefix "chan: counter" "invalid name message for counter"
	run "$CHAN" recv-any good 'bad*'
	expect_rc 64 "recv-any with an invalid name"
	run "$CHAN" create 'A-Za-z0-9._:-'
	expect_rc 0 "create a name using every class"
}

t_recv_any() {
	run "$CHAN" send ra2 hi
	run "$CHAN" recv-any ra1 ra2 ra3
	expect_rc 0 "recv-any"
	expect_out $'ra2\thi\n' "recv-any prints NAME<TAB>payload"
	bg "$WORK/rany" "$CHAN" recv-any ra1 ra3
	local rp=$BG_PID
	settle
	run "$CHAN" send ra3 later
	wait_bg "$rp" 5
	check "[ $BG_RC -eq 0 ]" "waiting recv-any exits 0 (got $BG_RC)"
	printf 'ra3\tlater\n' >"$WORK/rany.exp"
	check "cmp -s $WORK/rany $WORK/rany.exp" "waiting recv-any names the channel"
}

t_lease() {
	# Ack mode: the lease outlives the command; ack/release from another.
	run "$CHAN" create lq --capacity 2
	run "$CHAN" send lq a b
	run "$CHAN" recv --lease 30s lq
	expect_rc 0 "recv --lease"
	expect_out $'1\ta\n' "recv --lease prints SEQ<TAB>payload"
	run "$CHAN" send --try lq c
	expect_rc 4 "a leased message still counts against the capacity"
	run "$CHAN" ack lq 1
	expect_rc 0 "ack from another process"
	run "$CHAN" ack lq 1
	expect_rc 6 "a second ack of the same seq"
	expect_err_prefix "chan: ack: " "ack names the command"
	run "$CHAN" --json recv --lease 1m lq
	expect_out_has '"seq":2' "recv --lease --json has the seq"
	run "$CHAN" release lq 2
	expect_rc 0 "release"
	run "$CHAN" --json recv lq
	expect_out_has '"redelivered":true' "a released message comes back marked"
	run "$CHAN" send lq x
	run "$CHAN" recv --lease 200ms lq
	expect_out $'3\tx\n' "a short lease"
	sleep "$(awk "BEGIN { print 0.5 * $SLOW }")"
	run "$CHAN" --json recv lq
	expect_out_has '"redelivered":true' "an expired lease gives the message back"
	run "$CHAN" recv --lease 0 lq
	expect_rc 64 "recv --lease 0"
	run "$CHAN" recv -n 2 --lease 1s lq
	expect_rc 64 "recv --lease with -n"
	run "$CHAN" ack lq notanumber
	expect_rc 64 "ack with a bad SEQ"
}

t_json() {
	run "$CHAN" send j1 hello
	run "$CHAN" --json recv j1
	expect_rc 0 "--json recv"
	check "[ \$(wc -l <$OUT_FILE) -eq 1 ]" "--json: one line"
	check "jq -e '.channel == \"j1\" and .data == \"hello\" and (.seq|type) == \"number\" and has(\"time\") and (has(\"data_b64\")|not)' $OUT_FILE >/dev/null" \
		"--json object {channel,seq,time,data}"
	printf '\377\376' >"$WORK/bin.in"
	RC=0
	timeout 20 "$CHAN" send j1 --raw <"$WORK/bin.in" >/dev/null 2>&1 || RC=$?
	expect_rc 0 "send a non-UTF-8 payload"
	run "$CHAN" --json recv j1
	check "jq -e '.data_b64 == \"//4=\" and (has(\"data\")|not) and .channel == \"j1\"' $OUT_FILE >/dev/null" \
		"--json non-UTF-8 payload as data_b64"
	run "$CHAN" send j2 x y
	run "$CHAN" --json recv j2 -n 2
	check "[ \$(wc -l <$OUT_FILE) -eq 2 ]" "--json -n 2: two lines"
	check "jq -s -e 'length == 2 and .[0].data == \"x\" and .[1].data == \"y\" and .[1].seq > .[0].seq' $OUT_FILE >/dev/null" \
		"--json -n 2: two objects, increasing seq"
}

t_counters() {
	run "$CHAN" counter add c1
	expect_rc 0 "counter add"
	expect_out $'1\n' "counter add prints the new value (DELTA 1)"
	run "$CHAN" counter add c1 5
	expect_out $'6\n' "counter add 5"
	run "$CHAN" counter add c1 -2
	expect_rc 0 "counter add a negative delta"
	expect_out $'4\n' "counter add -2"
	run "$CHAN" counter get c1
	expect_rc 0 "counter get"
	expect_out $'4\n' "counter get prints the value"
	run "$CHAN" counter set c1 10
	expect_rc 0 "counter set"
	expect_out $'4\n' "counter set prints the old value"
	run "$CHAN" counter get c1
	expect_out $'10\n' "counter value after set"
	run "$CHAN" counter cas c1 10 20
	expect_rc 0 "cas that swaps exits 0"
	expect_out $'20\n' "cas prints the current value"
	run "$CHAN" counter cas c1 10 30
	expect_rc 1 "cas that does not swap exits 1"
	expect_out $'20\n' "failed cas prints the current value"

	run "$CHAN" counter set w 5
	local op
	for op in '==' '!=' '<' '<=' '>' '>='; do
		case "$op" in
		'==' | '<=' | '>=') run "$CHAN" counter wait w "$op" 5 ;;
		'!=' | '>') run "$CHAN" counter wait w "$op" 4 ;;
		'<') run "$CHAN" counter wait w "$op" 6 ;;
		esac
		expect_rc 0 "counter wait $op already true"
		expect_out $'5\n' "counter wait $op prints the value"
	done
	run "$CHAN" --timeout 200ms counter wait w '>' 5
	expect_rc 2 "counter wait not satisfied times out"
	run "$CHAN" counter wait w '=~' 5
	expect_rc 64 "counter wait with a bad OP"

	bg "$WORK/cw1" "$CHAN" counter wait cw '>=' 3
	local w1=$BG_PID
	bg "$WORK/cw2" "$CHAN" counter wait cw '==' 3
	local w2=$BG_PID
	settle
	run "$CHAN" counter add cw 3
	wait_bg "$w1" 5
	check "[ $BG_RC -eq 0 ]" "background counter wait >= woken by add (got $BG_RC)"
	check "[ \"\$(cat $WORK/cw1)\" = 3 ]" "woken wait >= prints 3"
	wait_bg "$w2" 5
	check "[ $BG_RC -eq 0 ]" "every satisfied waiter is woken (got $BG_RC)"

	run "$CHAN" counter list
	expect_rc 0 "counter list"
	expect_out_has "c1" "counter list shows c1"
	expect_out_has "cw" "counter list shows cw"

	run "$CHAN" counter set big 9223372036854775807
	expect_rc 0 "counter set INT64_MAX"
	run "$CHAN" counter add big 1
	expect_rc 12 "counter overflow"
	expect_err_prefix "chan: counter" "OUT_OF_RANGE message"
	run "$CHAN" counter get big
	expect_out $'9223372036854775807\n' "overflow left the value unchanged"

	# Several DELTAs: one request, the value after each add on its own line.
	run "$CHAN" counter add many 1 2 3
	expect_rc 0 "counter add with three deltas"
	expect_out $'1\n3\n6\n' "counter add 1 2 3 prints each value"
	run "$CHAN" counter add many -6 10
	expect_out $'0\n10\n' "counter add with a negative first delta"
	run "$CHAN" --json counter add many 1 1
	expect_out $'{"name":"many","value":11}\n{"name":"many","value":12}\n' \
		"counter add --json: one object per add"
	run "$CHAN" counter add many 1 x 2
	expect_rc 64 "counter add with a non-number among deltas"
	run "$CHAN" counter get many
	expect_out $'12\n' "a bad DELTA applies nothing"
	run "$CHAN" counter set big 9223372036854775806
	run "$CHAN" counter add big 1 1
	expect_rc 12 "counter add overflowing in the second delta"
	expect_err_prefix "chan: counter add: add 2 of 2" "OUT_OF_RANGE names the add"
	run "$CHAN" counter get big
	expect_out $'9223372036854775806\n' "an overflow among deltas applies none"

	run "$CHAN" counter delete c1
	expect_rc 0 "counter delete"
	run "$CHAN" counter get c1
	expect_rc 6 "counter get after delete"
	run "$CHAN" counter add c1
	expect_out $'1\n' "add after delete starts again at 0"
	# Counters and channels are separate namespaces.
	run "$CHAN" send c1 msg
	run "$CHAN" counter get c1
	expect_out $'1\n' "a channel named like a counter does not touch it"
}

t_too_large() {
	local b1024 b1025
	stop_chand
	start_chand --max-message-size 1024
	b1024=$(head -c 1024 /dev/zero | tr '\0' x)
	b1025=${b1024}y
	run "$CHAN" send big "$b1025"
	expect_rc 9 "send 1025 bytes, limit 1024"
	expect_err_prefix "chan: send: " "TOO_LARGE message"
	run_in "$b1025" "$CHAN" send big --raw
	expect_rc 9 "send --raw 1025 bytes"
	run "$CHAN" try-recv big
	check "[ $RC -eq 3 ] || [ $RC -eq 6 ]" "TOO_LARGE stored nothing (try-recv exit $RC)"
	run "$CHAN" send big "$b1024"
	expect_rc 0 "send exactly 1024 bytes"
	run "$CHAN" recv big
	expect_out "$b1024"$'\n' "1024-byte message intact"
	stop_chand
	start_chand
	# The default limit: 1 MiB passes, one byte more does not.
	head -c 1048576 /dev/zero | tr '\0' m >"$WORK/mib"
	RC=0
	timeout 20 "$CHAN" send mib --raw <"$WORK/mib" >/dev/null 2>"$ERR_FILE" || RC=$?
	expect_rc 0 "send --raw of exactly 1 MiB"
	printf 'x' >>"$WORK/mib"
	RC=0
	timeout 20 "$CHAN" send mib --raw <"$WORK/mib" >/dev/null 2>"$ERR_FILE" || RC=$?
	expect_rc 9 "send --raw of 1 MiB + 1"
	run "$CHAN" recv mib
	check "[ \$(wc -c <$OUT_FILE) -eq 1048577 ]" "1 MiB message came back whole"
}

t_no_auto_create() {
	stop_chand
	start_chand --no-auto-create
	run "$CHAN" send nac x
	expect_rc 6 "send to a missing channel with --no-auto-create"
	run "$CHAN" try-recv nac
	expect_rc 6 "try-recv on a missing channel with --no-auto-create"
	run "$CHAN" create nac
	run "$CHAN" send nac x
	expect_rc 0 "send after create with --no-auto-create"
}

t_shutdown() {
	# Waiters are answered SHUTTING_DOWN, and chand exits 0.
	bg "$WORK/sd1" "$CHAN" recv sd
	local p1=$BG_PID
	parked_receiver sd
	bg "$WORK/sd2" "$CHAN" counter wait sdc '>' 100
	local p2=$BG_PID
	run "$CHAN" create sdfull --capacity 1
	run "$CHAN" send sdfull x
	bg "$WORK/sd3" "$CHAN" send sdfull y
	local p3=$BG_PID
	parked_sender sdfull # under load a bare sleep was not always enough
	settle
	stop_chand
	wait_bg "$p1" 5
	check "[ $BG_RC -eq 13 ]" "recv waiting at shutdown exits 13 (got $BG_RC)"
	wait_bg "$p2" 5
	check "[ $BG_RC -eq 13 ]" "counter wait at shutdown exits 13 (got $BG_RC)"
	wait_bg "$p3" 5
	check "[ $BG_RC -eq 13 ]" "blocked send at shutdown exits 13 (got $BG_RC)"
}

# ---- send through the producer, recv through the consumer ----------------------
t_stream() {
	# Many lines: every one arrives once, in order (batches overlap stdin).
	seq 1 20000 >"$WORK/seq.in"
	RC=0
	timeout $((20 * SLOW)) "$CHAN" send st1 <"$WORK/seq.in" >/dev/null 2>"$ERR_FILE" || RC=$?
	expect_rc 0 "send 20000 stdin lines"
	run "$CHAN" recv st1 -n 20000
	expect_rc 0 "recv -n 20000"
	check "cmp -s $OUT_FILE $WORK/seq.in" "20000 lines came back whole and in order"
	run "$CHAN" try-recv st1
	expect_rc 3 "20000 lines: no extra message"

	# recv -n N takes exactly N out of the channel, however much it prefetches.
	RC=0
	timeout $((20 * SLOW)) "$CHAN" send st2 <"$WORK/seq.in" >/dev/null 2>&1 || RC=$?
	run "$CHAN" recv st2 -n 1500
	expect_rc 0 "recv -n 1500 of 20000"
	check "[ \$(wc -l <$OUT_FILE) -eq 1500 ]" "recv -n 1500 printed 1500 lines"
	run "$CHAN" --json stat st2
	check "jq -e '.depth == 18500 and .in_flight == 0' $OUT_FILE >/dev/null" \
		"recv -n 1500 left 18500 queued and none in flight"
	run "$CHAN" recv st2
	expect_out $'1501\n' "the next message after recv -n 1500"

	# A bounded channel: batches are capped to its capacity (more is never accepted).
	run "$CHAN" create st3 --capacity 2
	bg "$WORK/st3" "$CHAN" recv st3 -n 7
	local rp=$BG_PID
	run_in $'a\nb\nc\nd\ne\nf\ng\n' "$CHAN" send st3
	expect_rc 0 "send 7 lines to a channel of capacity 2"
	wait_bg "$rp" 5
	check "[ $BG_RC -eq 0 ]" "receiver of the capacity-2 channel exits 0 (got $BG_RC)"
	printf 'a\nb\nc\nd\ne\nf\ng\n' >"$WORK/st3.exp"
	check "cmp -s $WORK/st3 $WORK/st3.exp" "capacity 2: all 7 lines, in order"
	bg "$WORK/st3b" "$CHAN" recv st3 -n 3
	rp=$BG_PID
	run "$CHAN" send st3 a b c
	expect_rc 0 "three MSG arguments to a channel of capacity 2"
	wait_bg "$rp" 5
	check "[ \"\$(tr '\\n' ' ' <$WORK/st3b)\" = 'a b c ' ]" "three MSG arguments arrived"

	# A failed batch stops the stream: what went before stays, nothing after a gap.
	run "$CHAN" create st4 --capacity 3
	run "$CHAN" send st4 x
	run_in $'a\nb\nc\nd\n' "$CHAN" --timeout 300ms send st4
	expect_rc 2 "send into a channel without room for the rest times out"
	expect_err_prefix "chan: send: " "TIMEOUT message for send"
	run "$CHAN" --timeout 300ms recv st4 -n 5
	check "[ \"\$(tr '\\n' ' ' <$OUT_FILE)\" = 'x a ' ] || [ \"\$(tr '\\n' ' ' <$OUT_FILE)\" = 'x a b ' ]" \
		"a prefix of the lines arrived, with no gap ($(tr '\n' ' ' <"$OUT_FILE"))"

	# A line over the limit: the lines before it are sent, none after.
	stop_chand
	start_chand --max-message-size 16
	run_in $'one\ntwo\n0123456789abcdefX\nthree\n' "$CHAN" send st5
	expect_rc 9 "a line over the limit"
	expect_err_has "line 3" "TOO_LARGE names the line"
	run "$CHAN" --timeout 200ms recv st5 -n 3
	expect_out $'one\ntwo\n' "the lines before the long one were sent, none after"
	run "$CHAN" send st5 ok 0123456789abcdefX
	expect_rc 9 "a MSG argument over the limit"
	run "$CHAN" try-recv st5
	expect_rc 3 "a MSG over the limit: no argument was sent"
	stop_chand
	start_chand --workers 2

	# --follow: SIGINT after messages, then the rest is still there.
	run "$CHAN" send st6 p q
	bg "$WORK/st6" "$CHAN" recv st6 --follow
	local fp=$BG_PID
	settle
	kill -INT "$fp" 2>/dev/null
	wait_bg "$fp" 5
	check "[ $BG_RC -eq 0 ]" "recv --follow ends 0 on SIGINT (got $BG_RC)"
	printf 'p\nq\n' >"$WORK/st6.exp"
	check "cmp -s $WORK/st6 $WORK/st6.exp" "recv --follow printed what it had before SIGINT"
	run "$CHAN" --json stat st6
	check "jq -e '.depth == 0 and .in_flight == 0 and .total_redelivered == 0' $OUT_FILE >/dev/null" \
		"what --follow printed was confirmed, nothing comes back"
}

# ---- chand's own command line ----------------------------------------------------
# wait_ping URL: until chand answers there (or 10 s, scaled); RC of the last try.
wait_ping() {
	local i
	for ((i = 0; i < 200 * SLOW; i++)); do
		run "$CHAN" --url "$1" ping
		[ "$RC" -eq 0 ] && return 0
		sleep 0.05
	done
}

# nng task threads of a running process (nng names them "nng:task").
nng_task_threads() {
	cat /proc/"$1"/task/*/comm 2>/dev/null | grep -c '^nng:task$'
}

# The same once it is WANT (each thread names itself when it first runs):
# waits up to 5 s (scaled), then prints what there is.
nng_task_threads_settled() {
	local i n
	for ((i = 0; i < 250 * SLOW; i++)); do
		n=$(nng_task_threads "$1")
		[ "$n" -eq "$2" ] && break
		sleep 0.02
	done
	echo "$n"
}

# The chan CLI, one client, starts two nng task threads (nng_threads.h).
t_cli_threads() {
	local pid n
	"$CHAN" --url "$1" --timeout 5s recv io-empty >/dev/null 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	n=$(nng_task_threads_settled "$pid" 2)
	check "[ $n -eq 2 ]" "a parked chan recv runs 2 nng task threads (has $n)"
	kill -TERM "$pid"
	wait_bg "$pid" 5
}

# --io-threads: the count nng really starts, from the option, the config
# file and the default (one per CPU, even, 2 to 16), and bad values.
t_io_threads() {
	local dir=$1 pid want n got
	for n in 1 17 x ""; do
		run "$CHAND" --listen "ipc://$dir/bad.sock" --io-threads "$n"
		expect_rc 64 "chand --io-threads '$n' is a usage error"
		expect_err_has "io-threads" "chand says which option is wrong ('$n')"
	done
	want=$(nproc)
	want=$((want < 2 ? 2 : want + want % 2))
	want=$((want > 16 ? 16 : want))
	for n in default 4 3; do
		if [ "$n" = default ]; then
			"$CHAND" --listen "ipc://$dir/io.sock" </dev/null >"$dir/io.log" 2>&1 &
		else
			"$CHAND" --listen "ipc://$dir/io.sock" --io-threads "$n" </dev/null >"$dir/io.log" 2>&1 &
			want=$((n + n % 2))
		fi
		pid=$!
		BG_PIDS+=("$pid")
		wait_ping "ipc://$dir/io.sock"
		expect_rc 0 "chand --io-threads $n answers"
		got=$(nng_task_threads_settled "$pid" "$want")
		check "[ $got -eq $want ]" \
			"chand --io-threads $n runs $want nng task threads (has $got)"
		check "grep -q '$want io threads' $dir/io.log" "chand logs its io threads ($n)"
		if [ "$n" = default ]; then
			t_cli_threads "ipc://$dir/io.sock"
		fi
		kill -TERM "$pid"
		wait_bg "$pid" 5
	done
	printf 'listen = ipc://%s/io.sock\nio-threads = 6\n' "$dir" >"$dir/io.conf"
	"$CHAND" --config "$dir/io.conf" </dev/null >"$dir/io.log" 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	wait_ping "ipc://$dir/io.sock"
	got=$(nng_task_threads_settled "$pid" 6)
	check "[ $got -eq 6 ]" "config io-threads = 6 runs 6 nng task threads (has $got)"
	kill -TERM "$pid"
	wait_bg "$pid" 5
}

t_chand_cmdline() {
	local o dir pid
	run "$CHAND" --help
	expect_rc 0 "chand --help"
	cat "$ERR_FILE" >>"$OUT_FILE"
	for o in --listen --config --workers --max-message-size --no-auto-create; do
		expect_out_has "$o" "chand --help lists $o"
	done
	run "$CHAND" --listen "bogus://nowhere"
	expect_rc 1 "chand on a URL it cannot listen on"
	check "[ -s $ERR_FILE ]" "chand says why it cannot listen"
	: >"$WORK/plainfile"
	run "$CHAND" --listen "ipc://$WORK/plainfile/s.sock"
	expect_rc 1 "chand on an ipc path under a regular file"
	run "$CHAND" --no-such-option
	check "[ $RC -ne 0 ] && [ $RC -ne 124 ]" "chand rejects an unknown option (exit $RC)"

	# Every option has a config-file key.
	dir=$(mktemp -d "$WORK/conf-XXXXXX")
	cat >"$dir/chand.conf" <<-EOF
		listen = ipc://$dir/c.sock
		workers = 3
		max-message-size = 1024
		auto-create = no
	EOF
	"$CHAND" --config "$dir/chand.conf" </dev/null >"$dir/log" 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	wait_ping "ipc://$dir/c.sock"
	expect_rc 0 "chand --config: listens where the file says"
	run "$CHAN" --url "ipc://$dir/c.sock" send nope x
	expect_rc 6 "config auto-create = no"
	run "$CHAN" --url "ipc://$dir/c.sock" create yes
	run "$CHAN" --url "ipc://$dir/c.sock" send yes "$(head -c 1025 /dev/zero | tr '\0' x)"
	expect_rc 9 "config max-message-size = 1024"
	# SIGINT stops it cleanly too (as from a terminal: SIGINT not ignored).
	kill -TERM "$pid"
	wait_bg "$pid" 5
	check "[ $BG_RC -eq 0 ]" "chand --config exits 0 on SIGTERM (got $BG_RC)" ||
		cat "$dir/log" >&2

	# --config has a key too: `config = FILE` reads FILE there.
	printf 'config = %s/inc.conf\nworkers = 3\n' "$dir" >"$dir/top.conf"
	printf 'listen = ipc://%s/inc.sock\nmax-message-size = 10\n' "$dir" >"$dir/inc.conf"
	"$CHAND" --config "$dir/top.conf" </dev/null >"$dir/inclog" 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	wait_ping "ipc://$dir/inc.sock"
	expect_rc 0 "config = FILE: listens where the included file says"
	run "$CHAN" --url "ipc://$dir/inc.sock" send inc 01234567890
	expect_rc 9 "config = FILE: the included max-message-size applies"
	kill -TERM "$pid"
	wait_bg "$pid" 5
	printf 'config = %s/self.conf\n' "$dir" >"$dir/self.conf"
	run "$CHAND" --config "$dir/self.conf"
	expect_rc 64 "a config file that includes itself is refused"

	t_io_threads "$dir"

	env --default-signal=INT "$CHAND" --listen "ipc://$dir/i.sock" </dev/null >"$dir/log2" 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	wait_ping "ipc://$dir/i.sock"
	expect_rc 0 "chand started for the SIGINT check"
	kill -INT "$pid"
	wait_bg "$pid" 5
	check "[ $BG_RC -eq 0 ]" "chand exits 0 on SIGINT (got $BG_RC)" ||
		cat "$dir/log2" >&2
}

t_no_daemon
t_help_usage
t_chand_cmdline
start_chand --workers 2
t_ping_stats_list
t_create
t_send_recv
t_empty_timeout
t_bounded
t_close_delete
t_busy
t_names
t_recv_any
t_lease
t_json
t_counters
t_too_large
t_no_auto_create
stop_chand
start_chand --workers 2
t_stream
stop_chand
start_chand
t_shutdown
finish
