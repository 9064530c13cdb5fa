.PHONY: test unit demo testbed-up testbed-down crds bench bench-quick

# Unit tests, lints and the real-server tests (starts and stops the local test bed).
test:
	scripts/test.sh

# Pure tests only: no servers needed.
unit:
	cargo test --lib

# Bring the test bed up, install the CRDs and the examples, show what the policies decide.
demo:
	scripts/demo.sh

testbed-up:
	scripts/testbed.sh up

testbed-down:
	scripts/testbed.sh down

# The chart installs the same CRDs; tests/chart.rs fails if the two copies differ.
crds:
	cargo run --quiet -- crds > crds/retainer.dev.yaml
	cp crds/retainer.dev.yaml charts/retainer/crds/retainer.dev.yaml

.PHONY: soak
# The fault soak: 10,000 Jobs under repeated API server, etcd and replica kills, then rounds of
# every fault test, then ten minutes of fuzzing (half an hour or more; starts and stops the test
# bed). See docs/reliability.md.
soak:
	scripts/soak.sh

# Every benchmark side by side, then bench/targets.md and BENCHMARKS.md, generated from the
# results (hours: the TTL controller at its defaults is slow, and the sweeps run again on a bed
# with etcd fsync and API priority and fairness). Not part of `make test`. bench/README.md.
bench:
	bench/run.sh

# Every benchmark at reduced sizes (under 15 minutes on 2 cores), into bench/results/quick/ and
# its own BENCHMARKS.md there: the full results are not touched.
bench-quick:
	BENCH_QUICK=1 bench/run.sh

.PHONY: cel-conformance
# Regenerates tests/cel-conformance/*.json from the CEL specification's conformance files
# (cel.dev/expr, pinned in tools/cel-conformance/go.mod). Needs Go and the module proxy; CI reads
# the committed JSON and never runs this. Then `cargo test --test cel_conformance`.
cel-conformance:
	cd tools/cel-conformance && go mod download cel.dev/expr && \
	  go run . -in "$$(go list -m -f '{{.Dir}}' cel.dev/expr)/tests/simple/testdata" -out ../../tests/cel-conformance

.PHONY: k8s-cel-library
# Regenerates tests/k8s-cel-library/expected.json: every expression of cases.txt evaluated by
# kube-apiserver's own CEL environment (k8s.io/apiserver, pinned in tools/k8s-cel-library/go.mod
# at the test bed's Kubernetes version). Needs Go and the module proxy; CI reads the committed
# JSON and never runs this. Then `cargo test --test cel_k8s_library`.
k8s-cel-library:
	cd tools/k8s-cel-library && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
	  go run . -in ../../tests/k8s-cel-library/cases.txt -out ../../tests/k8s-cel-library/expected.json
