# shellcheck shell=bash disable=SC2034
# harness.sh - shell twin of harness.c, sourced by the CLI tests.
#
# start_chand [chand args...]  private dir + ipc socket, waits for `chan ping`;
#                              $CHAN_TEST_CHAND_ARGS (blank-separated words)
#                              is appended to every chand it starts, e.g.
#                              "--no-sp-direct" (the *_nngd ctest variants)
# stop_chand                   SIGTERM to its PID, expects exit 0 within 5 s
# run CMD...                   runs CMD; sets RC, stdout in $OUT_FILE,
#                              stderr in $ERR_FILE
# expect_rc / expect_out / expect_err_prefix / expect_err_has   checks
# bg CMD...                    starts CMD in the background (killed at exit)
#
# Needs CHAND and CHAN (binary paths). Failures are counted, not fatal:
# finish with `finish`, which exits 1 when any check failed.

: "${CHAND:?CHAND must name the chand binary}"
: "${CHAN:?CHAN must name the chan binary}"

WORK=$(mktemp -d /tmp/chan-cli-XXXXXX)
OUT_FILE=$WORK/out
ERR_FILE=$WORK/err
FAILS=0
CHECKS=0
CHAND_PID=
CHAND_LOG=
BG_PIDS=()
RC=0

# Sanitized daemons start and stop several times slower.
SLOW=1
[ -n "${CHAN_TEST_SANITIZER:-}" ] && SLOW=4

harness_cleanup() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
	done
	if [ -n "$CHAND_PID" ]; then
		kill -KILL "$CHAND_PID" 2>/dev/null || true
		wait "$CHAND_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap harness_cleanup EXIT

fail() {
	FAILS=$((FAILS + 1))
	echo "FAIL: $*" >&2
}

pass() {
	[ -n "${VERBOSE:-}" ] && echo "ok: $*"
	return 0
}

# Milliseconds since the epoch (for loose timing checks).
now_ms() {
	date +%s%3N
}

# start_chand [args...]: sets CHAND_PID, CHAND_DIR, CHAN_URL (exported).
start_chand() {
	local i
	local -a more=()

	CHAND_DIR=$(mktemp -d "$WORK/d-XXXXXX")
	CHAND_LOG=$CHAND_DIR/chand.log
	CHAN_URL="ipc://$CHAND_DIR/s.sock"
	export CHAN_URL
	# Words of CHAN_TEST_CHAND_ARGS, split on blanks (no globbing).
	read -r -a more <<<"${CHAN_TEST_CHAND_ARGS:-}"
	"$CHAND" --listen "$CHAN_URL" "$@" "${more[@]}" </dev/null >"$CHAND_LOG" 2>&1 &
	CHAND_PID=$!
	for ((i = 0; i < 200 * SLOW; i++)); do
		if ! kill -0 "$CHAND_PID" 2>/dev/null; then
			echo "chand exited during start-up:" >&2
			cat "$CHAND_LOG" >&2
			CHAND_PID=
			exit 1
		fi
		if "$CHAN" --url "$CHAN_URL" ping >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.05
	done
	echo "chand did not answer 'chan ping' within $((10 * SLOW)) s:" >&2
	cat "$CHAND_LOG" >&2
	exit 1
}

# stop_chand: SIGTERM by PID; exit status 0 within 5 s is a pass.
stop_chand() {
	local i st

	[ -n "$CHAND_PID" ] || return 0
	kill -TERM "$CHAND_PID"
	for ((i = 0; i < 100 * SLOW; i++)); do
		kill -0 "$CHAND_PID" 2>/dev/null || break
		sleep 0.05
	done
	CHECKS=$((CHECKS + 1))
	if kill -0 "$CHAND_PID" 2>/dev/null; then
		fail "chand did not exit within $((5 * SLOW)) s of SIGTERM"
		cat "$CHAND_LOG" >&2
		kill -KILL "$CHAND_PID" 2>/dev/null || true
		wait "$CHAND_PID" 2>/dev/null || true
	else
		wait "$CHAND_PID"
		st=$?
		if [ "$st" -ne 0 ]; then
			fail "chand exited $st on SIGTERM, expected 0"
			cat "$CHAND_LOG" >&2
		fi
	fi
	CHAND_PID=
}

