# Sourced by .ci/run (and usable by hand: `source .ci/node.sh; use_node 24`).
# Provisions an official Node.js build from the npm registry — the `node-linux-<arch>` package carries the
# release's binary and its headers (include/node) — because this machine and CI come with Node 20 (end of
# life) and only the npm registry and Debian's apt repositories are reachable. Native addons
# (better-sqlite3) must build against the headers of the Node that runs them, and the machine's npm config
# points `nodedir` at Node 20's, so `use_node` also exports npm_config_nodedir.

# The exact releases CI runs; bump them here.
NODE_24_VERSION=24.22.3
NODE_26_VERSION=26.12.1

node_cache_dir() {
  echo "${EDGE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-coordinator}"
}

# install_node VERSION -> prints the folder (with bin/node and include/node) after making sure it exists.
install_node() {
  local version="$1" arch
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "no node-linux package for $(uname -m)" >&2; return 1 ;;
  esac
  local dir
  dir="$(node_cache_dir)/node-v${version}-linux-${arch}"
  if [ ! -x "$dir/bin/node" ] || [ "$("$dir/bin/node" --version)" != "v${version}" ]; then
    local tmp
    tmp="$(mktemp -d)"
    # `npm pack` only downloads the tarball: no install scripts run.
    (cd "$tmp" && npm pack --silent "node-linux-${arch}@${version}" >/dev/null)
    rm -rf "$dir.partial" && mkdir -p "$dir.partial"
    tar xzf "$tmp"/node-linux-"${arch}"-"${version}".tgz -C "$dir.partial" --strip-components=1
    rm -rf "$tmp" "$dir"
    mv "$dir.partial" "$dir"
  fi
  echo "$dir"
}

# use_node 24|26 -> puts that Node first on PATH and points native builds at its headers.
use_node() {
  local version
  case "$1" in
    24) version="$NODE_24_VERSION" ;;
    26) version="$NODE_26_VERSION" ;;
    *) version="$1" ;;
  esac
  local dir
  dir="$(install_node "$version")" || return 1
  export PATH="$dir/bin:$PATH"
  export npm_config_nodedir="$dir"
  hash -r
}
