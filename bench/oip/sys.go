package main

import "runtime"

func numCPU() int       { return runtime.NumCPU() }
func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