# run CMD...: RC, $OUT_FILE, $ERR_FILE. A stuck command is killed after
# 20 s (scaled) and counts as RC 124.
run() {
	RC=0
	timeout -k 2 $((20 * SLOW)) "$@" >"$OUT_FILE" 2>"$ERR_FILE" || RC=$?
}

# run_in INPUT CMD...: as run, with INPUT (printf %s) on stdin.
run_in() {
	local input=$1
	shift
	RC=0
	printf '%s' "$input" |
		timeout -k 2 $((20 * SLOW)) "$@" >"$OUT_FILE" 2>"$ERR_FILE" || RC=$?
}

show_ctx() {
	echo "   stdout: $(head -c 300 "$OUT_FILE" | od -c | head -5)" >&2
	echo "   stderr: $(head -c 300 "$ERR_FILE")" >&2
}

# expect_rc WANT DESC
expect_rc() {
	CHECKS=$((CHECKS + 1))
	if [ "$RC" -ne "$1" ]; then
		fail "$2: exit $RC, expected $1"
		show_ctx
		return 1
	fi
	pass "$2"
}

# expect_out WANT DESC: stdout must be exactly WANT (trailing newlines too).
expect_out() {
	local got
	CHECKS=$((CHECKS + 1))
	got=$(cat "$OUT_FILE"; echo .)
	if [ "$got" != "$1." ]; then
		fail "$2: stdout $(printf '%q' "${got%.}"), expected $(printf '%q' "$1")"
		return 1
	fi
	pass "$2"
}

# expect_err_prefix PREFIX DESC: stderr starts with PREFIX.
expect_err_prefix() {
	CHECKS=$((CHECKS + 1))
	if [[ "$(cat "$ERR_FILE")" != "$1"* ]]; then
		fail "$2: stderr $(printf '%q' "$(head -c 300 "$ERR_FILE")") does not start with '$1'"
		return 1
	fi
	pass "$2"
}

# expect_err_has TEXT DESC: stderr contains TEXT.
expect_err_has() {
	CHECKS=$((CHECKS + 1))
	if ! grep -qF -- "$1" "$ERR_FILE"; then
		fail "$2: stderr $(printf '%q' "$(head -c 300 "$ERR_FILE")") lacks '$1'"
		return 1
	fi
	pass "$2"
}

# expect_out_has TEXT DESC: stdout contains TEXT.
expect_out_has() {
	CHECKS=$((CHECKS + 1))
	if ! grep -qF -- "$1" "$OUT_FILE"; then
		fail "$2: stdout $(printf '%q' "$(head -c 300 "$OUT_FILE")") lacks '$1'"
		return 1
	fi
	pass "$2"
}

# check COND DESC: a plain assertion on a shell condition's status.
check() {
	CHECKS=$((CHECKS + 1))
	if ! eval "$1"; then
		fail "$2 ($1)"
		return 1
	fi
	pass "$2"
}

# bg OUTFILE CMD...: CMD in the background, stdout+stderr to OUTFILE; BG_PID.
bg() {
	local out=$1
	shift
	"$@" >"$out" 2>"$out.err" &
	BG_PID=$!
	BG_PIDS+=("$BG_PID")
}

# wait_bg PID SECONDS: waits for a background command; sets BG_RC
# (124 if it is still running after SECONDS, and then it is killed).
wait_bg() {
	local pid=$1 secs=$2 i
	for ((i = 0; i < secs * 20 * SLOW; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		BG_RC=124
		return 0
	fi
	BG_RC=0
	wait "$pid" || BG_RC=$?
}

finish() {
	stop_chand
	echo "$CHECKS checks, $FAILS failed"
	[ "$FAILS" -eq 0 ]
	exit $?
}
