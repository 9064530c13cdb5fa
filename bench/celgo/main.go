// celgo evaluates retainer's policies with cel-go, over the same objects, the same way, so the
// two CEL engines can be compared on equal terms (bench/eval.sh).
//
//	celgo -policy examples/fleet-gitjobs/policy.yaml -objects bench/data/jobs-100000.json \
//	      -now 2026-11-22T12:00:00Z [-mode check|bench] [-runs 3] [-scenario name]
//
// -mode check (the default) is the counterpart of `retainer check -o json`: read and parse the
// file, run the pipeline (select, match, group, order, rank, referenced-by, guards, keep) and
// print the same JSON report, so eval.sh can compare verdicts object by object.
//
// -mode bench times, in process, each phase retainer's bench/eval.rs times, printing one
// tab-separated RESULT line per figure: medians of -runs wall and process CPU seconds.
//
//	parse     read the file, decode the JSON, turn integral numbers into int64
//	check     parse + pipeline + rendering the report into memory
//	pipeline  the pipeline alone, over objects already parsed
//	cel       CEL alone: per selected object, bind the variables and run match, groupBy,
//	          orderBy and keep (ranks, ages and referrers are computed outside the timing)
//	cel-bind  of which binding the object, timed apart
//
// -mode exprs -exprs bench/cel-exprs.tsv -data bench/data -n N times CEL alone per line of that
// file, as `cargo bench --bench eval -- --cel-exprs ...` does for retainer (bench/cel.sh).
//
// cel-go is built as kube-apiserver builds it (see newEnv) and runs keep as one expression, so
// reports agree with retainer's on every verdict but not on the reason of a kept object, where
// retainer names the `||` term that held.
//
// Only what the Job and Secret example policies need is here: no OCI targets, no custom
// referencedBy; a policy using them is refused.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

func main() {
	policyPath := flag.String("policy", "", "RetentionPolicy or ClusterRetentionPolicy YAML")
	objectsPath := flag.String("objects", "", "objects: a JSON List (bench/gen_objects.py)")
	nowFlag := flag.String("now", "2026-11-22T12:00:00Z", "evaluation time, RFC 3339")
	mode := flag.String("mode", "check", "check: print the report; bench: time the phases")
	runs := flag.Int("runs", 3, "bench: repetitions per figure")
	scenario := flag.String("scenario", "", "bench: label of the RESULT lines")
	exprsPath := flag.String("exprs", "", "exprs: bench/cel-exprs.tsv")
	dataDir := flag.String("data", "bench/data", "exprs: directory of <jobs|secrets>-N.json")
	n := flag.String("n", "100000", "exprs: N of the data files")
	flag.Parse()
	if *mode == "exprs" {
		now, err := time.Parse(time.RFC3339Nano, *nowFlag)
		if err != nil {
			fail(err)
		}
		exprsBench(*exprsPath, *dataDir, *n, now, *runs)
		return
	}
	if *policyPath == "" || *objectsPath == "" {
		fail(fmt.Errorf("-policy and -objects are required"))
	}
	now, err := time.Parse(time.RFC3339Nano, *nowFlag)
	if err != nil {
		fail(err)
	}
	pol, err := loadPolicy(*policyPath)
	if err != nil {
		fail(err)
	}
	switch *mode {
	case "check":
		objs, err := readObjects(*objectsPath)
		if err != nil {
			fail(err)
		}
		rep := checkOffline(pol, objs, now)
		w := bufio.NewWriterSize(os.Stdout, 1<<20)
		if err := render(w, rep); err != nil {
			fail(err)
		}
		if err := w.Flush(); err != nil {
			fail(err)
		}
	case "bench":
		bench(pol, *objectsPath, now, *runs, *scenario)
	default:
		fail(fmt.Errorf("unknown -mode %q", *mode))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "celgo:", err)
	os.Exit(1)
}

// ---------------------------------------------------------------------------------------------
// Objects

// readObjects reads a JSON file of objects, flattening Lists. Integral numbers become int64,
// as Kubernetes' own JSON decoding of unstructured objects does, so `status.succeeded` is an
// int in CEL here as it is in retainer.
func readObjects(path string) ([]map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out []map[string]any
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		normalize(doc)
		kind, _ := doc["kind"].(string)
		items, isList := doc["items"].([]any)
		if isList && strings.HasSuffix(kind, "List") {
			av := doc["apiVersion"]
			for _, it := range items {
				m, ok := it.(map[string]any)
				if !ok {
					continue
				}
				if _, has := m["apiVersion"]; !has && av != nil {
					m["apiVersion"] = av
				}
				out = append(out, m)
			}
		} else {
			out = append(out, doc)
		}
	}
	return out, nil
}

