package main

// Checks docker-compose.yml against orderd's configuration without needing Docker: a typo
// in an environment key, or an endpoint that names the wrong service or port, fails here
// instead of at `docker compose up` on a user's machine.

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/go-sql-driver/mysql"
	"go.yaml.in/yaml/v4"
)

const composeFile = "docker-compose.yml"

// Services docker-compose.yml must define, and which of them only run under a profile.
var (
	composeServices  = []string{"mysql", "goaws", "mailpit", "orderd", "tests"}
	profiledServices = map[string]string{"tests": "test"}
)

// Environment keys the compose file may give orderd besides its own configKeys: read by
// the AWS SDK, not by orderd's configuration.
var awsSDKKeys = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

// repoRoot is the project directory: go test runs in cmd/orderd.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// loadCompose loads docker-compose.yml the way `docker compose` does, with the given
// profiles enabled ("*" = all). The process environment is deliberately not used for
// interpolation, so the defaults written in the file are what is checked.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, composeFile)},
		cli.WithWorkingDirectory(root),
		cli.WithName("orderd"),
		cli.WithProfiles(profiles),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%s does not load as a compose project: %v", composeFile, err)
	}
	return project
}

func TestComposeFile(t *testing.T) {
	all := loadCompose(t, "*")
	services := map[string]types.ServiceConfig{}
	for _, name := range composeServices {
		s, err := all.GetService(name)
		if err != nil {
			t.Errorf("%s: service %q is missing: %v", composeFile, name, err)
			continue
		}
		services[name] = s
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("profiles", func(t *testing.T) {
		// Plain `docker compose up` must start everything but the profiled services.
		plain := loadCompose(t)
		for _, name := range composeServices {
			profile, profiled := profiledServices[name]
			_, enabled := plain.Services[name]
			switch {
			case profiled && enabled:
				t.Errorf("service %q runs on plain `docker compose up`; give it `profiles: [%q]`", name, profile)
			case profiled && !slices.Contains(services[name].Profiles, profile):
				t.Errorf("service %q: profiles = %v, want it to contain %q", name, services[name].Profiles, profile)
			case !profiled && !enabled:
				t.Errorf("service %q does not run on plain `docker compose up` (profiles %v)", name, services[name].Profiles)
			}
		}
	})

	orderd := services["orderd"]
	env := environment(t, "orderd", orderd)

	t.Run("orderd environment keys", func(t *testing.T) {
		if len(configKeys) == 0 {
			t.Fatal("configKeys is empty")
		}
		for key := range env {
			if !slices.Contains(configKeys, key) && !slices.Contains(awsSDKKeys, key) {
				t.Errorf("service orderd: environment key %q is not an orderd configuration key (typo?); known keys: %s",
					key, strings.Join(configKeys, ", "))
			}
		}
	})

	t.Run("orderd loadConfig", func(t *testing.T) {
		if _, err := loadConfig(func(key string) string { return env[key] }); err != nil {
			t.Errorf("loadConfig rejects the environment of service orderd in %s: %v", composeFile, err)
		}
	})

	t.Run("orderd endpoints", func(t *testing.T) {
		checkMySQLDSN(t, "orderd", "MYSQL_DSN", env, services["mysql"], true)
		checkSQSEndpoint(t, "orderd", env, services["goaws"])
		checkSMTPAddr(t, "orderd", env, services["mailpit"])
	})

	t.Run("orderd HTTP port published", func(t *testing.T) {
		addr, ok := env["HTTP_ADDR"]
		if !ok {
			t.Fatal("service orderd: HTTP_ADDR is not set; orderd's default listens on 127.0.0.1 only, unreachable from outside the container")
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("service orderd: HTTP_ADDR=%q is not host:port: %v", addr, err)
		}
		if host != "" && host != "0.0.0.0" && host != "::" {
			t.Errorf("service orderd: HTTP_ADDR=%q listens on %s only; use 0.0.0.0:%s so the published port reaches it", addr, host, port)
		}
		if !publishes(orderd, port) {
			t.Errorf("service orderd: HTTP_ADDR port %s is not published (ports: %s)", port, describePorts(orderd))
		}
	})

	t.Run("orderd depends on healthy services", func(t *testing.T) {
		checkDependsOnHealthy(t, "orderd", orderd, services, "mysql", "goaws", "mailpit")
	})

	t.Run("orderd build", func(t *testing.T) {
		if orderd.Build == nil {
			t.Fatal("service orderd: no build section; it must be built from the Dockerfile")
		}
		dockerfile := orderd.Build.Dockerfile
		if dockerfile == "" {
			dockerfile = "Dockerfile"
		}
		if !filepath.IsAbs(dockerfile) {
			dockerfile = filepath.Join(orderd.Build.Context, dockerfile)
		}
		if _, err := os.Stat(dockerfile); err != nil {
			t.Errorf("service orderd: Dockerfile: %v", err)
		}
	})

	t.Run("tests endpoints", func(t *testing.T) {
		tests := services["tests"]
		tenv := environment(t, "tests", tests)
		checkMySQLDSN(t, "tests", "TEST_MYSQL_DSN", tenv, services["mysql"], false)
		checkSQSEndpoint(t, "tests", tenv, services["goaws"])
		checkSMTPAddr(t, "tests", tenv, services["mailpit"])
		checkMailpitURL(t, "tests", tenv, services["mailpit"])
		for _, key := range []string{"SQS_ENDPOINT", "SMTP_ADDR"} {
			if tenv[key] != env[key] {
				t.Errorf("service tests: %s=%q, but service orderd has %q", key, tenv[key], env[key])
			}
		}
		checkDependsOnHealthy(t, "tests", tests, services, "mysql", "goaws", "mailpit")
	})
}

// environment returns a service's environment; a key without a value (passed through
// from the host) is an error: it would make the setup depend on the user's shell.
func environment(t *testing.T, name string, s types.ServiceConfig) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		if v == nil {
			t.Errorf("service %s: environment key %q has no value", name, k)
			continue
		}
		env[k] = *v
	}
	return env
}

