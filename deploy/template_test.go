package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"

	"orderd/app"
	"orderd/pipeline"
	"orderd/queues"
)

// stage is what the template must hold for one stage.
type stage struct {
	name  string // logical-id prefix: PaymentQueue, PaymentFunction, PaymentFunctionRole, ...
	env   string // STAGE
	queue string // the seed's queue name
}

// stages is what the template must hold, derived from the pipeline table: one function per
// stage, named after its component (payment → PaymentFunction, PaymentQueue, ...).
var stages = func() []stage {
	var out []stage
	for _, st := range pipeline.Stages() {
		out = append(out, stage{name: strings.ToUpper(st.Component[:1]) + st.Component[1:], env: st.Component, queue: st.Queue})
	}
	return out
}()

// parse reads the template with intrinsic functions turned into comparable symbols:
// !Ref X → "Ref:X", !GetAtt X.Arn → "GetAtt:X.Arn", !Sub "s" → "Sub:s". (goformation's
// defaults resolve GetAtt to nothing, which would make every resource check vacuous.) A Ref
// to a list parameter becomes a one-element list and a Ref to a number parameter its
// default, so that typed fields still decode.
func parse(t *testing.T) *cloudformation.Template {
	t.Helper()
	paramType := func(tpl any, name string) (string, any) {
		p, _ := tpl.(map[string]any)["Parameters"].(map[string]any)[name].(map[string]any)
		typ, _ := p["Type"].(string)
		return typ, p["Default"]
	}
	opts := &intrinsics.ProcessorOptions{IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
		"Ref": func(_ string, in, tpl any) any {
			name := fmt.Sprint(in)
			switch typ, def := paramType(tpl, name); {
			case strings.HasPrefix(typ, "List<"):
				return []any{"Ref:" + name}
			case typ == "Number":
				return def
			}
			return "Ref:" + name
		},
		"Fn::GetAtt": func(_ string, in, _ any) any {
			if l, ok := in.([]any); ok {
				return fmt.Sprintf("GetAtt:%v.%v", l[0], l[1])
			}
			return fmt.Sprintf("GetAtt:%v", in)
		},
		"Fn::Sub": func(_ string, in, _ any) any {
			if l, ok := in.([]any); ok {
				return fmt.Sprintf("Sub:%v", l[0])
			}
			return fmt.Sprintf("Sub:%v", in)
		},
	}}
	tpl, err := goformation.ParseYAMLWithOptions(Template, opts)
	if err != nil {
		t.Fatalf("parse template.yaml: %v", err)
	}
	return tpl
}

func TestFunctionsMatchTheBuild(t *testing.T) {
	tpl := parse(t)
	fns := tpl.GetAllServerlessFunctionResources()
	var names []string
	for _, st := range stages {
		names = append(names, st.name+"Function")
	}
	if got, want := slices.Sorted(maps.Keys(fns)), slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
		t.Fatalf("functions %v, want %v", got, want)
	}
	for _, st := range stages {
		fn := fns[st.name+"Function"]
		check := func(what, got, want string) {
			t.Helper()
			if got != want {
				t.Errorf("%sFunction: %s %q, want %q", st.name, what, got, want)
			}
		}
		check("Handler", deref(fn.Handler), "bootstrap")
		check("Runtime", deref(fn.Runtime), "provided.al2023")
		check("Architectures", strings.Join(fn.Architectures, ","), "arm64")
		check("Role", deref(fn.Role), "GetAtt:"+st.name+"FunctionRole.Arn")
		if fn.Environment == nil {
			t.Fatalf("%sFunction has no environment", st.name)
		}
		vars := fn.Environment.Variables
		check("STAGE", vars["STAGE"], st.env)
		check("DB_SECRET_ARN", vars["DB_SECRET_ARN"], "Ref:DBSecretArn")
		check("QUEUE_PREFIX", vars["QUEUE_PREFIX"], "Ref:QueuePrefix")
		// Every stage checks signatures when the relay signs, so every stage needs the key
		// (without it a signing relay's messages pass unchecked; with a key the relay lacks,
		// every message is refused); and each runs the same assembly, gateway included.
		check("MESSAGE_SIGNING_KEY", vars["MESSAGE_SIGNING_KEY"], "Ref:MessageSigningKey")
		check("PAYMENT_GATEWAY", vars["PAYMENT_GATEWAY"], "Ref:PaymentGateway")
		for _, key := range []string{"MYSQL_DSN", "SMTP_USERNAME", "SMTP_PASSWORD"} {
			if _, ok := vars[key]; ok {
				t.Errorf("%sFunction: %s in the template: credentials must come from Secrets Manager", st.name, key)
			}
		}
		if st.env == pipeline.Email {
			check("SMTP_SECRET_ARN", vars["SMTP_SECRET_ARN"], "Ref:SmtpSecretArn")
			check("SMTP_TLS", vars["SMTP_TLS"], "Ref:SmtpTls")
		}
		if len(fn.Events) != 0 || fn.Policies != nil {
			t.Errorf("%sFunction: Events/Policies would make SAM generate event sources or policies beside the explicit ones", st.name)
		}
		if fn.Timeout == nil {
			t.Errorf("%sFunction has no Timeout", st.name)
		}
	}
	t.Logf("3 functions: bootstrap on provided.al2023/arm64, STAGE payment|inventory|email, own role, DSN from the secret")
}

