#!/usr/bin/env bash
# Schema-driven fuzzing of the OpenAPI document against a real server: Schemathesis 4
# (schemathesis.toml says what it checks) runs every operation of /openapi.json against
# `idbridge serve --dev`, authenticated as a user (a Bearer token of the dev provider) and as a
# service client (dev-service, HTTP Basic), with a fixed seed and a bounded number of cases.
# Any mismatch between the document and an answer, or any 5xx, fails it.
#   scripts/api-fuzz.sh [SEED]        (API_FUZZ_EXAMPLES=N: N cases an operation, default 25)
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-20261203}"
venv="${IDBRIDGE_FUZZ_VENV:-$HOME/.cache/idbridge/schemathesis-4.32.5}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi
cargo build --locked -q --bin idbridge
work="$(mktemp -d)"
port=18493
base="http://127.0.0.1:$port"
(cd "$work" && IDBRIDGE__SERVER__BIND="127.0.0.1:$port" IDBRIDGE__SERVER__PUBLIC_URL="$base" \
  exec "$OLDPWD/target/debug/idbridge" serve --dev >"$work/server.log" 2>&1) &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
curl -fsS "$base/openapi.json" >"$work/openapi.json"
"$venv/bin/python" - "$work/openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import validate
validate(json.load(open(sys.argv[1])))
print("openapi.json: valid OpenAPI 3.1")
PY

# A fresh user and a Bearer token for them.
user_token() {
  local id_token
  id_token=$(curl -fsS -X POST "$base/dev/id-token" -d "name=$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id_token"])')
  curl -fsS -X POST "$base/oauth/token" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    -d subject_token_type=urn:ietf:params:oauth:token-type:id_token -d client_id=dev-app \
    --data-urlencode "subject_token=$id_token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
st() {
  local config=$1
  shift
  # Run from the scratch directory: Schemathesis keeps a cache where it runs.
  (cd "$work" && "$venv/bin/schemathesis" --config-file "$config" run "$work/openapi.json" --url "$base" --seed "$seed" \
    --max-examples "${API_FUZZ_EXAMPLES:-25}" --no-color "$@")
}

# As a user. Signing out everywhere and deleting the user end the token, so they run last.
st "$PWD/schemathesis.toml" -H "Authorization: Bearer $(user_token fuzz-user)" \
  --exclude-operation-id post_v1_me_logout_all --exclude-operation-id delete_v1_me
st "$PWD/schemathesis.toml" -H "Authorization: Bearer $(user_token fuzz-user-2)" --include-operation-id post_v1_me_logout_all
st "$PWD/schemathesis.toml" -H "Authorization: Bearer $(user_token fuzz-user-3)" --include-operation-id delete_v1_me
# As a service client: /v1/crypto for users it names, revocation and introspection. Two rules
# the document states in words, as OpenAPI cannot tie a body to the security scheme used: a
# service must name the user (`user_id`, 400 without it, as API.md says), and a client using
# HTTP Basic must not also send `client_secret` or another `client_id` in the form (400
# `invalid_request`, RFC 6749 §2.3).
cp schemathesis.toml "$work/service.toml"
cat >>"$work/service.toml" <<'TOML'

[[operations]]
include-name = ["POST /v1/crypto/encrypt", "POST /v1/crypto/rotate", "POST /oauth/revoke", "POST /oauth/introspect"]
checks.negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
TOML
st "$work/service.toml" --auth dev-service:dev-secret \
  --include-path-regex '^/(v1/crypto/|oauth/(revoke|introspect|token)$)'
echo "api-fuzz: no mismatch and no server error (seed $seed)"
