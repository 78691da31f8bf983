#!/usr/bin/env bash
# Prepares what the test suite needs beyond the Python virtualenv:
#   * node_modules of the in-memory FHIR server used by tests/integration (npm ci, from package-lock.json)
#   * node_modules of the SMART timeline app (app/), and its build (app/dist, served at /app/)
#   * Debian's chromium for the browser tests (installed only when missing and we are root)
#   * Debian's postgresql (a throwaway cluster per test session: tests/pg.py) and haproxy (two
#     service instances behind it: tests/production), installed the same way
# Idempotent: when everything is in place it only checks and exits (well under a second).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fhir_dir="$repo_root/tests/integration/fhir_server"

log() { printf 'setup-test-env: %s\n' "$*"; }
warn() { printf 'setup-test-env: WARNING: %s\n' "$*" >&2; }
die() { printf 'setup-test-env: ERROR: %s\n' "$*" >&2; exit 1; }

# --- Node.js + the FHIR test server's packages ------------------------------------------
command -v node >/dev/null 2>&1 || die "node (Node.js >= 20) is not on PATH; the integration tests' FHIR server needs it (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is not on PATH; it is needed to install the FHIR test server's packages"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is required, found $(node --version)"

lock="$fhir_dir/package-lock.json"
stamp="$fhir_dir/node_modules/.package-lock.json" # written by npm on every install
[ -f "$lock" ] || die "missing $lock"
if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ] || [ "$fhir_dir/package.json" -nt "$stamp" ]; then
  log "installing FHIR test server packages (npm ci) in tests/integration/fhir_server"
  # engine warnings are expected: medplum declares node >= 22 but runs on 20 with --experimental-websocket
  (cd "$fhir_dir" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$stamp"
fi

# --- The SMART timeline app: npm ci + esbuild bundle (same as `make app`) -------------------
app_dir="$repo_root/app"
app_stamp="$app_dir/node_modules/.package-lock.json"
if [ ! -f "$app_stamp" ] || [ "$app_dir/package-lock.json" -nt "$app_stamp" ] \
    || [ "$app_dir/package.json" -nt "$app_stamp" ]; then
  log "installing the SMART app's packages (npm ci) in app/"
  (cd "$app_dir" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$app_stamp"
fi
built="$app_dir/dist/timeline.js"
if [ ! -f "$built" ] || [ -n "$(find "$app_dir/src" "$app_dir/public" "$app_dir/build.mjs" "$app_stamp" -newer "$built" -print -quit)" ]; then
  log "building the SMART app (npm run build) into app/dist"
  (cd "$app_dir" && npm run --silent build >/dev/null)
fi

# --- Chromium for browser tests ----------------------------------------------------------
if command -v chromium >/dev/null 2>&1; then
  :
elif [ "$(id -u)" -eq 0 ]; then
  log "chromium not found: installing Debian package chromium (apt-get)"
  apt_log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install chromium failed"
  fi
  rm -f "$apt_log"
else
  warn "chromium is not installed and we are not root; browser tests will not run (install Debian package 'chromium')"
fi

# --- Debian packages the production tests start themselves -------------------------------
# postgresql: a throwaway cluster (initdb/pg_ctl) for the storage tests on a real server;
# haproxy: the load balancer in front of two service instances (tests/production).
apt_install() {
  local package="$1"
  if [ "$(id -u)" -ne 0 ]; then
    die "Debian package '$package' is missing and we are not root: install it (apt-get install $package)"
  fi
  log "installing Debian package $package (apt-get)"
  local apt_log
  apt_log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package"; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install $package failed"
  fi
  rm -f "$apt_log"
}

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  apt_install postgresql
fi
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  apt_install haproxy
fi
