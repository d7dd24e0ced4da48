//go:build !linux

package suite

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
