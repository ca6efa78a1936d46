#!/bin/sh
# Local development settings for `make up`: creates .spin/dev.env once (a fresh signing key,
# admin token and webhook key, made with the countersign CLI), then prints the demo tokens and
# curl lines to try the API. .spin/ is gitignored: these secrets never reach the repository.
#
#   scripts/dev-env.sh                  # then: . .spin/dev.env && countersign up
#
# COUNTERSIGN_BIN (default target/release/countersign) and COUNTERSIGN_URL (default
# http://127.0.0.1:3000) may be set.
set -eu

cd "$(dirname "$0")/.."
BIN=${COUNTERSIGN_BIN:-target/release/countersign}
URL=${COUNTERSIGN_URL:-http://127.0.0.1:3000}
ENV_FILE=.spin/dev.env

if [ ! -x "$BIN" ]; then
    echo "dev-env: $BIN not found: build it first (make build)" >&2
    exit 1
fi

# `name: value` line of the CLI's output.
field() { awk -v k="$1:" '$1 == k { print $2; exit }'; }

if [ ! -f "$ENV_FILE" ]; then
    mkdir -p .spin
    signing_key=$("$BIN" keys generate | field signing_key)
    admin=$("$BIN" token new)
    admin_token=$(printf '%s\n' "$admin" | field token)
    admin_hash=$(printf '%s\n' "$admin" | field token_sha256)
    # Any long random string serves as the webhook key; a fresh token is one.
    webhook_key=$("$BIN" token new | field token)
    if [ -z "$signing_key" ] || [ -z "$admin_token" ] || [ -z "$admin_hash" ] || [ -z "$webhook_key" ]; then
        echo "dev-env: could not generate the settings with $BIN" >&2
        exit 1
    fi
    # Created private before the secrets are written into it.
    rm -f "$ENV_FILE.tmp"
    (umask 077 && : > "$ENV_FILE.tmp")
    cat > "$ENV_FILE.tmp" <<ENV
# countersign local development settings, made by scripts/dev-env.sh. Secret: never commit.
# Delete this file to make new ones.
export SPIN_VARIABLE_SIGNING_KEY='$signing_key'
export SPIN_VARIABLE_ADMIN_TOKEN_SHA256='$admin_hash'
export SPIN_VARIABLE_WEBHOOK_KEY='$webhook_key'
# The admin token itself (its hash is above): for /v1/audit, /v1/sweep and audit verify --head.
export COUNTERSIGN_ADMIN_TOKEN='$admin_token'
ENV
    chmod 600 "$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    echo "dev-env: wrote $ENV_FILE (signing key, admin token, webhook key)"
fi
# shellcheck disable=SC1090
. "./$ENV_FILE"

ETL=demo-etl-bot-token
BOB=demo-bob-token
JSON='content-type: application/json'
# The reviewed action's fields: the grant is bound to exactly these.
PII='"action":"db.export","resource":{"type":"Dataset","id":"customers","attributes":{"classification":"pii"}},"on_behalf_of":"user:alice","context":{"env":"prod","rows":120000}'

cat <<EOF_TEXT

countersign demo ($URL). Demo tokens from config/README.md (public: replace them before real use):
  agents:    etl-bot $ETL, deploy-bot demo-deploy-bot-token
  approvers: alice|bob|carol|dave|erin|frank: demo-<name>-token  (dba: alice bob carol; security: bob erin frank; sre: carol dave frank)
  admin:     $COUNTERSIGN_ADMIN_TOKEN   (in $ENV_FILE)
etl-bot's webhook secret (verifies Countersign-Signature on its callbacks):
  . $ENV_FILE && $BIN agent webhook-secret etl-bot

Try it in another shell:

# 1. A routine action (read-only query): 200 with a grant
curl -s $URL/v1/actions -H 'authorization: Bearer $ETL' -H '$JSON' \\
  -d '{"action":"db.query","resource":{"type":"Dataset","id":"orders"}}'

# 2. A sensitive one (PII export, needs one DBA): 202 pending
ID=\$(curl -s $URL/v1/actions -H 'authorization: Bearer $ETL' -H '$JSON' \\
  -d '{$PII,"impact":"Exports 120k customer rows","justification":"Quarterly report"}' | sed -n 's/.*"id":"\\(req_[a-z0-9]*\\)".*/\\1/p'); echo \$ID

# 3. Bob (dba) lists what he may review
curl -s $URL/v1/reviews -H 'authorization: Bearer $BOB'

# 4. Bob approves
curl -s $URL/v1/actions/\$ID/decision -H 'authorization: Bearer $BOB' -H '$JSON' \\
  -d '{"decision":"approve","reason":"ticket DATA-42"}'

# 5. etl-bot fetches its grant
GRANT=\$(curl -s $URL/v1/actions/\$ID -H 'authorization: Bearer $ETL' | sed -n 's/.*"grant":"\\([^"]*\\)".*/\\1/p'); echo \$GRANT

# 6. The executor verifies (and consumes) it for exactly that action: valid once, 409 after
curl -s $URL/v1/grants/verify -H 'authorization: Bearer $ETL' -H '$JSON' \\
  -d '{"grant":"'\$GRANT'",$PII,"consume":true}'

# 7. Export the audit trail and verify it offline
curl -s $URL/v1/audit -H 'authorization: Bearer $COUNTERSIGN_ADMIN_TOKEN' > audit.ndjson
$BIN audit verify audit.ndjson --jwks $URL/v1/keys

EOF_TEXT
