#!/usr/bin/env bash
# Installs everything this repository needs on Debian 12 (bookworm), as root. Idempotent: a second run that finds
# everything in place touches neither apt nor PyPI and takes about a second.
#
#   scripts/setup.sh             everything: build deps, libcurl with WebSockets, Python venv (.venv) with the
#                                test peers' packages, Autobahn|Testsuite (.autobahn, only where Python 2.7 exists)
#   scripts/setup.sh --minimal   only what building and running `wsc` needs (used by scripts/demo.sh)
#
# Environment: AUTOBAHN=off skips the Autobahn part; AUTOBAHN_PYTHON2=/path/to/python2.7 picks the interpreter.
# Every failing step prints "setup: FAILED: <what> — <what to do>" and exits non-zero.
set -euo pipefail
# a command failing under set -e would end the script silently; say where (not under set +e)
# shellcheck disable=SC2154
trap 'rc=$?; if [[ $- == *e* ]]; then echo "setup: FAILED: unexpected error (exit $rc) at line $LINENO of $0 — rerun with bash -x to see more" >&2; fi' ERR

MINIMAL=0
for arg in "$@"; do
    case "$arg" in
        --minimal) MINIMAL=1 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: FAILED: unknown option '$arg' — use --minimal or no option" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

START=$SECONDS
fail() { echo "setup: FAILED: $1 — $2" >&2; exit 1; }
note() { echo "setup: $*"; }

STATE_DIR="$ROOT/.build-setup"       # machine-local state; ignored by git through the .build*/ pattern
WEBSOCKETS_REQ="$ROOT/Tests/Fixtures/requirements.txt"
AUTOBAHN_DIR="$ROOT/.autobahn"
AUTOBAHN_PKG="autobahntestsuite==25.10.1"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# ---------------------------------------------------------------------------------------------------- apt packages
BUILD_PKGS=(build-essential pkg-config libssl-dev zlib1g-dev libnghttp2-dev openssl git ca-certificates)
# what the swift.org toolchain itself needs on Debian 12 (swift-build links libncurses and libxml2, for example)
SWIFT_DEPS=(binutils libncurses-dev libxml2-dev libedit2 libsqlite3-dev libicu-dev libpython3-dev uuid-dev tzdata)
# stunnel4 (an https:// proxy in front of tinyproxy) and dante-server (danted, SOCKS5) are the proxy tests' peers.
TEST_PKGS=(python3 python3-venv tinyproxy stunnel4 dante-server iproute2 procps nftables)
PKGS=("${BUILD_PKGS[@]}" "${SWIFT_DEPS[@]}")
[ "$MINIMAL" = 1 ] || PKGS+=("${TEST_PKGS[@]}")

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then fail "apt-get/dpkg not found" "this script supports Debian 12 (bookworm); elsewhere install by hand: ${PKGS[*]} libcurl4-openssl-dev (>= 7.86 with WebSockets), Swift 6.3, python3 with venv"
fi

# shellcheck disable=SC1091
CODENAME="$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)"

is_installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }
curl_has_ws() { is_installed libcurl4-openssl-dev && curl-config --protocols 2>/dev/null | grep -qx 'WS'; }

SUDO=()
need_root() {
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -E); else
            fail "installing $1 needs root" "run this script as root (or with passwordless sudo), or install by hand: apt-get install $1"
        fi
    fi
}

APT_UPDATED=0
APT_UPDATE_FAILED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    note "apt-get update"
    # A source that cannot be reached makes apt-get update fail, yet the others may still have what we need:
    # warn here, and let a failing install be the error.
    if ! "${SUDO[@]}" apt-get update -q -o Dpkg::Use-Pty=0 >/tmp/setup-apt-update.$$ 2>&1; then
        grep -E '^(W|E|Err):' /tmp/setup-apt-update.$$ | tail -n 10 >&2 || tail -n 10 /tmp/setup-apt-update.$$ >&2
        note "WARNING: apt-get update reported errors (above); continuing with the package lists it could fetch"
        APT_UPDATE_FAILED=1
    fi
    rm -f /tmp/setup-apt-update.$$
    APT_UPDATED=1
}

