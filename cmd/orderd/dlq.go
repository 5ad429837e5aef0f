package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"orderd/deadletter"
	"orderd/queues"
)

// dlq lists the dead-letter queues or sends their messages back to the stages.
func dlq(ctx context.Context, cfg config, args []string, stdout io.Writer) error {
	if len(args) != 1 || (args[0] != "list" && args[0] != "redrive") {
		return errors.New("usage: orderd dlq list|redrive")
	}
	qcfg := cfg.queues()
	awsCfg, err := queues.AWSConfig(ctx, qcfg)
	if err != nil {
		return err
	}
	admin, err := deadletter.NewAdmin(queues.NewClient(awsCfg, qcfg), qcfg)
	if err != nil {
		return err
	}
	if args[0] == "redrive" {
		n, err := admin.Redrive(ctx)
		fmt.Fprintf(stdout, "redrove %d message(s) to their stage queues\n", n)
		return err
	}
	msgs, err := admin.List(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	for _, m := range msgs {
		if err := enc.Encode(m); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%d dead-lettered message(s)\n", len(msgs))
	return nil
}
