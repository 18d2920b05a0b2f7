//go:build tools

// Package tools records the commands of dependencies this module builds as they are (`go build
// helm.sh/helm/v3/cmd/helm`), so that `go mod tidy` keeps their dependencies in go.sum. Nothing here is
// compiled into a binary.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