func TestSharedParameters(t *testing.T) {
	tpl := parse(t)
	key, ok := tpl.Parameters["MessageSigningKey"]
	if !ok {
		t.Fatal("no MessageSigningKey parameter")
	}
	if key.NoEcho == nil || !*key.NoEcho {
		t.Error("MessageSigningKey is not NoEcho: the key would show in the stack's description")
	}
	if key.Default != "" {
		t.Errorf("MessageSigningKey defaults to %q, want empty (no signing, as the server's default)", key.Default)
	}
	// CloudFormation matches the whole value against AllowedPattern.
	pattern := regexp.MustCompile(`^(?:` + deref(key.AllowedPattern) + `)$`)
	for _, k := range []string{"", strings.Repeat("k", 32)} {
		if !pattern.MatchString(k) {
			t.Errorf("MessageSigningKey: pattern %s refuses a %d-byte key", pattern, len(k))
		}
	}
	if pattern.MatchString(strings.Repeat("k", 31)) {
		t.Errorf("MessageSigningKey: pattern %s takes a 31-byte key the functions refuse at start", pattern)
	}
	gw, ok := tpl.Parameters["PaymentGateway"]
	if !ok {
		t.Fatal("no PaymentGateway parameter")
	}
	var allowed []string
	for _, v := range gw.AllowedValues {
		allowed = append(allowed, fmt.Sprint(v))
	}
	if !slices.Equal(allowed, app.PaymentGateways) || gw.Default != app.GatewaySimulated {
		t.Errorf("PaymentGateway: allowed %v default %v, want %v default %q", allowed, gw.Default, app.PaymentGateways, app.GatewaySimulated)
	}
	t.Logf("MessageSigningKey is NoEcho, empty or 32+ bytes; PaymentGateway allows %v", app.PaymentGateways)
}

