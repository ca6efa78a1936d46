#!/usr/bin/env bash
# Property-based API tests: schemathesis against openapi.yaml and a live `countersign up` (the
# real spin.toml and config/, fresh secrets, a fresh state dir, a free local port). Fails on any
# 5xx, any answer whose status, content type, headers or body the API description does not allow.
#
#   scripts/schemathesis.sh            # or: make schemathesis
#
# Settings (environment): COUNTERSIGN_BIN (default target/release/countersign),
# SCHEMATHESIS_EXAMPLES (test cases per operation and phase, default 50), SCHEMATHESIS_SEED
# (default: random; the run prints the seed it used), SCHEMATHESIS_ARGS (more `schemathesis run`
# options, e.g. `--report junit`). The tokens are the public demo tokens of config/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${COUNTERSIGN_BIN:-target/release/countersign}
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-50}

if [ ! -x "$BIN" ]; then
    echo "schemathesis.sh: $BIN not found: build it first (make build)" >&2
    exit 1
fi
if ! command -v schemathesis >/dev/null 2>&1; then
    echo "schemathesis.sh: schemathesis not found: pip install schemathesis (or make schemathesis)" >&2
    exit 1
fi

tmp=$(mktemp -d)
host_pid=
cleanup() {
    if [ -n "$host_pid" ]; then
        kill "$host_pid" 2>/dev/null || true
        wait "$host_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `name: value` line of the CLI's output.
field() { awk -v k="$1:" '$1 == k { print $2; exit }'; }

signing_key=$("$BIN" keys generate | field signing_key)
admin=$("$BIN" token new)
admin_token=$(printf '%s\n' "$admin" | field token)
admin_hash=$(printf '%s\n' "$admin" | field token_sha256)
webhook_key=$("$BIN" token new | field token)

# A free port: bound by the kernel's choice, then released for the host.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

# The compile cache outlives the run (target/ is not committed), so only the first run pays for
# compiling the components.
SPIN_VARIABLE_SIGNING_KEY=$signing_key \
SPIN_VARIABLE_ADMIN_TOKEN_SHA256=$admin_hash \
SPIN_VARIABLE_WEBHOOK_KEY=$webhook_key \
SPIN_VARIABLE_PUBLIC_URL=$url \
COUNTERSIGN_CACHE_DIR=${COUNTERSIGN_CACHE_DIR:-$PWD/target/countersign-cache} \
    "$BIN" up -f spin.toml --listen "127.0.0.1:$port" --state-dir "$tmp/state" \
    >"$tmp/host.log" 2>&1 &
host_pid=$!

# Ready means an HTTP answer (the host may bind before the app is compiled).
ready=
for _ in $(seq 1 600); do
    if ! kill -0 "$host_pid" 2>/dev/null; then
        echo "schemathesis.sh: countersign up exited during start-up:" >&2
        cat "$tmp/host.log" >&2
        exit 1
    fi
    if curl -fsS -o /dev/null "$url/v1/keys" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "schemathesis.sh: countersign up did not answer on $url within 120 s:" >&2
    cat "$tmp/host.log" >&2
    exit 1
fi

# Each security scheme of openapi.yaml gets its token: agent etl-bot, approver bob, the admin.
cat >"$tmp/schemathesis.toml" <<TOML
# No state in the working tree (.schemathesis/): failures are printed with a curl line each.
[cache]
enabled = false

[auth.openapi.agentToken]
bearer = "demo-etl-bot-token"

[auth.openapi.approverToken]
bearer = "demo-bob-token"

[auth.openapi.adminToken]
bearer = "$admin_token"

# ?wait=<seconds> holds a pending request's answer up to 30 s: 1 still takes that path.
[[operations]]
include-operation-id = "getAction"
parameters = { "query.wait" = 1 }
TOML

# Every check except the two that judge whether generated input should have been accepted
# (positive_data_acceptance, negative_data_rejection): they cannot know the directory
# (callback_url prefixes), limits in bytes rather than characters, or that HTTP strips spaces
# around header values.
checks=not_a_server_error,status_code_conformance,content_type_conformance
checks=$checks,response_headers_conformance,response_schema_conformance,missing_required_header
checks=$checks,unsupported_method,allow_header_conformance,use_after_free
checks=$checks,ensure_resource_availability,ignored_auth,object_level_authorization
seed_args=()
if [ -n "${SCHEMATHESIS_SEED:-}" ]; then
    seed_args=(--seed "$SCHEMATHESIS_SEED")
fi

status=0
# shellcheck disable=SC2086
schemathesis --config-file "$tmp/schemathesis.toml" run openapi.yaml \
    --url "$url" \
    --checks "$checks" \
    --max-examples "$EXAMPLES" \
    --workers 2 \
    --max-response-time 10 \
    --request-timeout 40 \
    --generation-database none \
    --no-color \
    "${seed_args[@]}" \
    ${SCHEMATHESIS_ARGS:-} || status=$?

if [ "$status" -ne 0 ]; then
    echo "schemathesis.sh: failures (exit $status); the host's log:" >&2
    tail -n 50 "$tmp/host.log" >&2
fi
exit "$status"
