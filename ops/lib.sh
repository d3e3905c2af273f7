# Sourced by the ops/ scripts: one place that knows where the venv lives and how to fill it.
set -euo pipefail
FANO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FANO_VENV:-$FANO_ROOT/.venv}"
PY="$VENV/bin/python"

say() { printf '==> %s\n' "$*"; }

# ensure_venv EXTRAS: create the venv if missing and install the project (editable) with EXTRAS.
# Idempotent: pip is only run when pyproject.toml changed since the last successful install.
ensure_venv() {
  local extras="${1:-}" stamp want
  if [ ! -x "$PY" ]; then
    say "creating virtualenv in $VENV"
    python3 -m venv "$VENV"
  fi
  want="$(sha256sum "$FANO_ROOT/pyproject.toml" | cut -c1-16)-${extras}"
  stamp="$VENV/.fano-installed"
  if [ -f "$stamp" ] && grep -qx -- "$want" "$stamp"; then
    say "virtualenv up to date ($VENV)"
    return
  fi
  say "installing fano${extras:+[$extras]} into $VENV (log: $VENV/pip.log)"
  if ! { "$PY" -m pip install --disable-pip-version-check --upgrade pip \
      && "$PY" -m pip install --disable-pip-version-check -e "$FANO_ROOT${extras:+[$extras]}"; } \
      >"$VENV/pip.log" 2>&1; then
    tail -n 30 "$VENV/pip.log" >&2
    echo "pip install failed; full log in $VENV/pip.log" >&2
    exit 1
  fi
  "$PY" -c "import zmq, lmdb, msgpack, click, supervisor" || { echo "install failed" >&2; exit 1; }
  printf '%s\n' "$want" > "$stamp"
}

# ensure_chromium: the browser backends (chatgpt, gemini) drive Debian's `chromium` through Playwright
# (`playwright install` cannot download here). Installs the apt package when missing and we may
# (root, or passwordless sudo); otherwise says how, and the browser tests report it.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    say "chromium present ($(command -v chromium))"
    return
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      say "chromium missing and not root: install it with 'apt-get install chromium' for the browser tests"
      return
    fi
  fi
  say "installing chromium with apt-get (log: $VENV/apt.log)"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } \
      >"$VENV/apt.log" 2>&1; then
    tail -n 20 "$VENV/apt.log" >&2
    echo "apt-get install chromium failed; full log in $VENV/apt.log" >&2
    exit 1
  fi
}