// containerPorts are the ports a service listens on inside the network, as declared by
// its `ports` (targets) and `expose`.
func containerPorts(s types.ServiceConfig) []string {
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, strconv.Itoa(int(p.Target)))
	}
	for _, e := range s.Expose {
		ports = append(ports, strings.SplitN(e, "/", 2)[0])
	}
	return ports
}

func publishes(s types.ServiceConfig, port string) bool {
	for _, p := range s.Ports {
		if strconv.Itoa(int(p.Target)) == port && p.Published != "" {
			return true
		}
	}
	return false
}

func describePorts(s types.ServiceConfig) string {
	var out []string
	for _, p := range s.Ports {
		out = append(out, fmt.Sprintf("%s:%s->%d", p.HostIP, p.Published, p.Target))
	}
	for _, e := range s.Expose {
		out = append(out, "expose "+e)
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// checkHostPort: addr must be service:port with port one the service listens on.
func checkHostPort(t *testing.T, from, key, hostport, service string, target types.ServiceConfig, wantPort string) {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("service %s: %s: %q is not host:port: %v", from, key, hostport, err)
		return
	}
	if host != service {
		t.Errorf("service %s: %s points at host %q, want the %s service (%q)", from, key, host, service, service)
	}
	if !slices.Contains(containerPorts(target), port) {
		t.Errorf("service %s: %s uses port %s, but service %s declares ports %s", from, key, port, service, describePorts(target))
	}
	if wantPort != "" && port != wantPort {
		t.Errorf("service %s: %s uses port %s, but %s listens on %s", from, key, port, service, wantPort)
	}
}

func checkMySQLDSN(t *testing.T, from, key string, env map[string]string, mysqlSvc types.ServiceConfig, wantDB bool) {
	t.Helper()
	dsn, ok := env[key]
	if !ok {
		t.Errorf("service %s: %s is not set", from, key)
		return
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Errorf("service %s: %s=%q is not a valid go-sql-driver DSN: %v", from, key, dsn, err)
		return
	}
	if cfg.Net != "tcp" {
		t.Errorf("service %s: %s=%q uses network %q, want tcp(mysql:3306)", from, key, dsn, cfg.Net)
	}
	checkHostPort(t, from, key, cfg.Addr, "mysql", mysqlSvc, "")
	menv := environment(t, "mysql", mysqlSvc)
	if cfg.Passwd != menv["MYSQL_ROOT_PASSWORD"] && cfg.User == "root" {
		t.Errorf("service %s: %s has root password %q, but service mysql sets MYSQL_ROOT_PASSWORD=%q",
			from, key, cfg.Passwd, menv["MYSQL_ROOT_PASSWORD"])
	}
	switch {
	case wantDB && cfg.DBName != menv["MYSQL_DATABASE"]:
		t.Errorf("service %s: %s names database %q, but service mysql creates MYSQL_DATABASE=%q",
			from, key, cfg.DBName, menv["MYSQL_DATABASE"])
	case !wantDB && cfg.DBName != "":
		// Tests create and drop databases of their own: they get a server, not a database.
		t.Errorf("service %s: %s=%q names a database; tests expect none (root@tcp(mysql:3306)/)", from, key, dsn)
	}
}

func checkSQSEndpoint(t *testing.T, from string, env map[string]string, goaws types.ServiceConfig) {
	t.Helper()
	raw, ok := env["SQS_ENDPOINT"]
	if !ok || raw == "" {
		t.Errorf("service %s: SQS_ENDPOINT is not set: it would use real AWS", from)
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		t.Errorf("service %s: SQS_ENDPOINT=%q, want http://goaws:<port>", from, raw)
		return
	}
	checkHostPort(t, from, "SQS_ENDPOINT", u.Host, "goaws", goaws, goawsPort(t, goaws))
}

// goawsPort reads the port goaws listens on from the config file the goaws service
// mounts and the config section its command selects (goaws always binds 0.0.0.0).
func goawsPort(t *testing.T, goaws types.ServiceConfig) string {
	t.Helper()
	// goaws's flags: -config FILE, -loglevel LEVEL, -debug; then an optional section name.
	args := []string(goaws.Command)
	var configPath, section string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-"):
			section = a
		case name == "config" || name == "loglevel":
			if !hasValue && i+1 < len(args) {
				i++
				value = args[i]
			}
			if name == "config" {
				configPath = value
			}
		}
	}
	if configPath == "" {
		t.Errorf("service goaws: command %q has no -config", args)
		return ""
	}
	if section == "" {
		section = "Local" // goaws's default
	}
	var hostFile string
	for _, v := range goaws.Volumes {
		if v.Target == configPath {
			hostFile = v.Source
		}
	}
	if hostFile == "" {
		t.Errorf("service goaws: -config %s is not a mounted file (volumes: %v)", configPath, goaws.Volumes)
		return ""
	}
	data, err := os.ReadFile(hostFile)
	if err != nil {
		t.Errorf("service goaws: config: %v", err)
		return ""
	}
	var conf map[string]struct {
		Port    any `yaml:"Port"`
		SqsPort any `yaml:"SqsPort"`
	}
	if err := yaml.Unmarshal(data, &conf); err != nil {
		t.Errorf("service goaws: %s: %v", hostFile, err)
		return ""
	}
	sec, ok := conf[section]
	if !ok {
		t.Errorf("service goaws: %s has no section %q (selected by its command)", hostFile, section)
		return ""
	}
	switch {
	case sec.Port != nil:
		return fmt.Sprint(sec.Port)
	case sec.SqsPort != nil:
		return fmt.Sprint(sec.SqsPort)
	}
	return "4100" // goaws's default
}

