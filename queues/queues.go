// Package queues sets up the SQS side: the AWS configuration, the stage queues with
// their dead-letter queues, and Watermill publishers and subscribers over them.
package queues

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go/middleware"

	"orderd/pipeline"
)

// DLQSuffix names a queue's dead-letter queue.
const DLQSuffix = "-DLQ"

// Config says where SQS is and how queues behave.
type Config struct {
	// Endpoint is an SQS-compatible endpoint (goaws, local-aws-sqs); empty means real AWS
	// with the default credential chain.
	Endpoint string
	// Emulator names the emulator at Endpoint whose departures from SQS are worked around
	// (see Emulator); empty for AWS and for implementations that follow SQS.
	Emulator Emulator
	Region   string
	Prefix   string
	// VisibilityTimeout is how long a received message stays hidden before SQS hands it out
	// again; it must outlast a handler's retries.
	VisibilityTimeout time.Duration
	// MaxReceiveCount is how many receives a message gets before SQS moves it to the DLQ.
	MaxReceiveCount int
	// Pipeline is the pipeline whose stage queues these are; nil is pipeline.Default().
	Pipeline *pipeline.Pipeline
}

// Stages returns the pipeline whose stage queues these are.
func (c Config) Stages() *pipeline.Pipeline {
	if c.Pipeline == nil {
		return pipeline.Default()
	}
	return c.Pipeline
}

// Name returns the prefixed name of queue.
func (c Config) Name(queue string) string { return c.Prefix + queue }

// All returns the prefixed names of the stage queues, from the pipeline.
func (c Config) All() []string {
	out := c.Stages().Queues()
	for i, q := range out {
		out[i] = c.Name(q)
	}
	return out
}

// AWSConfig builds the AWS SDK configuration: static dummy credentials against an emulator,
// the default credential chain against AWS, and an HTTP client that does not lose replies
// (see httpClient) and, against goaws only, reads its replies as SQS's (see Emulator).
func AWSConfig(ctx context.Context, c Config) (aws.Config, error) {
	if c.Emulator != NoEmulator && c.Endpoint == "" {
		return aws.Config{}, fmt.Errorf("SQS emulator %s named without its endpoint", c.Emulator)
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.Region)}
	if c.Endpoint != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
	}
	// Wrapped after loading, which may have configured a client (AWS_CA_BUNDLE, say).
	inner := cfg.HTTPClient
	if inner == nil {
		inner = awshttp.NewBuildableClient()
	}
	cfg.HTTPClient = c.Emulator.httpClient(httpClient{inner: inner})
	return cfg, nil
}

// NewClient returns an SQS client for c; opts adjust it (CountRequests).
func NewClient(awsCfg aws.Config, c Config, opts ...func(*sqs.Options)) *sqs.Client {
	return sqs.NewFromConfig(awsCfg, append(endpointOpts(c), opts...)...)
}

// CountRequests returns a client option that calls count with the operation's name for every
// HTTP request the client sends (a retried call counts each attempt): what the SQS bill and
// the emulator's CPU follow.
func CountRequests(count func(operation string)) func(*sqs.Options) {
	return func(o *sqs.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("CountRequests",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					count(awsmiddleware.GetOperationName(ctx))
					return next.HandleFinalize(ctx, in)
				}), middleware.After)
		})
	}
}

func endpointOpts(c Config) []func(*sqs.Options) {
	if c.Endpoint == "" {
		return nil
	}
	return []func(*sqs.Options){func(o *sqs.Options) { o.BaseEndpoint = aws.String(c.Endpoint) }}
}

// Ensure creates the stage queues and their dead-letter queues if they are missing.
// CreateQueue is idempotent for equal attributes. Dead-letter queues come first because a
// RedrivePolicy must name an existing queue's ARN.
func Ensure(ctx context.Context, client *sqs.Client, c Config) error {
	for _, q := range c.All() {
		dlqURL, err := create(ctx, client, q+DLQSuffix, map[string]string{"MessageRetentionPeriod": "1209600"})
		if err != nil {
			return err
		}
		attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl: aws.String(dlqURL), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
		})
		if err != nil {
			return fmt.Errorf("read ARN of %s: %w", q+DLQSuffix, err)
		}
		// The policy goes in as one JSON attribute: the separate DeadLetterTargetArn and
		// MaxReceiveCount fields of watermill-aws's QueueConfigAttributes produce invalid input.
		policy, err := json.Marshal(map[string]string{
			"deadLetterTargetArn": attrs.Attributes[string(types.QueueAttributeNameQueueArn)],
			"maxReceiveCount":     strconv.Itoa(c.MaxReceiveCount),
		})
		if err != nil {
			return err
		}
		if _, err := create(ctx, client, q, map[string]string{
			"RedrivePolicy":     string(policy),
			"VisibilityTimeout": strconv.Itoa(int(c.VisibilityTimeout.Seconds())),
		}); err != nil {
			return err
		}
	}
	return nil
}

func create(ctx context.Context, client *sqs.Client, name string, attrs map[string]string) (string, error) {
	out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	var exists *types.QueueNameExists
	if errors.As(err, &exists) {
		// The queue exists with other attributes (VISIBILITY_TIMEOUT changed): bring them in line.
		url, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err != nil {
			return "", fmt.Errorf("find queue %s: %w", name, err)
		}
		if _, err := client.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: url.QueueUrl, Attributes: attrs}); err != nil {
			return "", fmt.Errorf("update attributes of queue %s: %w", name, err)
		}
		return aws.ToString(url.QueueUrl), nil
	}
	if err != nil {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// NewPublisher returns a Watermill publisher whose topics are queue names. Queues are never
// created on publish: Ensure made them with their dead-letter queue and attributes, which a
// queue made on publish would lack (and goaws answers a missing queue in a way watermill-aws
// cannot handle).
func NewPublisher(awsCfg aws.Config, c Config, log *slog.Logger) (*wsqs.Publisher, error) {
	pub, err := wsqs.NewPublisher(wsqs.PublisherConfig{
		AWSConfig:                   awsCfg,
		OptFns:                      endpointOpts(c),
		DoNotCreateQueueIfNotExists: true,
		Marshaler:                   wsqs.DefaultMarshalerUnmarshaler{},
	}, watermill.NewSlogLogger(log)) // a nil logger makes the first Publish panic
	if err != nil {
		return nil, fmt.Errorf("new SQS publisher: %w", err)
	}
	return pub, nil
}

// Ping checks that SQS answers and the first stage's queue exists.
func Ping(ctx context.Context, client *sqs.Client, c Config) error {
	if _, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(c.All()[0])}); err != nil {
		return fmt.Errorf("SQS: %w", err)
	}
	return nil
}
