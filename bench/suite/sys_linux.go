package suite

import "syscall"

// sysProcAttr makes a child get SIGTERM when the benchmark dies.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} }