func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

func at(obj map[string]any, path ...string) any {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func str(obj map[string]any, path ...string) string {
	s, _ := at(obj, path...).(string)
	return s
}

func labelsOf(obj map[string]any) map[string]string {
	out := map[string]string{}
	if m, ok := at(obj, "metadata", "labels").(map[string]any); ok {
		for k, v := range m {
			if s, ok := v.(string); ok {
				out[k] = s
			}
		}
	}
	return out
}

// stripSecretData mirrors retainer: Secret data never enters evaluation.
func stripSecretData(obj map[string]any) {
	if str(obj, "kind") != "Secret" {
		return
	}
	delete(obj, "data")
	delete(obj, "stringData")
	if ann, ok := at(obj, "metadata", "annotations").(map[string]any); ok {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
	}
}

// ---------------------------------------------------------------------------------------------
// Policies

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions"`
}

type policyDoc struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec struct {
		Target struct {
			Kind              string         `yaml:"kind"`
			Selector          *labelSelector `yaml:"selector"`
			NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
			FieldSelector     string         `yaml:"fieldSelector"`
		} `yaml:"target"`
		Match        string `yaml:"match"`
		GroupBy      string `yaml:"groupBy"`
		OrderBy      string `yaml:"orderBy"`
		Keep         string `yaml:"keep"`
		ReferencedBy []any  `yaml:"referencedBy"`
	} `yaml:"spec"`
}

type policy struct {
	key       string
	namespace string // empty for a ClusterRetentionPolicy
	cluster   bool
	doc       policyDoc
	match     *expr
	groupBy   *expr
	orderBy   *expr
	keep      *expr
}

// expr is one compiled expression. keep runs whole, as kube-apiserver runs an expression: the
// verdict is all that is compared with retainer's (which also names the `||` term that held).
type expr struct {
	field  string
	source string
	prg    cel.Program
}

// kubernetes is the minor version whose CEL environment is built: the test bed's, and the
// k8s.io/apiserver version go.mod pins.
var kubernetes = version.MajorMinor(1, 36)

// newEnv is the environment kube-apiserver compiles a newly written expression with
// (environment.MustBaseEnvSet(1.36).NewExpressionsEnv(): the Kubernetes URL, regex, lists,
// quantity, semver, IP, CIDR, format and authz libraries, cel-go's strings, sets, lists and
// two-variable comprehensions at the versions Kubernetes pins, optional types, cross-type
// numeric comparisons, the literal validators and its cost limits), plus retainer's variables.
// object is dyn: retainer has no schema either.
func newEnv() (*cel.Env, error) {
	base := environment.MustBaseEnvSet(kubernetes).NewExpressionsEnv()
	return base.Extend(
		cel.Variable("object", cel.DynType),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("age", cel.DurationType),
		cel.Variable("group", cel.StringType),
		cel.Variable("rank", cel.IntType),
		cel.Variable("groupSize", cel.IntType),
		cel.Variable("referencedBy", cel.ListType(cel.DynType)),
	)
}

// compileProgram builds a program as the admission plugin's compiler does
// (k8s.io/apiserver/pkg/admission/plugin/cel): the environment brings the program options of
// the base environment (OptOptimize, which folds constants such as duration('24h') once, cost
// tracking and the per-call cost limit), and the interrupt check frequency is added here.
func compileProgram(env *cel.Env, src string) (cel.Program, error) {
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	return env.Program(ast, cel.InterruptCheckFrequency(celconfig.CheckFrequency))
}