# Keep apt from starting daemons (tinyproxy's package would start one on port 8888, dante-server one on 1080):
# tests start their own.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
block_services() {
    if [ ! -e "$POLICY_RC" ] && [ "$(id -u)" = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC" && chmod 755 "$POLICY_RC" && POLICY_RC_OURS=1
    fi
}
cleanup() { [ "$POLICY_RC_OURS" = 1 ] && rm -f "$POLICY_RC"; rm -f /tmp/setup-apt-*."$$"; return 0; }
trap cleanup EXIT

apt_install() { # apt_install <apt-get install args...>
    block_services
    note "apt-get install $*"
    "${SUDO[@]}" apt-get install "${APT_OPTS[@]}" "$@" >/tmp/setup-apt-install.$$ 2>&1 || {
        tail -n 25 /tmp/setup-apt-install.$$ >&2
        return 1
    }
    return 0
}

MISSING=()
for p in "${PKGS[@]}"; do is_installed "$p" || MISSING+=("$p"); done
if [ "${#MISSING[@]}" -gt 0 ]; then
    need_root "${MISSING[*]}"
    apt_update
    apt_install --no-install-recommends "${MISSING[@]}" \
        || fail "apt-get install ${MISSING[*]}" "read the apt output above$([ "$APT_UPDATE_FAILED" = 1 ] && echo ' (apt-get update failed too: check network access to deb.debian.org and /etc/apt/sources.list*)'); on Debian 12 these package names exist in 'main'"
fi

# ------------------------------------------------------------------------------------ libcurl with WebSocket support
# Debian 12's own libcurl (7.88) is built without WebSockets; bookworm-backports has 8.x with them.
has_backports_source() {
    grep -qsE '^[[:space:]]*deb[[:space:]].*[[:space:]]bookworm-backports([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
    # deb822 (.sources): a stanza whose Suites: line names bookworm-backports
    grep -qsiE '^[[:space:]]*Suites:.*(^|[[:space:]])bookworm-backports([[:space:]]|$)' /etc/apt/sources.list.d/*.sources
}
CURL_NOTICE_STAMP="$STATE_DIR/curl-without-websockets"
curl_notice() {
    echo "setup: NOTICE: libcurl $(curl-config --version 2>/dev/null | sed 's/^libcurl //') has no WebSocket support" \
         "(bookworm-backports unavailable): the Curl engine will report WebSockets unsupported; the CIO engine is unaffected."
}
if curl_has_ws; then
    :
elif is_installed libcurl4-openssl-dev && [ -f "$CURL_NOTICE_STAMP" ] && [ -z "$(find "$CURL_NOTICE_STAMP" -mmin +1440 2>/dev/null)" ]; then
    curl_notice   # tried within the last day; don't hit apt again on every run
else
    need_root libcurl4-openssl-dev
    installed_ws=0
    if [ "$CODENAME" = bookworm ]; then
        if ! has_backports_source; then
            line="deb http://deb.debian.org/debian bookworm-backports main"
            [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] \
                && line="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main"
            note "adding bookworm-backports to /etc/apt/sources.list.d/bookworm-backports.list"
            echo "$line" | "${SUDO[@]}" tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null \
                || fail "writing /etc/apt/sources.list.d/bookworm-backports.list" "run as root"
            APT_UPDATED=0
        fi
        # the lists may predate the backports line (or be absent on a fresh image)
        apt-cache madison libcurl4-openssl-dev 2>/dev/null | grep -q bookworm-backports || apt_update
        if apt_install -t bookworm-backports libcurl4-openssl-dev && curl_has_ws; then
            installed_ws=1
        else
            note "bookworm-backports libcurl could not be installed; falling back to Debian's libcurl4-openssl-dev"
        fi
    fi
    if [ "$installed_ws" = 0 ]; then
        if ! is_installed libcurl4-openssl-dev; then
            apt_update
            apt_install libcurl4-openssl-dev \
                || fail "apt-get install libcurl4-openssl-dev" "read the apt output above$([ "$APT_UPDATE_FAILED" = 1 ] && echo ' (apt-get update failed too: check network access to deb.debian.org)')"
        fi
        if curl_has_ws; then :; else
            mkdir -p "$STATE_DIR" && touch "$CURL_NOTICE_STAMP"
            curl_notice
        fi
    else
        rm -f "$CURL_NOTICE_STAMP"
    fi
fi

# ---------------------------------------------------------------------------------------------------- localhost
# Tests (and TLS host-name checks) use the name localhost; bare chroots and some minimal images lack /etc/hosts.
if ! getent hosts localhost >/dev/null 2>&1; then
    if [ -w /etc/hosts ] || [ ! -e /etc/hosts ]; then
        note "'localhost' did not resolve; adding it to /etc/hosts"
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>/etc/hosts
    fi
    getent hosts localhost >/dev/null 2>&1 \
        || fail "the name 'localhost' does not resolve" "add '127.0.0.1 localhost' to /etc/hosts (as root)"
fi

# ------------------------------------------------------------------------------------------- SOCKS5 test user
# danted's username method (RFC 1929) checks the system's users: the SOCKS5 tests log in as 'wsproxy' with a
# password that is only a test fixture (a system account with no home and no login shell).
if [ "$MINIMAL" = 0 ] && ! getent passwd wsproxy >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        note "creating the system user 'wsproxy' for the SOCKS5 proxy tests"
        useradd --system --no-create-home --shell /usr/sbin/nologin wsproxy \
            || fail "useradd wsproxy" "create it by hand: useradd --system -M -s /usr/sbin/nologin wsproxy"
        echo 'wsproxy:ws-proxy-test-pw' | chpasswd \
            || fail "setting the password of wsproxy" "run: echo 'wsproxy:ws-proxy-test-pw' | chpasswd"
    else
        note "NOTICE: not root: the user 'wsproxy' is missing, so the SOCKS5 username/password tests are skipped"
    fi
fi

# --------------------------------------------------------------------------------------------------------- Swift
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
    note "swift was not on PATH; using /opt/swift/usr/bin (add it to PATH yourself to run swift directly)"
fi
command -v swift >/dev/null 2>&1 \
    || fail "'swift' not found on PATH" "install Swift 6.3 for Debian 12 from https://www.swift.org/install/linux/ and put its usr/bin on PATH"
if ! SWIFT_VERSION_TEXT="$(swift --version 2>&1)"; then
    fail "swift at $(command -v swift) does not run: $(echo "$SWIFT_VERSION_TEXT" | head -n 2 | tr '\n' ' ')" \
         "install the toolchain's dependencies listed at https://www.swift.org/install/linux/ (Debian 12), or reinstall Swift 6.3"
fi
SWIFT_VERSION="$(echo "$SWIFT_VERSION_TEXT" | sed -n 's/.*Swift version \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)"
case "$SWIFT_VERSION" in
    6.[1-9]* | [7-9].* | [1-9][0-9].*) ;;
    *) fail "Swift ${SWIFT_VERSION:-of unknown version} at $(command -v swift) is too old (Package.swift needs tools 6.1)" \
            "install Swift 6.3 from https://www.swift.org/install/linux/ and put it first on PATH" ;;
esac

if [ "$MINIMAL" = 1 ]; then
    note "ready for building and running (minimal; Swift $SWIFT_VERSION) in $((SECONDS - START))s"
    exit 0
fi

# ------------------------------------------------------------------------------------------ Python venv for peers
PY3=/usr/bin/python3
[ -x "$PY3" ] || PY3="$(command -v python3 || true)"
[ -n "$PY3" ] || fail "python3 not found" "apt-get install python3 python3-venv"
[ -f "$WEBSOCKETS_REQ" ] || fail "$WEBSOCKETS_REQ is missing" "restore it from git (git checkout -- Tests/Fixtures)"
REQ_HASH="$(sha256sum <"$WEBSOCKETS_REQ" | cut -c1-16) $("$PY3" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)"
VENV="$ROOT/.venv"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.setup-stamp" 2>/dev/null)" = "$REQ_HASH" ] \
    && "$VENV/bin/python" -c 'import websockets, hypercorn' >/dev/null 2>&1; then
    :
else
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        note "creating Python venv .venv from $PY3"
        "$PY3" -m venv "$VENV" >/tmp/setup-venv.$$ 2>&1 || {
            cat /tmp/setup-venv.$$ >&2; rm -rf /tmp/setup-venv.$$ "$VENV"
            fail "creating the Python venv .venv with $PY3" "apt-get install python3-venv (as root), then rerun"; }
        rm -f /tmp/setup-venv.$$
    fi
    note "pip install -r Tests/Fixtures/requirements.txt (into .venv)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$WEBSOCKETS_REQ" \
        || fail "pip install -r Tests/Fixtures/requirements.txt into .venv" "check that PyPI is reachable (pip's error is above)"
    "$VENV/bin/python" -c 'import websockets, hypercorn' \
        || fail "importing websockets and hypercorn in .venv" "delete .venv and rerun scripts/setup.sh"
    echo "$REQ_HASH" >"$VENV/.setup-stamp"
fi

# ------------------------------------------------------------------------------------------ Autobahn|Testsuite
# Python 2 only. Where no Python 2.7 exists (plain Debian 12), record that and carry on.
find_python2() {
    local c candidates=()
    [ -n "${AUTOBAHN_PYTHON2:-}" ] && candidates+=("$AUTOBAHN_PYTHON2")
    local pyroot=""
    if command -v pyenv >/dev/null 2>&1; then pyroot="$(pyenv root 2>/dev/null || true)"; fi
    [ -n "$pyroot" ] || pyroot="${PYENV_ROOT:-$HOME/.pyenv}"
    candidates+=("$pyroot/versions/2.7.18/bin/python")
    for c in "$pyroot"/versions/2.7*/bin/python /usr/local/bin/python2.7 /usr/bin/python2.7; do candidates+=("$c"); done
    for c in "${candidates[@]}"; do
        [ -x "$c" ] || continue
        if "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; then
            echo "$c"; return 0
        fi
    done
    return 1
}
if [ "${AUTOBAHN:-on}" = off ]; then
    note "Autobahn part skipped (AUTOBAHN=off)"
elif ! PY2="$(find_python2)"; then
    rm -rf "$AUTOBAHN_DIR"; mkdir -p "$AUTOBAHN_DIR"
    echo "no Python 2.7 found (looked at \$AUTOBAHN_PYTHON2, pyenv's versions/2.7*, python2.7)" >"$AUTOBAHN_DIR/UNAVAILABLE"
    note "NOTICE: Autobahn|Testsuite unavailable: no Python 2.7 (pyenv) on this machine; scripts/test.sh will skip it"
else
    WANT="$AUTOBAHN_PKG $PY2"
    if [ -f "$AUTOBAHN_DIR/bin/wstest" ] && [ "$(cat "$AUTOBAHN_DIR/.setup-stamp" 2>/dev/null)" = "$WANT" ]; then
        :
    else
        note "installing $AUTOBAHN_PKG into .autobahn with $PY2 (about a minute)"
        TMP_AB="$ROOT/.autobahn.tmp.$$"
        rm -rf "$TMP_AB"
        "$PY2" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --target "$TMP_AB" "$AUTOBAHN_PKG" \
            >/tmp/setup-autobahn.$$ 2>&1 || {
            grep -v -i 'DEPRECATION' /tmp/setup-autobahn.$$ | tail -n 25 >&2; rm -rf "$TMP_AB" /tmp/setup-autobahn.$$
            fail "pip install $AUTOBAHN_PKG with $PY2" "check that PyPI is reachable and build-essential is installed; or set AUTOBAHN=off to skip Autobahn"; }
        rm -f /tmp/setup-autobahn.$$
        mkdir -p "$TMP_AB/zope" && touch "$TMP_AB/zope/__init__.py"
        PYTHONPATH="$TMP_AB" "$PY2" -c 'import autobahntestsuite.fuzzing' >/tmp/setup-autobahn.$$ 2>&1 || {
            tail -n 20 /tmp/setup-autobahn.$$ >&2; rm -rf "$TMP_AB" /tmp/setup-autobahn.$$
            fail "importing autobahntestsuite under $PY2" "see the Python error above; or set AUTOBAHN=off to skip Autobahn"; }
        rm -f /tmp/setup-autobahn.$$
        echo "$WANT" >"$TMP_AB/.setup-stamp"
        rm -rf "$AUTOBAHN_DIR" && mv "$TMP_AB" "$AUTOBAHN_DIR"
    fi
    printf 'AUTOBAHN_PY2=%q\n' "$PY2" >"$AUTOBAHN_DIR/env"
fi

note "ready (Swift $SWIFT_VERSION, $(curl_has_ws && echo 'libcurl with WebSockets' || echo 'libcurl WITHOUT WebSockets'), venv .venv$( [ -f "$AUTOBAHN_DIR/env" ] && echo ', Autobahn' )) in $((SECONDS - START))s"
