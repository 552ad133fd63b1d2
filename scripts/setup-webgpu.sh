#!/usr/bin/env bash
# Makes sure this checkout can run WebGPU: node_modules present, and Dawn finds an adapter.
# Without a GPU that means Mesa's lavapipe. Dawn refuses Debian 12's Mesa 22 ("Vulkan shaderUniform*ArrayDynamicIndexing
# required"), so on Debian 12 it comes from bookworm-backports (Mesa 25).
# Idempotent; when all is well it costs one adapter probe (well under a second).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "setup-webgpu: $*"; }
fail() { echo "setup-webgpu: $*" >&2; exit 1; }

# The Debian mirror this system already uses for bookworm (one-line .list or deb822 .sources entries), so the
# backports line points where the system can reach (a local or proxied mirror), deb.debian.org if none is found.
# STRATA_APT_ROOT replaces /etc/apt (tests).
debian_mirror() {
  local root="${STRATA_APT_ROOT:-/etc/apt}" found=""
  local lists=() sources=()
  [ -f "$root/sources.list" ] && lists+=("$root/sources.list")
  for f in "$root"/sources.list.d/*.list; do [ -f "$f" ] && lists+=("$f"); done
  for f in "$root"/sources.list.d/*.sources; do [ -f "$f" ] && sources+=("$f"); done
  if [ ${#lists[@]} -gt 0 ]; then
    # deb [options] URI SUITE COMPONENTS...: the URI of the first plain "bookworm" suite
    found="$(awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == "bookworm") { print $i; exit } }' "${lists[@]}")"
  fi
  if [ -z "$found" ] && [ ${#sources[@]} -gt 0 ]; then
    # deb822 stanzas separated by blank lines: URIs of the first stanza whose Suites include bookworm
    found="$(awk 'BEGIN { RS = ""; FS = "\n" } {
        uris = ""; suites = ""; types = ""
        for (n = 1; n <= NF; n++) {
          if ($n ~ /^URIs:/) { uris = $n; sub(/^URIs:[ \t]*/, "", uris) }
          if ($n ~ /^Suites:/) { suites = " " $n " "; sub(/^ Suites:/, " ", suites) }
          if ($n ~ /^Types:/) types = $n
        }
        if (types ~ /deb( |$)/ && suites ~ /[ \t]bookworm[ \t]/) { split(uris, list, /[ \t]+/); print list[1]; exit }
      }' "${sources[@]}")"
  fi
  echo "${found:-http://deb.debian.org/debian}"
}

if [ "${1:-}" = --print-debian-mirror ]; then
  debian_mirror
  exit 0
fi

# 1. Dependencies. npm 11 skips install scripts by default; webgpu's postinstall only matters on macOS.
if [ ! -f node_modules/webgpu/package.json ] || [ ! -f node_modules/vitest/package.json ]; then
  if [ -f package-lock.json ]; then
    say "node_modules missing or incomplete: npm ci"
    npm ci --no-audit --no-fund
  else
    say "node_modules missing or incomplete: npm install"
    npm install --no-audit --no-fund
  fi
fi

# 2. Chromium for the browser tests (test/e2e/browser.test.ts): Debian's package, driven by playwright-core, which
# downloads no browser. Installed like lavapipe: as root on Debian/Ubuntu; elsewhere the test names what is missing.
chromium_path="${STRATA_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium_path" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing Debian's chromium for the browser tests"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
    fail "apt-get install chromium failed (see apt's message above)"
fi

# 3. Adapter. Dawn's own warnings go to stderr; show them only when the probe fails.
probe_log="$(mktemp)"
trap 'rm -f "$probe_log"' EXIT
probe() { node scripts/probe-adapter.mjs 2>"$probe_log"; }

if info="$(probe)"; then
  say "adapter ok: $info"
  exit 0
fi

os_id=""; os_like=""; os_codename=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  os_id="${ID:-}"; os_like="${ID_LIKE:-}"; os_codename="${VERSION_CODENAME:-}"
fi
is_debian_family=false
case " $os_id $os_like " in *" debian "*|*" ubuntu "*) is_debian_family=true ;; esac

if [ "$(uname -s)" != Linux ] || ! $is_debian_family || [ "$(id -u)" != 0 ]; then
  cat "$probe_log" >&2
  fail "Dawn found no WebGPU adapter. Fix: install a Vulkan driver for the GPU, or Mesa's lavapipe (package mesa-vulkan-drivers; Dawn refuses Mesa 22, Mesa 25 works; on Debian 12 take it from bookworm-backports). This script installs it only as root on Debian/Ubuntu (here: ${os_id:-unknown OS}, uid $(id -u))."
fi

export DEBIAN_FRONTEND=noninteractive
if [ "$os_id" = debian ] && [ "$os_codename" = bookworm ]; then
  backports=/etc/apt/sources.list.d/strata-backports.list
  if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror="$(debian_mirror)"
    say "adding bookworm-backports from $mirror ($backports)"
    echo "deb $mirror bookworm-backports main" >"$backports"
  fi
  say "installing Mesa's lavapipe from bookworm-backports (Dawn refuses Debian 12's Mesa 22)"
  apt-get update -qq || fail "apt-get update failed; are the mirrors in /etc/apt/sources.list* reachable?"
  apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null ||
    fail "apt-get install -t bookworm-backports mesa-vulkan-drivers failed (see apt's message above)"
else
  say "installing Mesa's lavapipe (mesa-vulkan-drivers)"
  apt-get update -qq || fail "apt-get update failed; are the distribution's repositories reachable?"
  apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null ||
    fail "apt-get install mesa-vulkan-drivers failed (see apt's message above)"
fi

if info="$(probe)"; then
  say "adapter ok: $info"
  exit 0
fi
cat "$probe_log" >&2
mesa_version="$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo none)"
fail "still no WebGPU adapter after installing mesa-vulkan-drivers (version $mesa_version; Dawn refuses Mesa 22, Mesa 25 works). The Vulkan loader's messages are above; for more run: VK_LOADER_DEBUG=error,warn node scripts/probe-adapter.mjs"
