#!/usr/bin/env bash
# Generates the test-only SEV-SNP certificate chain used by tests/snp.rs and the peer tests:
# an RSA "ARK" (self-signed, RSA-PSS/SHA-384 like AMD's), an "ASK" signed by it, and a P-384
# "VCEK" signed by the ASK. The VCEK private key is kept (PKCS#8 DER) so tests can sign
# attestation reports. These keys protect nothing; never trust this chain outside tests.
# Run from this directory: ./gen-test-snp-chain.sh
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pss=(-sha384 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48 -sigopt rsa_mgf1_md:sha384)
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$tmp/ca.ext"
printf 'basicConstraints=critical,CA:FALSE\n' >"$tmp/leaf.ext"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/ark.key" 2>/dev/null
openssl req -x509 -new -key "$tmp/ark.key" -subj "/CN=DataWarehouse TEST ARK" -days 36500 "${pss[@]}" \
    -addext basicConstraints=critical,CA:TRUE -out test-ark.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/ask.key" 2>/dev/null
openssl req -new -key "$tmp/ask.key" -subj "/CN=DataWarehouse TEST ASK" -out "$tmp/ask.csr"
openssl x509 -req -in "$tmp/ask.csr" -CA test-ark.pem -CAkey "$tmp/ark.key" -set_serial 2 -days 36500 \
    "${pss[@]}" -extfile "$tmp/ca.ext" -out test-ask.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/vcek.key" 2>/dev/null
openssl req -new -key "$tmp/vcek.key" -subj "/CN=DataWarehouse TEST VCEK" -out "$tmp/vcek.csr"
openssl x509 -req -in "$tmp/vcek.csr" -CA test-ask.pem -CAkey "$tmp/ask.key" -set_serial 3 -days 36500 \
    "${pss[@]}" -extfile "$tmp/leaf.ext" -outform DER -out test-vcek.der 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$tmp/vcek.key" -outform DER -out test-vcek-key.pk8
echo "generated test-ark.pem test-ask.pem test-vcek.der test-vcek-key.pk8"
