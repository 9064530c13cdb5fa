// Command kstatus prints the kstatus of one Kubernetes object read from stdin (JSON or YAML,
// as `kubectl get -o json` prints it): the health GitOps tools such as Flux and Argo CD's
// kstatus-based checks compute, from sigs.k8s.io/cli-utils' status.Compute.
//
//	kubectl get rp gitjobs -n fleet-local -o json | kstatus
//	{"status":"Current","message":"Resource is current"}
//
// retainer's tests use it to prove that its policies' conditions read as GitOps tools expect.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	// YAML is a superset of JSON, so one conversion reads both.
	doc, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	// Unstructured's own decoding keeps integers as int64, which kstatus's field accessors
	// require (encoding/json would make them float64).
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(doc); err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("computing the status: %w", err)
	}
	return json.NewEncoder(out).Encode(result{Status: res.Status.String(), Message: res.Message})
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
