#!/usr/bin/env bash
# kvio serve from the shell: a store's description, one key, a batch get and a scan.
#
#   examples/clients/curl.sh URL STORE KEY [KEY...]
#   KVIO_TOKEN=...  the bearer token, if the server runs with --token-file
#
# Keys are arbitrary bytes: in URLs every byte is percent-encoded (pct below escapes them all,
# which is always valid); in the JSON batch body they travel as base64.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 URL STORE KEY [KEY...]" >&2
  exit 2
fi
url=$1 store=$2
shift 2
auth=()
if [ -n "${KVIO_TOKEN:-}" ]; then
  auth=(-H "Authorization: Bearer $KVIO_TOKEN")
fi

pct() {  # percent-encode every byte of $1
  printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g'
}

echo "== store"
curl -sS --fail-with-body "${auth[@]}" "$url/v1/stores/$store"
echo

echo "== get $1"
# The value as raw bytes (404 with a JSON error when the key is absent; -i shows the status
# and the Kvio-Version header)
curl -sS -i "${auth[@]}" "$url/v1/stores/$store/keys/$(pct "$1")"
echo

echo "== batch get"
keys=""
for key in "$@"; do
  keys="$keys${keys:+,}\"$(printf '%s' "$key" | base64 | tr -d '\n')\""
done
curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' \
  --data-binary "{\"keys\": [$keys], \"encoding\": \"base64\"}" "$url/v1/stores/$store/get"
echo

echo "== scan from $1, at most 3 pairs"
curl -sS --fail-with-body "${auth[@]}" "$url/v1/stores/$store/scan?start=$(pct "$1")&limit=3"