func TestEachFunctionConsumesItsQueueWithPartialBatchResponses(t *testing.T) {
	tpl := parse(t)
	mappings := tpl.GetAllLambdaEventSourceMappingResources()
	if len(mappings) != len(stages) {
		t.Errorf("%d event source mappings, want %d", len(mappings), len(stages))
	}
	fns := tpl.GetAllServerlessFunctionResources()
	for _, st := range stages {
		var found int
		for id, m := range mappings {
			if m.FunctionName != "Ref:"+st.name+"Function" {
				continue
			}
			found++
			if got, want := deref(m.EventSourceArn), "GetAtt:"+st.name+"Queue.Arn"; got != want {
				t.Errorf("%s: event source %q, want %q", id, got, want)
			}
			if !slices.Equal(m.FunctionResponseTypes, []string{"ReportBatchItemFailures"}) {
				t.Errorf("%s: FunctionResponseTypes %v, want [ReportBatchItemFailures]", id, m.FunctionResponseTypes)
			}
			// Handle answers for at most ten records a call: larger SQS batches need a window.
			if m.BatchSize == nil || *m.BatchSize < 1 || *m.BatchSize > 10 {
				t.Errorf("%s: BatchSize %v, want 1..10", id, m.BatchSize)
			}
			if m.MaximumBatchingWindowInSeconds == nil {
				t.Errorf("%s: no MaximumBatchingWindowInSeconds", id)
			}
			if m.Enabled != nil && !*m.Enabled {
				t.Errorf("%s is disabled", id)
			}
		}
		if found != 1 {
			t.Errorf("%sFunction has %d event sources, want 1", st.name, found)
		}
		// AWS: a queue's visibility timeout should be at least six times the function's.
		q, err := tpl.GetSQSQueueWithName(st.name + "Queue")
		if err != nil {
			t.Fatal(err)
		}
		if fn := fns[st.name+"Function"]; q.VisibilityTimeout == nil || fn.Timeout == nil || *q.VisibilityTimeout < 6**fn.Timeout {
			t.Errorf("%sQueue: VisibilityTimeout %v is under 6 × the function timeout %v", st.name, q.VisibilityTimeout, fn.Timeout)
		}
	}
	t.Logf("each function: one mapping from its own queue, ReportBatchItemFailures, batch ≤ 10 with a batching window")
}

func TestEveryQueueHasADeadLetterQueue(t *testing.T) {
	tpl := parse(t)
	all := tpl.GetAllSQSQueueResources()
	if len(all) != 2*len(stages) {
		t.Errorf("%d queues, want %d (the stage queues and their DLQs)", len(all), 2*len(stages))
	}
	for _, st := range stages {
		q, err := tpl.GetSQSQueueWithName(st.name + "Queue")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := deref(q.QueueName), "Sub:${QueuePrefix}"+st.queue; got != want {
			t.Errorf("%sQueue: name %q, want %q (the name the relay publishes to)", st.name, got, want)
		}
		policy, _ := q.RedrivePolicy.(map[string]any)
		if policy == nil {
			t.Errorf("%sQueue has no RedrivePolicy", st.name)
			continue
		}
		if got, want := policy["deadLetterTargetArn"], "GetAtt:"+st.name+"DeadLetterQueue.Arn"; got != want {
			t.Errorf("%sQueue: deadLetterTargetArn %v, want %v", st.name, got, want)
		}
		if n, ok := policy["maxReceiveCount"].(float64); !ok || n < 1 {
			t.Errorf("%sQueue: maxReceiveCount %v", st.name, policy["maxReceiveCount"])
		}
		dlq, err := tpl.GetSQSQueueWithName(st.name + "DeadLetterQueue")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := deref(dlq.QueueName), "Sub:${QueuePrefix}"+st.queue+queues.DLQSuffix; got != want {
			t.Errorf("%sDeadLetterQueue: name %q, want %q (the name `orderd dlq` reads)", st.name, got, want)
		}
		if dlq.RedrivePolicy != nil {
			t.Errorf("%sDeadLetterQueue has a RedrivePolicy of its own", st.name)
		}
	}
	t.Logf("3 stage queues, each with a RedrivePolicy to its own DLQ; names match the code's")
}

// grant is one allowed action on one resource.
type grant struct{ action, resource string }

