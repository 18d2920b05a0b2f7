// Command testbed-cri is a small CRI client for the local test bed (Debian has no crictl and the module
// proxy does not serve cri-tools). It talks to containerd's CRI service the way the kubelet does, so
// that removing a pod sandbox also runs the CNI DEL that frees its address and network namespace.
//
//	testbed-cri -endpoint unix:///path/containerd.sock ps      list pod sandboxes and containers
//	testbed-cri -endpoint unix:///path/containerd.sock clean   stop and remove every pod sandbox
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "unix:///run/containerd/containerd.sock", "CRI endpoint")
	timeout := flag.Duration("timeout", 2*time.Minute, "overall timeout")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: testbed-cri [-endpoint unix:///…] ps|clean")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(*endpoint, "unix://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	rt := runtime.NewRuntimeServiceClient(conn)
	switch flag.Arg(0) {
	case "ps":
		err = ps(ctx, rt)
	case "clean":
		err = clean(ctx, rt)
	default:
		err = fmt.Errorf("unknown command %q", flag.Arg(0))
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "testbed-cri:", err)
	os.Exit(1)
}

func ps(ctx context.Context, rt runtime.RuntimeServiceClient) error {
	pods, err := rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		fmt.Printf("pod %s %s/%s %s\n", p.Id[:12], p.Metadata.Namespace, p.Metadata.Name, p.State)
	}
	cs, err := rt.ListContainers(ctx, &runtime.ListContainersRequest{})
	if err != nil {
		return err
	}
	for _, c := range cs.Containers {
		fmt.Printf("container %s pod=%s %s %s %s\n", c.Id[:12], c.PodSandboxId[:12], c.Metadata.Name, c.Image.Image, c.State)
	}
	return nil
}

func clean(ctx context.Context, rt runtime.RuntimeServiceClient) error {
	pods, err := rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []string
	for _, p := range pods.Items {
		name := p.Metadata.Namespace + "/" + p.Metadata.Name
		if _, err := rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("stop %s: %v", name, err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", name, err))
			continue
		}
		fmt.Printf("removed pod %s\n", name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