// mailpitPort is the port of a Mailpit listen address (MP_SMTP_BIND_ADDR,
// MP_UI_BIND_ADDR), or def when it is not set.
func mailpitPort(t *testing.T, mailpit types.ServiceConfig, key, def string) string {
	t.Helper()
	addr, ok := environment(t, "mailpit", mailpit)[key]
	if !ok {
		return def
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("service mailpit: %s=%q is not host:port: %v", key, addr, err)
		return def
	}
	return port
}

func checkSMTPAddr(t *testing.T, from string, env map[string]string, mailpit types.ServiceConfig) {
	t.Helper()
	addr, ok := env["SMTP_ADDR"]
	if !ok {
		t.Errorf("service %s: SMTP_ADDR is not set", from)
		return
	}
	checkHostPort(t, from, "SMTP_ADDR", addr, "mailpit", mailpit, mailpitPort(t, mailpit, "MP_SMTP_BIND_ADDR", "1025"))
}

func checkMailpitURL(t *testing.T, from string, env map[string]string, mailpit types.ServiceConfig) {
	t.Helper()
	raw, ok := env["MAILPIT_URL"]
	if !ok {
		t.Errorf("service %s: MAILPIT_URL is not set", from)
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		t.Errorf("service %s: MAILPIT_URL=%q, want http://mailpit:<port>", from, raw)
		return
	}
	checkHostPort(t, from, "MAILPIT_URL", u.Host, "mailpit", mailpit, mailpitPort(t, mailpit, "MP_UI_BIND_ADDR", "8025"))
}

func checkDependsOnHealthy(t *testing.T, from string, s types.ServiceConfig, services map[string]types.ServiceConfig, deps ...string) {
	t.Helper()
	for _, dep := range deps {
		d, ok := s.DependsOn[dep]
		if !ok {
			t.Errorf("service %s: does not depend on %s", from, dep)
			continue
		}
		if d.Condition != types.ServiceConditionHealthy {
			t.Errorf("service %s: depends on %s with condition %q, want %q", from, dep, d.Condition, types.ServiceConditionHealthy)
		}
		hc := services[dep].HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) == 0 {
			t.Errorf("service %s: has no healthcheck, so %q never holds for %s", dep, types.ServiceConditionHealthy, from)
		}
	}
}

// .env.example documents every configuration key, and only those, with values that
// loadConfig accepts.
func TestEnvExample(t *testing.T) {
	const name = ".env.example"
	data, err := os.ReadFile(filepath.Join(repoRoot(t), name))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s:%d: %q is not KEY=value", name, i+1, line)
			continue
		}
		if len(value) >= 2 && (value[0] == '\'' || value[0] == '"') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		if !slices.Contains(configKeys, key) && !slices.Contains(awsSDKKeys, key) {
			t.Errorf("%s:%d: %s is not an orderd configuration key", name, i+1, key)
		}
		env[key] = value
	}
	for _, key := range configKeys {
		if _, ok := env[key]; !ok {
			t.Errorf("%s does not document %s", name, key)
		}
	}
	if _, err := loadConfig(func(key string) string { return env[key] }); err != nil {
		t.Errorf("loadConfig rejects the values in %s: %v", name, err)
	}
}
