// Package ordering holds the use cases of the order pipeline: placing an order and the three
// stages (payment, inventory, email) that move it on. It wires the domain's decisions to the
// event store and to the outside world (gateway, stock, SMTP); transports (HTTP, Watermill,
// Lambda) call it and know nothing of the rules.
package ordering

import (
	"context"
	"errors"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/tracing"
)

// Placer places orders.
type Placer struct {
	store   *eventstore.Store
	catalog *Catalog
}

// NewPlacer returns a placer.
func NewPlacer(store *eventstore.Store, catalog *Catalog) (*Placer, error) {
	if store == nil || catalog == nil {
		return nil, errors.New("ordering: NewPlacer needs a store and a catalogue")
	}
	return &Placer{store: store, catalog: catalog}, nil
}

// PlaceRequest is an order as a customer submitted it, with the request's idempotency key
// (if any), a hash of its body and the correlation id of the request.
type PlaceRequest struct {
	Placement      domain.Placement
	IdempotencyKey string
	RequestHash    string
	CorrelationID  string
}

// Place validates, prices and records a new order. created is false when the idempotency
// key was seen before with the same request: the id is then the first request's.
func (p *Placer) Place(ctx context.Context, req PlaceRequest) (id domain.OrderID, created bool, err error) {
	if err := req.Placement.Validate(); err != nil {
		return 0, false, err
	}
	if req.Placement.Items, err = p.catalog.Price(ctx, req.Placement.Items); err != nil {
		return 0, false, err
	}
	events, err := domain.Place(req.Placement)
	if err != nil {
		return 0, false, err
	}
	id, err = p.store.Create(ctx, eventstore.CreateRequest{
		IdempotencyKey: req.IdempotencyKey,
		RequestHash:    req.RequestHash,
		Metadata:       eventstore.Metadata{CorrelationID: req.CorrelationID, CausationID: req.CorrelationID, TraceParent: tracing.Parent(ctx)},
	}, events)
	if errors.Is(err, eventstore.ErrAlreadyCreated) {
		return id, false, nil
	}
	return id, err == nil, err
}
