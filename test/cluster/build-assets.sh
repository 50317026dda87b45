#!/usr/bin/env bash
# Builds the test cluster's binaries, kube-apiserver and etcd, with Go from the
# module proxy, pinned, into a cache folder outside the repository keyed by
# both versions. Prints that folder. Does nothing when both binaries are there;
# with --dir, only prints the folder.
# (Debian's etcd-server is 3.4: kube-apiserver 1.34's watch cache needs 3.5.13+.)
set -euo pipefail
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
STAGING_VERSION=v0${KUBE_VERSION#v1}   # k8s.io staging modules: v1.34.4 -> v0.34.4
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/spore/kube-assets/kube-apiserver-${KUBE_VERSION}_etcd-${ETCD_VERSION}

[ "${1:-}" = --dir ] && { echo "$DIR"; exit 0; } # where the binaries are (or would be): build nothing
if [ -x "$DIR/kube-apiserver" ] && [ -x "$DIR/etcd" ]; then echo "$DIR"; exit 0; fi
command -v go >/dev/null || { echo "build-assets: Go is needed to build kube-apiserver and etcd (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
mkdir -p "$DIR"
work=$(mktemp -d)
# two builds at once (two test runs) each write their own file; mv is atomic
trap 'rm -rf "$work" "$DIR"/*.tmp.$$' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

if [ ! -x "$DIR/etcd" ]; then
  # etcd's main package is the server module's root (server/main.go)
  mkdir "$work/etcd"
  (cd "$work/etcd" && go mod init spore.test/etcd-build >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 &&
    go build -o "$DIR/etcd.tmp.$$" go.etcd.io/etcd/server/v3 >&2)
  mv "$DIR/etcd.tmp.$$" "$DIR/etcd"
fi

if [ ! -x "$DIR/kube-apiserver" ]; then
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
  # ./staging paths that only work inside its own tree; pin each to its release.
  mkdir "$work/kube"
  go mod download "k8s.io/kubernetes@$KUBE_VERSION" >&2
  kmod=$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/go.mod
  {
    echo "module spore.test/kube-apiserver-build"
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" |
      awk -v v="$STAGING_VERSION" '{ print "replace " $1 " => " $1 " " v }'
  } > "$work/kube/go.mod"
  v=${KUBE_VERSION#v}
  ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=${v%%.*} -X k8s.io/component-base/version.gitMinor=$(echo "$v" | cut -d. -f2)"
  (cd "$work/kube" && go build -ldflags "$ldflags" -o "$DIR/kube-apiserver.tmp.$$" k8s.io/kubernetes/cmd/kube-apiserver >&2)
  mv "$DIR/kube-apiserver.tmp.$$" "$DIR/kube-apiserver"
fi
echo "$DIR"
