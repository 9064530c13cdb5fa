module retainer/tools/cel-conformance

go 1.24

require (
	cel.dev/expr v0.26.0
	google.golang.org/protobuf v1.36.12
)
