package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/google/cel-go/cel"

	kjson "k8s.io/apimachinery/pkg/util/json"
)

// The oracle mode (-oracle) serves tests/cel_differential.rs: it reads one JSON object a line,
//
//	{"expr": "...", "object": {...}, "vars": {"now": "RFC 3339", "age": {"seconds": 1, "nanos": 0},
//	 "group": "g", "rank": 0, "groupSize": 1, "referencedBy": [...]}, "keep": true}
//
// compiles the expression with the keep variables declared (as a `# declare: keep` section) and
// evaluates it with those values, and writes one line per input: {"value": <typed value>}, or
// {"error": "...", "stage": "compile" | "eval"}. A value the typed encoding cannot write is
// {"error": "...", "stage": "encode"}, which the test reports rather than taking it for an
// evaluation error.
//
// `object` and `referencedBy` are decoded as kube-apiserver decodes an unstructured object
// (k8s.io/apimachinery/pkg/util/json: an integral number that fits int64 is an int64, any other
// number a float64) and bound as the Go maps and slices they decode to, which is what
// a ValidatingAdmissionPolicy's `object` is (admission/plugin/cel binds
// unstructured.Unstructured's Object): cel-go's type adapter turns them into dyn maps and lists.

type oracleInput struct {
	Expr   string          `json:"expr"`
	Keep   bool            `json:"keep"`
	Object json.RawMessage `json:"object"`
	Vars   struct {
		Now          string          `json:"now"`
		Age          durationJSON    `json:"age"`
		Group        string          `json:"group"`
		Rank         int64           `json:"rank"`
		GroupSize    int64           `json:"groupSize"`
		ReferencedBy json.RawMessage `json:"referencedBy"`
	} `json:"vars"`
}

type durationJSON struct {
	Seconds int64 `json:"seconds"`
	Nanos   int64 `json:"nanos"`
}

type oracleOutput struct {
	Value any    `json:"value,omitempty"`
	Error string `json:"error,omitempty"`
	Stage string `json:"stage,omitempty"`
}

func serveOracle(in io.Reader, out io.Writer) error {
	env, err := keepEnv()
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	// An object with long strings makes long lines.
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for sc.Scan() {
		if err := enc.Encode(oracleCase(env, sc.Bytes())); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return w.Flush()
}

func oracleCase(env *cel.Env, line []byte) (res oracleOutput) {
	// A panic inside cel-go is a finding of its own, not a reason to lose the batch.
	defer func() {
		if r := recover(); r != nil {
			res = oracleOutput{Error: fmt.Sprintf("panic: %v", r), Stage: "panic"}
		}
	}()
	var c oracleInput
	if err := json.Unmarshal(line, &c); err != nil {
		return oracleOutput{Error: "bad input line: " + err.Error(), Stage: "input"}
	}
	vars, err := oracleVars(&c)
	if err != nil {
		return oracleOutput{Error: "bad input line: " + err.Error(), Stage: "input"}
	}
	if c.Keep {
		// A keep expression must be a bool. kube-apiserver refuses a validation expression
		// whose type is not exactly bool; retainer's contract (DESIGN.md, docs/cel.md) refuses
		// a known type other than bool and leaves dyn, which anything read from `object` is,
		// to evaluation. The oracle applies retainer's rule, so that the two are compared on
		// what retainer promises.
		ast, iss := env.Compile(c.Expr)
		if iss.Err() == nil {
			if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
				return oracleOutput{Error: "must evaluate to bool, but it is " + t.String(), Stage: "compile"}
			}
		}
	}
	tc := evaluate(env, vars, "", 0, c.Expr)
	if tc.Stage != "" {
		stage := tc.Stage
		if tc.Value == nil && stage == "eval" && len(tc.Error) > len(notRepresentable) &&
			tc.Error[:len(notRepresentable)] == notRepresentable {
			stage = "encode"
		}
		return oracleOutput{Error: tc.Error, Stage: stage}
	}
	return oracleOutput{Value: tc.Value}
}

func oracleVars(c *oracleInput) (map[string]any, error) {
	var object, referencedBy any = map[string]any{}, []any{}
	if len(c.Object) > 0 {
		if err := kjson.Unmarshal(c.Object, &object); err != nil {
			return nil, fmt.Errorf("object: %w", err)
		}
	}
	if len(c.Vars.ReferencedBy) > 0 {
		if err := kjson.Unmarshal(c.Vars.ReferencedBy, &referencedBy); err != nil {
			return nil, fmt.Errorf("referencedBy: %w", err)
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if c.Vars.Now != "" {
		t, err := time.Parse(time.RFC3339Nano, c.Vars.Now)
		if err != nil {
			return nil, fmt.Errorf("now: %w", err)
		}
		now = t
	}
	return map[string]any{
		"object":       object,
		"referencedBy": referencedBy,
		"now":          now,
		"age":          time.Duration(c.Vars.Age.Seconds)*time.Second + time.Duration(c.Vars.Age.Nanos),
		"group":        c.Vars.Group,
		"rank":         c.Vars.Rank,
		"groupSize":    c.Vars.GroupSize,
	}, nil
}
