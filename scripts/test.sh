#!/usr/bin/env bash
# The test command: every test, on SQLite and on PostgreSQL (each test makes and drops its own database).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo test --locked "$@"
