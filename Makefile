.PHONY: test unit demo testbed-up testbed-down crds

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

crds:
	cargo run --quiet -- crds > crds/retainer.dev.yaml
