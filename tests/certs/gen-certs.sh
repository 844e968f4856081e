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

signed_by() {  # name issuer subject extensions
  openssl req -new "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
  printf '%s' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days $days \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

leaf() {  # name issuer subject san extendedKeyUsage
  signed_by "$1" "$2" "$3" "$(printf '%s\n' basicConstraints=critical,CA:false \
    keyUsage=critical,digitalSignature "extendedKeyUsage=$5" "subjectAltName=$4")"
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
signed_by intermediate-ca ca "/CN=atls test intermediate CA" \
  "$(printf '%s\n' basicConstraints=critical,CA:true,pathlen:0 keyUsage=critical,keyCertSign,cRLSign)"
leaf chained-server intermediate-ca "/CN=server.test" "DNS:server.test" serverAuth
cat chained-server.crt intermediate-ca.crt >chained-server-chain.crt
rm -f ./*.srl
chmod 600 ./*.key