func compileExpr(env *cel.Env, field, src string) (*expr, error) {
	src = strings.TrimSpace(src)
	if src == "" {
		return nil, nil
	}
	prg, err := compileProgram(env, src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return &expr{field: field, source: src, prg: prg}, nil
}

func loadPolicy(path string) (*policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d policyDoc
	if err := yaml.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p := &policy{doc: d}
	switch d.Kind {
	case "RetentionPolicy":
		p.namespace = d.Metadata.Namespace
		if p.namespace == "" {
			p.namespace = "default"
		}
		p.key = p.namespace + "/" + d.Metadata.Name
	case "ClusterRetentionPolicy":
		p.cluster = true
		p.key = d.Metadata.Name
	default:
		return nil, fmt.Errorf("%s: not a retention policy", path)
	}
	if t := d.Spec.Target.Kind; t != "Job" && t != "Secret" {
		return nil, fmt.Errorf("%s: target %s is not supported by this benchmark", path, t)
	}
	if len(d.Spec.ReferencedBy) > 0 {
		return nil, fmt.Errorf("%s: custom referencedBy is not supported by this benchmark", path)
	}
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	if p.match, err = compileExpr(env, "spec.match", d.Spec.Match); err != nil {
		return nil, err
	}
	if p.groupBy, err = compileExpr(env, "spec.groupBy", d.Spec.GroupBy); err != nil {
		return nil, err
	}
	if p.orderBy, err = compileExpr(env, "spec.orderBy", d.Spec.OrderBy); err != nil {
		return nil, err
	}
	if p.keep, err = compileExpr(env, "spec.keep", d.Spec.Keep); err != nil {
		return nil, err
	}
	if p.keep == nil {
		return nil, fmt.Errorf("%s: spec.keep is required", path)
	}
	return p, nil
}

// ---------------------------------------------------------------------------------------------
// Selection and references

func matchesLabelSelector(sel *labelSelector, labels map[string]string) bool {
	for k, v := range sel.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range sel.MatchExpressions {
		v, has := labels[e.Key]
		switch e.Operator {
		case "In":
			if !has || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if has && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !has {
				return false
			}
		case "DoesNotExist":
			if has {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func matchesFieldSelector(fs string, obj map[string]any) bool {
	for _, part := range strings.Split(fs, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var k, want string
		eq := true
		if a, b, ok := strings.Cut(part, "!="); ok {
			k, want, eq = a, b, false
		} else if a, b, ok := strings.Cut(part, "=="); ok {
			k, want = a, b
		} else if a, b, ok := strings.Cut(part, "="); ok {
			k, want = a, b
		} else {
			return false
		}
		got := ""
		switch v := at(obj, strings.Split(strings.TrimSpace(k), ".")...).(type) {
		case nil:
		case string:
			got = v
		default:
			b, _ := json.Marshal(v)
			got = string(b)
		}
		if (got == strings.TrimSpace(want)) != eq {
			return false
		}
	}
	return true
}

func (p *policy) selects(obj map[string]any, nsLabels map[string]map[string]string) bool {
	if str(obj, "kind") != p.doc.Spec.Target.Kind {
		return false
	}
	ns := str(obj, "metadata", "namespace")
	if !p.cluster {
		if ns != p.namespace {
			return false
		}
	} else if sel := p.doc.Spec.Target.NamespaceSelector; sel != nil {
		if !matchesLabelSelector(sel, nsLabels[ns]) {
			return false
		}
	}
	if sel := p.doc.Spec.Target.Selector; sel != nil && !matchesLabelSelector(sel, labelsOf(obj)) {
		return false
	}
	if fs := p.doc.Spec.Target.FieldSelector; fs != "" && !matchesFieldSelector(fs, obj) {
		return false
	}
	return true
}

type referrer struct {
	APIVersion, Kind, Namespace, Name string
}

func (r referrer) less(o referrer) bool {
	if r.APIVersion != o.APIVersion {
		return r.APIVersion < o.APIVersion
	}
	if r.Kind != o.Kind {
		return r.Kind < o.Kind
	}
	if r.Namespace != o.Namespace {
		return r.Namespace < o.Namespace
	}
	return r.Name < o.Name
}

func items(v any) []any {
	l, _ := v.([]any)
	return l
}

func podSpec(obj map[string]any) map[string]any {
	var s any
	switch str(obj, "kind") {
	case "Pod":
		s = obj["spec"]
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController":
		s = at(obj, "spec", "template", "spec")
	case "CronJob":
		s = at(obj, "spec", "jobTemplate", "spec", "template", "spec")
	case "PodTemplate":
		s = at(obj, "template", "spec")
	}
	m, _ := s.(map[string]any)
	return m
}

// secretsOf names the Secrets an object references by retainer's built-in paths.
func secretsOf(obj map[string]any) []string {
	var out []string
	add := func(v any) {
		if s, ok := v.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	switch str(obj, "kind") {
	case "ServiceAccount":
		for _, s := range append(items(obj["secrets"]), items(obj["imagePullSecrets"])...) {
			add(at(asMap(s), "name"))
		}
	case "Ingress":
		for _, t := range items(at(obj, "spec", "tls")) {
			add(at(asMap(t), "secretName"))
		}
	}
	if spec := podSpec(obj); spec != nil {
		for _, s := range items(spec["imagePullSecrets"]) {
			add(at(asMap(s), "name"))
		}
		for _, v := range items(spec["volumes"]) {
			add(at(asMap(v), "secret", "secretName"))
			for _, src := range items(at(asMap(v), "projected", "sources")) {
				add(at(asMap(src), "secret", "name"))
			}
		}
		for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
			for _, c := range items(spec[list]) {
				for _, e := range items(at(asMap(c), "env")) {
					add(at(asMap(e), "valueFrom", "secretKeyRef", "name"))
				}
				for _, e := range items(at(asMap(c), "envFrom")) {
					add(at(asMap(e), "secretRef", "name"))
				}
			}
		}
	}
	return out
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

var builtinReferrerKinds = []string{"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
	"Job", "CronJob", "ServiceAccount", "Ingress"}

type nsName struct{ ns, name string }

func buildRefIndex(others []map[string]any) map[nsName][]referrer {
	idx := map[nsName][]referrer{}
	for _, o := range others {
		if !slices.Contains(builtinReferrerKinds, str(o, "kind")) {
			continue
		}
		who := referrer{str(o, "apiVersion"), str(o, "kind"), str(o, "metadata", "namespace"), str(o, "metadata", "name")}
		for _, s := range secretsOf(o) {
			k := nsName{who.Namespace, s}
			idx[k] = append(idx[k], who)
		}
	}
	for k, v := range idx {
		sort.Slice(v, func(i, j int) bool { return v[i].less(v[j]) })
		idx[k] = slices.Compact(v)
	}
	return idx
}

// ---------------------------------------------------------------------------------------------
// Evaluation

// vars is the activation of one evaluation: a fixed set of names resolved by a switch, as
// retainer's VariableResolver does, rather than a map built per object.
type vars struct {
	object       ref.Val
	now          ref.Val
	age          ref.Val
	group        ref.Val
	rank         ref.Val
	groupSize    ref.Val
	referencedBy ref.Val
}

func (v *vars) ResolveName(name string) (any, bool) {
	var r ref.Val
	switch name {
	case "object":
		r = v.object
	case "now":
		r = v.now
	case "age":
		r = v.age
	case "group":
		r = v.group
	case "rank":
		r = v.rank
	case "groupSize":
		r = v.groupSize
	case "referencedBy":
		r = v.referencedBy
	}
	return r, r != nil
}

func (v *vars) Parent() interpreter.Activation { return nil }

func typeName(v ref.Val) string {
	switch v.Type() {
	case types.BoolType:
		return "bool"
	case types.IntType:
		return "int"
	case types.UintType:
		return "uint"
	case types.DoubleType:
		return "double"
	case types.StringType:
		return "string"
	case types.BytesType:
		return "bytes"
	case types.ListType:
		return "list"
	case types.MapType:
		return "map"
	case types.NullType:
		return "null"
	case types.DurationType:
		return "duration"
	case types.TimestampType:
		return "timestamp"
	}
	return v.Type().TypeName()
}

func run(e *expr, prg cel.Program, v *vars) (ref.Val, error) {
	out, _, err := prg.Eval(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", e.field, err)
	}
	return out, nil
}

func (e *expr) evalBool(v *vars) (bool, error) {
	out, err := run(e, e.prg, v)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("%s: must evaluate to bool, got %s", e.field, typeName(out))
	}
	return bool(b), nil
}

func (e *expr) evalString(v *vars) (string, error) {
	out, err := run(e, e.prg, v)
	if err != nil {
		return "", err
	}
	s, ok := out.(types.String)
	if !ok {
		return "", fmt.Errorf("%s: must evaluate to string, got %s", e.field, typeName(out))
	}
	return string(s), nil
}

// evalKeep runs keep whole and says whether it held.
func (e *expr) evalKeep(v *vars) (bool, error) {
	return e.evalBool(v)
}

// sortKey is an orderBy value; values of different kinds never compare.
type sortKey struct {
	kind string // int, uint, double, string, timestamp, duration
	i    int64
	u    uint64
	f    float64
	s    string
	// newest: unknown creation time, which reads as newest.
	newest bool
}

func keyOf(v ref.Val) (sortKey, error) {
	switch x := v.(type) {
	case types.Int:
		return sortKey{kind: "int", i: int64(x)}, nil
	case types.Uint:
		return sortKey{kind: "uint", u: uint64(x)}, nil
	case types.Double:
		if x == x {
			return sortKey{kind: "double", f: float64(x)}, nil
		}
	case types.String:
		return sortKey{kind: "string", s: string(x)}, nil
	case types.Timestamp:
		return sortKey{kind: "timestamp", i: x.UnixNano()}, nil
	case types.Duration:
		return sortKey{kind: "duration", i: int64(x.Duration)}, nil
	}
	return sortKey{}, fmt.Errorf("spec.orderBy: must evaluate to timestamp, int, double, string or semver, got %s", typeName(v))
}

// cmp orders two keys of one kind; false when they do not compare.
func (a sortKey) cmp(b sortKey) (int, bool) {
	if a.kind != b.kind {
		return 0, false
	}
	switch {
	case a.newest && b.newest:
		return 0, true
	case a.newest:
		return 1, true
	case b.newest:
		return -1, true
	}
	switch a.kind {
	case "uint":
		return cmpOrdered(a.u, b.u), true
	case "double":
		return cmpOrdered(a.f, b.f), true
	case "string":
		return strings.Compare(a.s, b.s), true
	}
	return cmpOrdered(a.i, b.i), true
}

func cmpOrdered[T int64 | uint64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type row struct {
	obj       map[string]any
	bound     ref.Val
	age       ref.Val
	group     string
	key       *sortKey
	decided   *verdict
	rank      int64
	groupSize int64
	refs      []referrer
}

type verdict struct{ verdict, reason string }

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Verdict   string `json:"verdict"`
	Reason    string `json:"reason"`
}

type counts struct {
	Governed   int64 `json:"governed"`
	Kept       int64 `json:"kept"`
	Candidates int64 `json:"candidates"`
	Errors     int64 `json:"errors"`
}

type report struct {
	Policy  string   `json:"policy"`
	Summary counts   `json:"summary"`
	Results []result `json:"results"`
}

type snapshot struct {
	targets  []map[string]any
	refs     map[nsName][]referrer
	nsLabels map[string]map[string]string
	now      time.Time
}

func prepare(p *policy, objs []map[string]any, now time.Time) snapshot {
	for _, o := range objs {
		stripSecretData(o)
	}
	s := snapshot{nsLabels: map[string]map[string]string{}, now: now}
	var others []map[string]any
	for _, o := range objs {
		if str(o, "kind") == p.doc.Spec.Target.Kind {
			s.targets = append(s.targets, o)
		} else {
			others = append(others, o)
			if str(o, "kind") == "Namespace" {
				s.nsLabels[str(o, "metadata", "name")] = labelsOf(o)
			}
		}
	}
	s.refs = buildRefIndex(others)
	return s
}

func checkOffline(p *policy, objs []map[string]any, now time.Time) report {
	return evaluate(p, prepare(p, objs, now))
}

func created(obj map[string]any) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, str(obj, "metadata", "creationTimestamp"))
	return t, err == nil
}

func ageOf(obj map[string]any, now time.Time) time.Duration {
	if c, ok := created(obj); ok && now.After(c) {
		return now.Sub(c)
	}
	return 0
}

func jobFinished(obj map[string]any) bool {
	for _, c := range items(at(obj, "status", "conditions")) {
		m := asMap(c)
		if t := str(m, "type"); (t == "Complete" || t == "Failed") && str(m, "status") == "True" {
			return true
		}
	}
	return false
}

func guard(kind string, obj map[string]any) string {
	if at(obj, "metadata", "deletionTimestamp") != nil {
		return "guard: already being deleted"
	}
	if str(obj, "metadata", "labels", "retainer.dev/keep") == "true" {
		return "guard: label retainer.dev/keep=true"
	}
	if str(obj, "metadata", "annotations", "retainer.dev/keep") == "true" {
		return "guard: annotation retainer.dev/keep=true"
	}
	if kind == "Job" && !jobFinished(obj) {
		return "guard: job has not finished"
	}
	return ""
}

func referrersValue(refs []referrer) ref.Val {
	l := make([]any, len(refs))
	for i, r := range refs {
		l[i] = map[string]any{"apiVersion": r.APIVersion, "kind": r.Kind, "namespace": r.Namespace, "name": r.Name}
	}
	return types.DefaultTypeAdapter.NativeToValue(l)
}

// evaluate is retainer's engine::evaluate for Job and Secret targets.
func evaluate(p *policy, s snapshot) report {
	kind := p.doc.Spec.Target.Kind
	now := types.Timestamp{Time: s.now}
	var rows []*row
	for _, obj := range s.targets {
		if !p.selects(obj, s.nsLabels) {
			continue
		}
		c, hasCreated := created(obj)
		age := ageOf(obj, s.now)
		r := &row{obj: obj, bound: types.DefaultTypeAdapter.NativeToValue(obj), age: types.Duration{Duration: age}}
		v := &vars{object: r.bound, now: now, age: r.age}
		if p.match != nil {
			ok, err := p.match.evalBool(v)
			if err != nil {
				r.decided = &verdict{"error", err.Error()}
			} else if !ok {
				continue
			}
		}
		if r.decided == nil {
			if p.groupBy != nil {
				g, err := p.groupBy.evalString(v)
				if err != nil {
					r.decided = &verdict{"error", err.Error()}
				}
				r.group = g
			} else {
				r.group = str(obj, "metadata", "namespace")
			}
		}
		if r.decided == nil {
			var k sortKey
			var err error
			if p.orderBy != nil {
				v.group = types.String(r.group)
				var out ref.Val
				if out, err = run(p.orderBy, p.orderBy.prg, v); err == nil {
					k, err = keyOf(out)
				}
			} else if hasCreated {
				k = sortKey{kind: "timestamp", i: c.UnixNano()}
			} else {
				k = sortKey{kind: "timestamp", newest: true}
			}
			if err != nil {
				r.decided = &verdict{"error", err.Error()}
			} else {
				r.key = &k
			}
		}
		rows = append(rows, r)
	}
	rankRows(rows)
	for _, r := range rows {
		if kind == "Secret" {
			r.refs = s.refs[nsName{str(r.obj, "metadata", "namespace"), str(r.obj, "metadata", "name")}]
		}
	}
	rep := report{Policy: p.key, Results: make([]result, 0, len(rows))}
	for _, r := range rows {
		var d verdict
		if r.decided != nil {
			d = *r.decided
		} else if g := guard(kind, r.obj); g != "" {
			d = verdict{"keep", g}
		} else {
			v := &vars{object: r.bound, now: now, age: r.age, group: types.String(r.group),
				rank: types.Int(r.rank), groupSize: types.Int(r.groupSize), referencedBy: referrersValue(r.refs)}
			ok, err := p.keep.evalKeep(v)
			switch {
			case err != nil:
				d = verdict{"error", err.Error()}
			case ok:
				d = verdict{"keep", "keep held"}
			default:
				d = verdict{"delete", "no term of keep held"}
			}
		}
		rep.Results = append(rep.Results, result{Kind: kind, Namespace: str(r.obj, "metadata", "namespace"),
			Name: str(r.obj, "metadata", "name"), Verdict: d.verdict, Reason: d.reason})
		rep.Summary.Governed++
		switch d.verdict {
		case "keep":
			rep.Summary.Kept++
		case "delete":
			rep.Summary.Candidates++
		default:
			rep.Summary.Errors++
		}
	}
	return rep
}

// rankRows numbers each group's rows from 0, highest key first, ties by name; a group whose
// keys are of different kinds is not ranked and all of it is an error.
func rankRows(rows []*row) {
	groups := map[string][]*row{}
	var order []string
	for _, r := range rows {
		if r.key == nil {
			continue
		}
		if _, seen := groups[r.group]; !seen {
			order = append(order, r.group)
		}
		groups[r.group] = append(groups[r.group], r)
	}
	for _, g := range order {
		members := groups[g]
		kinds := map[string]bool{}
		for _, m := range members {
			kinds[m.key.kind] = true
		}
		if len(kinds) > 1 {
			ks := make([]string, 0, len(kinds))
			for k := range kinds {
				ks = append(ks, k)
			}
			sort.Strings(ks)
			msg := fmt.Sprintf("spec.orderBy: values of different types (%s) in group '%s' cannot be ranked", strings.Join(ks, ", "), g)
			for _, m := range members {
				m.decided = &verdict{"error", msg}
			}
			continue
		}
		sort.SliceStable(members, func(i, j int) bool {
			if c, ok := members[j].key.cmp(*members[i].key); ok && c != 0 {
				return c < 0
			}
			return str(members[i].obj, "metadata", "name") < str(members[j].obj, "metadata", "name")
		})
		for i, m := range members {
			m.rank = int64(i)
			m.groupSize = int64(len(members))
		}
	}
}

func render(w io.Writer, rep report) error {
	enc := json.NewEncoder(w)
	// retainer prints `rank < 1` as is; Go would escape `<` for HTML.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// ---------------------------------------------------------------------------------------------
// Benchmark mode

// celOnly runs every expression over the selected objects, timing only the binding of the
// variables and the evaluations, as bench/eval.rs does for retainer. Returns the time and the
// number of evaluations; and, apart, the time binding alone takes.
func celOnly(p *policy, s snapshot) (times, times, int) {
	type sel struct {
		obj     map[string]any
		age     ref.Val
		created int64
		refs    ref.Val
		bound   ref.Val
		group   string
		key     *sortKey
		rank    int64
		size    int64
		matched bool
		kept    bool
	}
	now := types.Timestamp{Time: s.now}
	var objs []*sel
	for _, o := range s.targets {
		if !p.selects(o, s.nsLabels) {
			continue
		}
		c, _ := created(o)
		objs = append(objs, &sel{obj: o, age: types.Duration{Duration: ageOf(o, s.now)}, created: c.UnixNano(),
			refs: referrersValue(s.refs[nsName{str(o, "metadata", "namespace"), str(o, "metadata", "name")}])})
	}
	evals := 0
	// Binding alone, to tell it from evaluation; not part of the total.
	start := startClock()
	for _, o := range objs {
		o.bound = types.DefaultTypeAdapter.NativeToValue(o.obj)
	}
	bind := start.elapsed()
	start = startClock()
	for _, o := range objs {
		o.bound = types.DefaultTypeAdapter.NativeToValue(o.obj)
		v := &vars{object: o.bound, now: now, age: o.age}
		if p.match != nil {
			evals++
			if ok, err := p.match.evalBool(v); err != nil || !ok {
				continue
			}
		}
		o.matched = true
		if p.groupBy != nil {
			evals++
			o.group, _ = p.groupBy.evalString(v)
		}
		k := sortKey{kind: "timestamp", i: o.created}
		if p.orderBy != nil {
			evals++
			v.group = types.String(o.group)
			if out, err := run(p.orderBy, p.orderBy.prg, v); err == nil {
				k, _ = keyOf(out)
			}
		}
		o.key = &k
	}
	phaseA := start.elapsed()
	rows := make([]*row, 0, len(objs))
	for _, o := range objs {
		if o.matched {
			rows = append(rows, &row{obj: o.obj, group: o.group, key: o.key})
		}
	}
	rankRows(rows)
	i := 0
	for _, o := range objs {
		if o.matched {
			o.rank, o.size = rows[i].rank, rows[i].groupSize
			i++
		}
	}
	start = startClock()
	for _, o := range objs {
		if !o.matched {
			continue
		}
		evals++
		v := &vars{object: o.bound, now: now, age: o.age, group: types.String(o.group),
			rank: types.Int(o.rank), groupSize: types.Int(o.size), referencedBy: o.refs}
		o.kept, _ = p.keep.evalKeep(v)
	}
	return phaseA.add(start.elapsed()), bind, evals
}

// times is one measurement: wall time, and the process's CPU time, which includes the
// garbage collector's work on any thread and moves far less than wall time on a loaded machine.
type times struct{ wall, cpu time.Duration }

type clock struct {
	wall time.Time
	cpu  time.Duration
}

func startClock() clock { return clock{time.Now(), processCPUTime()} }

func (c clock) elapsed() times {
	return times{time.Since(c.wall), processCPUTime() - c.cpu}
}

func (t times) add(o times) times { return times{t.wall + o.wall, t.cpu + o.cpu} }

func processCPUTime() time.Duration {
	const clockProcessCPUTimeID = 2 // Linux, as retainer's bench reads it
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockProcessCPUTimeID,
		uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		fail(errno)
	}
	return time.Duration(ts.Nano())
}

func median(ts []times) times {
	w := make([]time.Duration, len(ts))
	c := make([]time.Duration, len(ts))
	for i, t := range ts {
		w[i], c[i] = t.wall, t.cpu
	}
	slices.Sort(w)
	slices.Sort(c)
	return times{w[len(w)/2], c[len(c)/2]}
}

func bench(p *policy, path string, now time.Time, runs int, scenario string) {
	if scenario == "" {
		scenario = p.key
	}
	emit := func(measure string, ts []times, objects, evals int) {
		m := median(ts)
		fmt.Printf("RESULT\t%s\t%s\t%.6f\t%.6f\t%d\t%d\n", scenario, measure, m.wall.Seconds(), m.cpu.Seconds(),
			objects, evals)
	}
	var parse, check, pipeline, cel []times
	var targets, governed, evals int
	for range runs {
		start := startClock()
		objs, err := readObjects(path)
		if err != nil {
			fail(err)
		}
		parse = append(parse, start.elapsed())
		rep := checkOffline(p, objs, now)
		var buf bytes.Buffer
		if err := render(&buf, rep); err != nil {
			fail(err)
		}
		check = append(check, start.elapsed())
		governed = int(rep.Summary.Governed)
	}
	objs, err := readObjects(path)
	if err != nil {
		fail(err)
	}
	snap := prepare(p, objs, now)
	targets = len(snap.targets)
	for range runs {
		start := startClock()
		rep := evaluate(p, snap)
		pipeline = append(pipeline, start.elapsed())
		if int(rep.Summary.Governed) != governed {
			fail(fmt.Errorf("governed %d, then %d", governed, rep.Summary.Governed))
		}
	}
	var bind []times
	for range runs {
		d, b, n := celOnly(p, snap)
		cel = append(cel, d)
		bind = append(bind, b)
		evals = n
	}
	emit("parse", parse, targets, 0)
	emit("check", check, targets, governed)
	emit("pipeline", pipeline, targets, governed)
	emit("cel", cel, targets, evals)
	emit("cel-bind", bind, targets, 0)
}

// ---------------------------------------------------------------------------------------------
// Per-expression mode (bench/cel.sh)

// exprRow is one line of bench/cel-exprs.tsv.
type exprRow struct{ name, data, source string }

func readExprRows(path string) ([]exprRow, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []exprRow
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: not name<TAB>data<TAB>expression: %q", path, line)
		}
		rows = append(rows, exprRow{f[0], f[1], f[2]})
	}
	return rows, nil
}

// exprsBench times each row of the file: a policy's expressions as celOnly runs them, or one
// expression as a keep over every object of its kind. One untimed pass first, then the median
// of runs passes. Prints `EXPR name wall_s cpu_s objects held errors` per row.
func exprsBench(path, dir, n string, now time.Time, runs int) {
	rows, err := readExprRows(path)
	if err != nil {
		fail(err)
	}
	files := map[string][]map[string]any{}
	load := func(data string) []map[string]any {
		if objs, ok := files[data]; ok {
			return objs
		}
		objs, err := readObjects(fmt.Sprintf("%s/%s-%s.json", dir, data, n))
		if err != nil {
			fail(err)
		}
		files[data] = objs
		return objs
	}
	for _, r := range rows {
		var ts []times
		var objects, held, errs int
		if r.data == "policy" {
			p, err := loadPolicy(fmt.Sprintf("examples/%s/policy.yaml", r.source))
			if err != nil {
				fail(err)
			}
			data := map[string]string{"Job": "jobs", "Secret": "secrets"}[p.doc.Spec.Target.Kind]
			snap := prepare(p, load(data), now)
			objects = len(snap.targets)
			for i := 0; i <= runs; i++ {
				d, _, e := celOnly(p, snap)
				if i > 0 {
					ts = append(ts, d)
				}
				held = e
			}
		} else {
			kind := map[string]string{"jobs": "Job", "secrets": "Secret"}[r.data]
			env, err := newEnv()
			if err != nil {
				fail(err)
			}
			e, err := compileExpr(env, "spec.keep", r.source)
			if err != nil {
				fail(err)
			}
			type in struct {
				obj map[string]any
				age ref.Val
			}
			var ins []in
			for _, o := range load(r.data) {
				if str(o, "kind") == kind {
					stripSecretData(o)
					ins = append(ins, in{o, types.Duration{Duration: ageOf(o, now)}})
				}
			}
			objects = len(ins)
			nowV := types.Timestamp{Time: now}
			noRefs := referrersValue(nil)
			for i := 0; i <= runs; i++ {
				held, errs = 0, 0
				start := startClock()
				for _, x := range ins {
					v := &vars{object: types.DefaultTypeAdapter.NativeToValue(x.obj), now: nowV, age: x.age,
						group: types.String(""), rank: types.Int(0), groupSize: types.Int(1), referencedBy: noRefs}
					ok, err := e.evalKeep(v)
					switch {
					case err != nil:
						errs++
					case ok:
						held++
					}
				}
				if i > 0 {
					ts = append(ts, start.elapsed())
				}
			}
		}
		m := median(ts)
		fmt.Printf("EXPR\t%s\t%.6f\t%.6f\t%d\t%d\t%d\n", r.name, m.wall.Seconds(), m.cpu.Seconds(), objects, held, errs)
	}
}
