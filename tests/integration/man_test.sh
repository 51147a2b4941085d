#!/usr/bin/env bash
# man_test.sh CHAND CHAN SRCDIR - the man pages document what SPEC says
# they do: chan(1) every command, option and exit status; chand(8) every
# option `chand --help` lists. Both render without groff warnings.
set -uo pipefail

CHAND=${1:?usage: man_test.sh CHAND CHAN SRCDIR}
CHAN=${2:?usage: man_test.sh CHAND CHAN SRCDIR}
SRC=${3:?usage: man_test.sh CHAND CHAN SRCDIR}
FAILS=0
CHECKS=0

fail() {
	FAILS=$((FAILS + 1))
	echo "FAIL: $*" >&2
}

TMP=$(mktemp -d /tmp/chan-man-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# plain FILE: the page's source with roff's escaped dashes made plain
# (a file, not a pipe: grep -q closing early is no failure).
plain() {
	local out
	out="$TMP/$(basename "$1")"
	[ -f "$out" ] || sed -e 's/\\-/-/g' -e 's/\\(en/-/g' "$1" >"$out"
	echo "$out"
}

# has FILE TEXT WHAT
has() {
	CHECKS=$((CHECKS + 1))
	grep -qF -- "$2" "$(plain "$1")" || fail "$(basename "$1") does not mention $3 ('$2')"
}

renders_clean() {
	local out
	CHECKS=$((CHECKS + 1))
	if ! command -v groff >/dev/null; then
		echo "groff not installed: rendering not checked"
		return 0
	fi
	out=$(LC_ALL=C groff -man -Tutf8 -ww -z "$1" 2>&1)
	[ -z "$out" ] || fail "$(basename "$1") renders with warnings: $out"
}

CHAN1=$SRC/man/chan.1
CHAND8=$SRC/man/chand.8
for f in "$CHAN1" "$CHAND8"; do
	[ -f "$f" ] || {
		echo "FAIL: $f is missing" >&2
		exit 1
	}
	renders_clean "$f"
done

for c in ping stats list create send recv try-recv recv-any close delete stat \
	counter add get set cas wait; do
	has "$CHAN1" "$c" "command $c"
done
for o in --url --timeout --json --capacity --rendezvous --try --raw --follow \
	-n -0 --help CHAN_URL data_b64; do
	has "$CHAN1" "$o" "$o"
done
# SPEC's exit status table, number and status name.
while read -r code name; do
	CHECKS=$((CHECKS + 1))
	grep -qE "^${code}[[:space:]].*${name}" "$(plain "$CHAN1")" ||
		fail "chan.1 has no exit status line '$code ... $name'"
done <<'EOF'
0 OK
2 TIMEOUT
3 EMPTY
4 FULL
5 CLOSED
6 NOT_FOUND
7 BUSY
8 ALREADY_EXISTS
9 TOO_LARGE
10 PERMISSION_DENIED
11 RESOURCE_EXHAUSTED
12 OUT_OF_RANGE
13 SHUTTING_DOWN
64 INVALID_ARGUMENT
69 UNAVAILABLE
69 PROTOCOL
70 INTERNAL
EOF

# Every option chand --help lists is in chand(8).
opts=$("$CHAND" --help 2>&1 | grep -oE -- '--[a-z][a-z-]*' | sort -u)
CHECKS=$((CHECKS + 1))
[ -n "$opts" ] || fail "chand --help lists no options"
for o in $opts; do
	has "$CHAND8" "$o" "option $o"
done
# ...and every command chan --help lists is in chan(1).
for c in $("$CHAN" --help 2>&1 | grep -oE '^  [a-z][a-z-]+' | sort -u); do
	has "$CHAN1" "$c" "command $c from chan --help"
done

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
