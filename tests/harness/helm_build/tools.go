//go:build tools

// Package tools pins Helm, built by the node harness for `helm lint/template/install`.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
