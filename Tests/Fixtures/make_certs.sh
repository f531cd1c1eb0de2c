#!/usr/bin/env bash
# Creates throw-away TLS material for the integration tests with the openssl CLI (OpenSSL 3.0 or later):
#
#   make_certs.sh DIR
#
#   ca.pem / ca.key                   test CA (CN=WS Test CA)
#   server.pem / server.key           signed by the CA, for DNS:localhost and IP:127.0.0.1 (serverAuth)
#   wrong-host.pem / wrong-host.key   signed by the CA, for DNS:wrong.example only
#   self-signed.pem / self-signed.key self-signed, for DNS:localhost and IP:127.0.0.1
#   expired.pem / expired.key         signed by the CA, for localhost/127.0.0.1, valid 2020-01-01 .. 2021-01-01
#   client.pem / client.key           client certificate (CN=ws-test-client, clientAuth) signed by the CA
#   client-encrypted.key              client.key encrypted (AES-256, PKCS#8) with the password test-key-password
#   ca-dir/                           ca.pem in OpenSSL's hashed directory layout (openssl rehash)
#
# Keys are unencrypted RSA 2048 (PKCS#8 PEM). Prints "make_certs: OK <DIR>" on success.
set -euo pipefail

[ $# = 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || { echo "make_certs: FAILED: openssl not found — apt-get install openssl" >&2; exit 1; }
DIR="$1"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
WORK="$(mktemp -d "$DIR/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$DIR"

quiet() { # run openssl quietly; show its output only when it fails
    if ! "$@" >"$WORK/log" 2>&1; then
        echo "make_certs: FAILED: $*" >&2
        cat "$WORK/log" >&2
        exit 1
    fi
}

key() { quiet openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key"; chmod 600 "$1.key"; }

ext() { # ext NAME SAN EKU -> extension file for a leaf certificate
    cat >"$WORK/$1.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = $3
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
${2:+subjectAltName = $2}
EXT
}

signed() { # signed NAME CN SAN EKU -> NAME.pem signed by the CA, valid from now for 10 years
    key "$1"
    ext "$1" "$3" "$4"
    quiet openssl req -new -key "$1.key" -subj "/O=swift-websocket-client tests/CN=$2" -out "$WORK/$1.csr"
    quiet openssl x509 -req -in "$WORK/$1.csr" -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
        -days 3650 -sha256 -extfile "$WORK/$1.ext" -out "$1.pem"
}

LOCAL_SAN="DNS:localhost, IP:127.0.0.1, IP:::1"

# the CA
key ca
quiet openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/O=swift-websocket-client tests/CN=WS Test CA" \
    -addext "basicConstraints = critical, CA:TRUE" -addext "keyUsage = critical, keyCertSign, cRLSign" \
    -addext "subjectKeyIdentifier = hash" -out ca.pem

signed server localhost "$LOCAL_SAN" serverAuth
signed wrong-host wrong.example "DNS:wrong.example" serverAuth
signed client ws-test-client "" clientAuth

quiet openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.key -passout pass:test-key-password -out client-encrypted.key
chmod 600 client-encrypted.key
mkdir -p ca-dir
cp ca.pem ca-dir/ca.pem
quiet openssl rehash ca-dir

# self-signed leaf for localhost
key self-signed
quiet openssl req -x509 -new -key self-signed.key -sha256 -days 3650 -subj "/O=swift-websocket-client tests/CN=localhost" \
    -addext "subjectAltName = $LOCAL_SAN" -addext "basicConstraints = critical, CA:FALSE" \
    -addext "extendedKeyUsage = serverAuth" -out self-signed.pem

# expired: `openssl x509` cannot backdate in OpenSSL 3.0, `openssl ca` can (-startdate/-enddate)
key expired
ext expired "$LOCAL_SAN" serverAuth
quiet openssl req -new -key expired.key -subj "/O=swift-websocket-client tests/CN=localhost" -out "$WORK/expired.csr"
mkdir -p "$WORK/ca/newcerts"
: >"$WORK/ca/index.txt"
openssl rand -hex 16 >"$WORK/ca/serial"
cat >"$WORK/ca.cnf" <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $WORK/ca
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
organizationName = optional
commonName = supplied
CNF
quiet openssl ca -batch -notext -config "$WORK/ca.cnf" -cert ca.pem -keyfile ca.key -in "$WORK/expired.csr" \
    -startdate 20200101000000Z -enddate 20210101000000Z -extfile "$WORK/expired.ext" -out expired.pem

# sanity checks: what should verify does, what should not doesn't
quiet openssl verify -CAfile ca.pem server.pem wrong-host.pem client.pem
quiet openssl verify -CAfile ca.pem -verify_hostname localhost server.pem
quiet openssl verify -CAfile ca.pem -verify_ip 127.0.0.1 server.pem
if openssl verify -CAfile ca.pem expired.pem >/dev/null 2>&1; then
    echo "make_certs: FAILED: expired.pem verifies as valid" >&2; exit 1
fi
if openssl verify -CAfile ca.pem -verify_hostname localhost wrong-host.pem >/dev/null 2>&1; then
    echo "make_certs: FAILED: wrong-host.pem verifies for localhost" >&2; exit 1
fi
echo "make_certs: OK $DIR"
