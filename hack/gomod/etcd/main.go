// Command etcd is etcd's own server entry point, built from the Go module proxy.
// go.etcd.io/etcd/server/v3 cannot be `go install`ed directly because its go.mod has replace
// directives; as a dependency of this module those are ignored and the published modules are used.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
