#!/usr/bin/env bash
# Make a development CA and certificates for the NATS servers with openssl.
#
#   ops/tls/make-dev-certs.sh [--owner USER] [--client-owner USER] OUT_DIR [SERVER_NAME ...]
#
# Writes into OUT_DIR (created, mode 0755 so the service users can reach their files):
#   ca.pem, ca-key.pem            the dev CA (ca.pem 0644, shipped to every node as `tls_ca`;
#                                 ca-key.pem 0600, keep it off the servers)
#   server.pem, server-key.pem    one certificate for every NATS server, valid for the given
#                                 names (default nats-a/b/c.rr.internal) plus localhost and
#                                 127.0.0.1; serverAuth and clientAuth, because cluster routes
#                                 verify each other with it
#   client.pem, client-key.pem    a client certificate, for servers set to `verify: true`
#
# Private keys are 0600. --owner gives server.pem and server-key.pem to the user the NATS server
# runs as (the rr-nats unit: `nats`), --client-owner gives client.pem and client-key.pem to the
# rr services' user (`rr`); without them the keys stay the caller's, and the script says so
# (`nats-server -t` running as `nats` would fail with "permission denied").
#
# For production use certificates from your own CA (or ACME) with the same file names.
# Existing files are never overwritten: delete OUT_DIR to make new ones.
set -euo pipefail

usage="usage: $0 [--owner USER] [--client-owner USER] OUT_DIR [SERVER_NAME ...]"
owner="" client_owner=""
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --owner) owner=${2:?$usage}; shift 2 ;;
        --client-owner) client_owner=${2:?$usage}; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
if [[ $# -lt 1 ]]; then
    echo "$usage" >&2
    exit 2
fi
for user in $owner $client_owner; do
    if ! id -u "$user" >/dev/null 2>&1; then
        echo "no user $user on this machine (create it first: useradd -r $user)" >&2
        exit 2
    fi
done
out=$1
shift
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
    names=(nats-a.rr.internal nats-b.rr.internal nats-c.rr.internal)
fi
if [[ -e "$out/ca.pem" ]]; then
    echo "$out/ca.pem exists; refusing to overwrite (delete $out to start over)" >&2
    exit 1
fi

umask 077
mkdir -p "$out"
chmod 0755 "$out"
cd "$out"

days=825  # the longest validity clients accept for leaf certificates
curve=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${curve[@]}" -days 3650 -subj "/CN=rr dev CA" \
    -keyout ca-key.pem -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "${names[@]}"; do
    if [[ $name =~ ^[0-9.]+$ ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done

leaf() {  # leaf NAME CN USAGE: a key and a certificate signed by the dev CA
    local file=$1 cn=$2 usage=$3 ext
    ext=$(mktemp)
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid,issuer"
        [[ $usage == *serverAuth* ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl req "${curve[@]}" -subj "/CN=$cn" -keyout "$file-key.pem" -out "$file.csr" 2>/dev/null
    openssl x509 -req -in "$file.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days "$days" -extfile "$ext" -out "$file.pem" 2>/dev/null
    rm -f "$file.csr" "$ext"
}

leaf server "${names[0]}" "serverAuth,clientAuth"
leaf client "rr-client" "clientAuth"
rm -f ca.srl
chmod 0644 ca.pem server.pem client.pem
chmod 0600 ca-key.pem server-key.pem client-key.pem
[[ -n $owner ]] && chown "$owner" server.pem server-key.pem
[[ -n $client_owner ]] && chown "$client_owner" client.pem client-key.pem

echo "dev CA and certificates in $out (server names: ${names[*]}, localhost, 127.0.0.1)"
if [[ -z $owner ]]; then
    echo "server-key.pem is readable by $(id -un) only: chown it to the NATS server's user (or rerun with --owner nats)"
fi
echo "ship ca.pem to every node (rr auth gen --tls-ca puts its path in each credentials file as tls_ca)"
