package main

// celgo.go evaluates each conformance case with cel-go, configured as the specification's
// own runner configures it for the case (container, declarations or disable_check, and the
// extensions the files use), and reports the outcome for the docs table beside retainer's.

import (
	"fmt"
	"math"

	celpb "cel.dev/expr"
	proto2pb "cel.dev/expr/conformance/proto2"
	proto3pb "cel.dev/expr/conformance/proto3"
	conformance "cel.dev/expr/conformance/test"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/proto"
)

// celGoOutcome returns "pass", "fail: why" or "skip: why" for one case.
func celGoOutcome(t *conformance.SimpleTest) (out string) {
	defer func() {
		if r := recover(); r != nil {
			out = fmt.Sprintf("fail: panic: %v", r)
		}
	}()
	opts := []cel.EnvOption{
		cel.Container(t.GetContainer()),
		cel.Types(&proto2pb.TestAllTypes{}, &proto3pb.TestAllTypes{}),
		cel.OptionalTypes(),
		ext.Strings(), ext.Math(), ext.Lists(), ext.Sets(), ext.Encoders(),
		ext.Bindings(), ext.TwoVarComprehensions(), ext.Protos(),
	}
	if t.GetDisableMacros() {
		opts = append(opts, cel.ClearMacros())
	}
	for _, d := range t.GetTypeEnv() {
		raw, err := proto.Marshal(d)
		if err != nil {
			return "skip: declaration: " + err.Error()
		}
		var alpha exprpb.Decl
		if err := proto.Unmarshal(raw, &alpha); err != nil {
			return "skip: declaration: " + err.Error()
		}
		opt, err := cel.ExprDeclToDeclaration(&alpha)
		if err != nil {
			return "skip: declaration: " + err.Error()
		}
		opts = append(opts, opt)
	}
	if t.GetDisableCheck() {
		for name := range t.GetBindings() {
			opts = append(opts, cel.Variable(name, cel.DynType))
		}
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return "skip: environment: " + err.Error()
	}
	activation := map[string]any{}
	for name, b := range t.GetBindings() {
		v, ok := b.GetKind().(*celpb.ExprValue_Value)
		if !ok {
			return "skip: bindings that are not values"
		}
		val, err := cel.ProtoAsValue(env.CELTypeAdapter(), v.Value)
		if err != nil {
			return "skip: binding: " + err.Error()
		}
		activation[name] = val
	}
	ast, iss := env.Parse(t.GetExpr())
	if iss.Err() == nil && !t.GetDisableCheck() {
		ast, iss = env.Check(ast)
	}
	var res ref.Val
	var evalErr error
	if iss.Err() != nil {
		evalErr = iss.Err()
	} else {
		prg, err := env.Program(ast)
		if err != nil {
			evalErr = err
		} else {
			res, _, evalErr = prg.Eval(activation)
		}
	}
	switch m := t.GetResultMatcher().(type) {
	case nil:
		return compare(env, evalErr, res, &celpb.Value{Kind: &celpb.Value_BoolValue{BoolValue: true}})
	case *conformance.SimpleTest_Value:
		return compare(env, evalErr, res, m.Value)
	case *conformance.SimpleTest_EvalError, *conformance.SimpleTest_AnyEvalErrors:
		if evalErr != nil {
			return "pass"
		}
		return "fail: value where an error is expected"
	case *conformance.SimpleTest_TypedResult:
		if evalErr != nil {
			return "fail: " + evalErr.Error()
		}
		if m.TypedResult.GetResult() == nil {
			return "pass"
		}
		return compare(env, nil, res, m.TypedResult.GetResult())
	default:
		return fmt.Sprintf("skip: result matcher %T", m)
	}
}

func compare(env *cel.Env, evalErr error, res ref.Val, want *celpb.Value) string {
	if evalErr != nil {
		return "fail: " + evalErr.Error()
	}
	exp, err := cel.ProtoAsValue(env.CELTypeAdapter(), want)
	if err != nil {
		return "skip: expected value: " + err.Error()
	}
	if same(exp, res) {
		return "pass"
	}
	return fmt.Sprintf("fail: got %v", res)
}

// same is CEL equality plus equal types, with NaN equal to NaN, as the spec's runner compares.
func same(a, b ref.Val) bool {
	if x, ok := a.(types.Double); ok {
		if y, ok := b.(types.Double); ok && math.IsNaN(float64(x)) && math.IsNaN(float64(y)) {
			return true
		}
	}
	if a.Type().TypeName() != b.Type().TypeName() {
		return false
	}
	return a.Equal(b) == types.True
}
