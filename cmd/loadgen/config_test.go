package main

import (
	"errors"
	"io"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.target != "orderd" || cfg.n != 1000 || cfg.c != 16 || cfg.rounds != 1 || cfg.rate != 0 ||
		cfg.timeout != time.Minute || cfg.orderdURL != "http://127.0.0.1:8080" ||
		cfg.orderdDSN != "root@tcp(127.0.0.1:3306)/orderd" || cfg.sqsEndpoint != "http://127.0.0.1:4100" ||
		cfg.peerPort != 3000 || cfg.peerDB != "sqs_test" || cfg.peerPrefix != "peer-" || !cfg.peerStart {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg.peerDSN != "root@tcp(127.0.0.1:3306)/sqs_test" || cfg.peerPIDs != "/tmp/loadgen-peer-3000.pids" {
		t.Errorf("derived peer settings: dsn %q, pids %q", cfg.peerDSN, cfg.peerPIDs)
	}
}

func TestParseConfigTakesServiceDefaultsFromEnvironment(t *testing.T) {
	env := map[string]string{
		"SQS_ENDPOINT": "http://127.0.0.1:4300",
		"API_URL":      "http://127.0.0.1:9090",
		"MYSQL_DSN":    "root@tcp(127.0.0.1:3306)/orderd_bench",
		"RDS_DATABASE": "sqs_other",
	}
	cfg, err := parseConfig([]string{"-peer-port", "3300", "-orders", "50"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.sqsEndpoint != env["SQS_ENDPOINT"] || cfg.orderdURL != env["API_URL"] || cfg.orderdDSN != env["MYSQL_DSN"] {
		t.Errorf("env defaults not used: %+v", cfg)
	}
	if cfg.peerDSN != "root@tcp(127.0.0.1:3306)/sqs_other" || cfg.peerLog != "/tmp/loadgen-peer-3300.log" || cfg.n != 50 {
		t.Errorf("derived: dsn %q, log %q, n %d", cfg.peerDSN, cfg.peerLog, cfg.n)
	}
}

func TestParseConfigRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-n", "0"},
		{"-c", "0"},
		{"-rate", "-1"},
		{"-rounds", "0"},
		{"-target", "seed"},
		{"-timeout", "0s"},
		{"-serial", "-rate", "5"},
		{"-orderd-env", "NOEQUALS"},
		{"-smtp-sink"}, // without -orderd-bin there is no orderd to point at it
		{"-smtp-sink", "-orderd-bin", "bin/orderd", "-target", "peer"},
		{"-smtp-sink", "-orderd-bin", "bin/orderd", "-orderd-env", "SMTP_ADDR=127.0.0.1:1025"},
		{"-orderd-dsn", "not a dsn"},
		{"-nosuchflag"},
		{"extra"},
	} {
		_, err := parseConfig(args, noEnv, io.Discard)
		if !errors.As(err, new(usageError)) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

func TestOrderdEnvLetsExplicitSettingsWin(t *testing.T) {
	cfg, err := parseConfig([]string{"-url", "http://127.0.0.1:8181", "-orderd-env", "HTTP_ADDR=0.0.0.0:8181"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	env, err := orderdEnv(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// exec uses the last value of a repeated key: -orderd-env must come after the derived one
	last := map[string]string{}
	for _, kv := range env {
		for i := range len(kv) {
			if kv[i] == '=' {
				last[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	if last["HTTP_ADDR"] != "0.0.0.0:8181" || last["MYSQL_DSN"] != cfg.orderdDSN || last["SQS_ENDPOINT"] != cfg.sqsEndpoint {
		t.Errorf("HTTP_ADDR %q, MYSQL_DSN %q, SQS_ENDPOINT %q", last["HTTP_ADDR"], last["MYSQL_DSN"], last["SQS_ENDPOINT"])
	}
	// The benchmark's clients are one address placing as fast as they can.
	if last["PLACEMENT_RATE_LIMIT"] != "0" {
		t.Errorf("PLACEMENT_RATE_LIMIT %q, want 0 (off)", last["PLACEMENT_RATE_LIMIT"])
	}
}
