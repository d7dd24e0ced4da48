#!/usr/bin/env bash
# make lint: gofmt, go vet, and golangci-lint (depguard for the package
# layering, errorlint, staticcheck, nolintlint: .golangci.yml), installed
# from the Go module proxy at a pinned version when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v2.15.0
bin="$(go env GOPATH)/bin/golangci-lint"
if ! "$bin" version 2>/dev/null | grep -q "${version#v}"; then
	echo "lint: installing golangci-lint $version (once)"
	GOFLAGS=-mod=mod go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$version"
fi
out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$out" ]; then
	echo "gofmt would change:" $out >&2
	exit 1
fi
go vet ./...
# Several checkouts on one machine lint at once (worktrees): golangci-lint
# would refuse a second run instead of waiting for the first.
"$bin" run --allow-parallel-runners ./...
