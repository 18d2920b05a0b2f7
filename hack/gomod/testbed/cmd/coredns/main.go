// Command coredns is CoreDNS with only the plugins the test bed's Corefile uses
// (hack/testbed/manifests/10-coredns.yaml), the way CoreDNS documents custom builds: import the plugins
// and list them, in the order they run, as the server's directives. Upstream's own main compiles in every
// plugin, cloud DNS providers with their SDKs included, which the test bed never runs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The same relative order as upstream's core/dnsserver/zdirectives.go (plugin.cfg): the order plugins
// handle a query in, whatever their order in the Corefile.
func init() {
	dnsserver.Directives = []string{
		"reload", "ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes", "loop", "forward",
	}
}

func main() { coremain.Run() }