// leastGrants is exactly what one stage's function needs. No sqs:SendMessage at all: the
// relay on the API server publishes every next event from the outbox, and records that can
// never succeed are moved to the DLQ by SQS's RedrivePolicy, not sent by the function.
func leastGrants(name string) []grant {
	var g []grant
	add := func(resource string, actions ...string) {
		for _, a := range actions {
			g = append(g, grant{a, resource})
		}
	}
	add("GetAtt:"+name+"Queue.Arn", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
	add("Ref:DBSecretArn", "secretsmanager:GetSecretValue")
	if name == "Email" { // the SMTP login, which only the email stage uses
		add("Ref:SmtpSecretArn", "secretsmanager:GetSecretValue")
	}
	add("GetAtt:"+name+"FunctionLogGroup.Arn", "logs:CreateLogStream", "logs:PutLogEvents")
	add("*", "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
		"ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses")
	return g
}

// policyDoc is the part of an IAM policy document the check reads; anything else in a
// statement (NotAction, Condition, Deny, ...) is refused rather than misread.
type policyDoc struct {
	Statement []map[string]json.RawMessage
}

func TestEachRoleGrantsExactlyTheLeastSet(t *testing.T) {
	tpl := parse(t)
	roles := tpl.GetAllIAMRoleResources()
	if len(roles) != len(stages) {
		t.Errorf("%d roles, want one per function", len(roles))
	}
	for _, st := range stages {
		id := st.name + "FunctionRole"
		role, err := tpl.GetIAMRoleWithName(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(role.ManagedPolicyArns) != 0 {
			t.Errorf("%s: managed policies %v grant more than the inline least set", id, role.ManagedPolicyArns)
		}
		trust := grantsOf(t, id+" trust", role.AssumeRolePolicyDocument)
		if !slices.Equal(trust, []grant{{"sts:AssumeRole", "principal"}}) {
			t.Errorf("%s: trust policy %v", id, trust)
		}
		if p := principal(role.AssumeRolePolicyDocument); p != "lambda.amazonaws.com" {
			t.Errorf("%s: assumable by %q, want lambda.amazonaws.com only", id, p)
		}
		var got []grant
		for _, p := range role.Policies {
			got = append(got, grantsOf(t, id+"/"+p.PolicyName, p.PolicyDocument)...)
		}
		want := leastGrants(st.name)
		sortGrants(got)
		sortGrants(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s grants\n  %v\nwant exactly\n  %v", id, got, want)
		}
	}
	t.Logf("each role: receive/delete/get-attributes on its own queue, the DB secret, its log group, VPC ENIs; no SendMessage")
}

// grantsOf flattens a policy document into (action, resource) pairs of Allow statements.
func grantsOf(t *testing.T, where string, doc any) []grant {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var d policyDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: policy document: %v", where, err)
	}
	var out []grant
	for _, s := range d.Statement {
		for k := range s {
			if !slices.Contains([]string{"Effect", "Action", "Resource", "Principal", "Sid"}, k) {
				t.Errorf("%s: statement key %s is not allowed here", where, k)
			}
		}
		if effect := strings.Trim(string(s["Effect"]), `"`); effect != "Allow" {
			t.Errorf("%s: Effect %s", where, effect)
		}
		resources := []string{"principal"}
		if _, ok := s["Principal"]; !ok {
			resources = stringList(t, where, s["Resource"])
		}
		for _, a := range stringList(t, where, s["Action"]) {
			for _, r := range resources {
				out = append(out, grant{a, r})
			}
		}
	}
	return out
}

func principal(doc any) string {
	b, _ := json.Marshal(doc)
	var d struct {
		Statement []struct{ Principal map[string]any }
	}
	_ = json.Unmarshal(b, &d)
	if len(d.Statement) != 1 || len(d.Statement[0].Principal) != 1 {
		return fmt.Sprint(d.Statement)
	}
	return fmt.Sprint(d.Statement[0].Principal["Service"])
}

func stringList(t *testing.T, where string, raw json.RawMessage) []string {
	t.Helper()
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil || len(many) == 0 {
		t.Fatalf("%s: want a string or a list of strings, got %s", where, raw)
	}
	return many
}

func sortGrants(g []grant) {
	slices.SortFunc(g, func(a, b grant) int {
		if c := strings.Compare(a.action, b.action); c != 0 {
			return c
		}
		return strings.Compare(a.resource, b.resource)
	})
}

func TestNoLiteralAccountIDs(t *testing.T) {
	if m := regexp.MustCompile(`\b\d{12}\b`).FindAll(Template, -1); len(m) > 0 {
		t.Errorf("template names account ids %q: use ${AWS::AccountId} or !GetAtt … .Arn", m)
	}
	if m := regexp.MustCompile(`arn:aws:[a-z0-9-]+:[a-z0-9-]*:\d`).FindAll(Template, -1); len(m) > 0 {
		t.Errorf("template has literal ARNs %q", m)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
