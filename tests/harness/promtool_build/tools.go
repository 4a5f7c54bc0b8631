//go:build tools

// Package tools pins promtool, built by the harness to check and unit-test the alert rules.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
