#!/usr/bin/env bash
# Makes a throwaway PKI for tests and the demo: see README.md beside this file for the identities.
# usage: gen-certs.sh OUTDIR
set -euo pipefail
out=${1:?usage: gen-certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"

days=2
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

ca() {  # name subject
  openssl req -x509 "${ec[@]}" -keyout "$1.key" -out "$1.crt" -days $days -subj "$2" \
    -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
}

leaf() {  # name issuer subject san extendedKeyUsage
  openssl req -new "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
  printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$5" "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days $days \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=atls test CA"
ca rogue-ca "/CN=atls rogue CA"
leaf server ca "/CN=server.test" "DNS:server.test,DNS:localhost,IP:127.0.0.1" serverAuth
leaf client ca "/CN=client.test" \
  "DNS:client.test,URI:spiffe://test.example/ns/default/sa/client" clientAuth
leaf intruder ca "/CN=intruder.test" \
  "DNS:intruder.test,URI:spiffe://test.example/ns/other/sa/intruder" clientAuth
leaf rogue-client rogue-ca "/CN=client.test" \
  "DNS:client.test,URI:spiffe://test.example/ns/default/sa/client" clientAuth
rm -f ./*.srl
chmod 600 ./*.key
