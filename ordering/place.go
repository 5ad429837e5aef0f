// Package ordering holds the use cases of the order pipeline: placing an order and the
// stages that move it on (the built-in payment, inventory and email, and Stages.Take for any
// other). It wires the domain's decisions to the event log and to the outside world
// (gateway, stock, SMTP) through the small interfaces it declares (OrderLog, Prices,
// StageStore, Stock), so its decisions can be tested without MySQL; transports (HTTP,
// Watermill, Lambda) call it and know nothing of the rules.
package ordering

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"

	"orderd/domain"
	"orderd/eventstore"
	"orderd/tracing"
)

// Placer places orders.
type Placer struct {
	store   OrderLog
	catalog Prices
}

// OrderLog is what placing and reading orders needs of the event log (*eventstore.Store):
// open a stream (idempotently), and keep the hashes of the capabilities that read it.
type OrderLog interface {
	Create(ctx context.Context, req eventstore.CreateRequest, events []domain.Event) (domain.OrderID, error)
	GrantAccess(ctx context.Context, id domain.OrderID, hash []byte) error
	HasAccess(ctx context.Context, id domain.OrderID, hash []byte) (bool, error)
}

// Prices is what placing an order needs of the catalogue (*Catalog): the current unit
// price of each item, or an error naming an unknown one.
type Prices interface {
	Price(ctx context.Context, items []domain.Item) ([]domain.Item, error)
}

// NewPlacer returns a placer.
func NewPlacer(store OrderLog, catalog Prices) (*Placer, error) {
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

// Placed is what placing an order gave the customer.
type Placed struct {
	ID domain.OrderID
	// Created is false when the idempotency key was seen before with the same request: the
	// id is then the first request's.
	Created bool
	// Access is the order's capability: whoever holds it may read the order (and nothing
	// else). Only its hash is stored, so a replay of the request gets a new one; every one
	// issued stays valid.
	Access string
}

// Place validates, prices and records a new order, and issues its capability.
func (p *Placer) Place(ctx context.Context, req PlaceRequest) (Placed, error) {
	if err := req.Placement.Validate(); err != nil {
		return Placed{}, err
	}
	var err error
	if req.Placement.Items, err = p.catalog.Price(ctx, req.Placement.Items); err != nil {
		return Placed{}, err
	}
	events, err := domain.Place(req.Placement)
	if err != nil {
		return Placed{}, err
	}
	token, hash := newCapability()
	id, err := p.store.Create(ctx, eventstore.CreateRequest{
		IdempotencyKey: req.IdempotencyKey,
		RequestHash:    req.RequestHash,
		Metadata:       eventstore.Metadata{CorrelationID: req.CorrelationID, CausationID: req.CorrelationID, TraceParent: tracing.Parent(ctx)},
		AccessHash:     hash,
	}, events)
	switch {
	case errors.Is(err, eventstore.ErrAlreadyCreated):
		if err := p.store.GrantAccess(ctx, id, hash); err != nil {
			return Placed{}, err
		}
		return Placed{ID: id, Access: token}, nil
	case err != nil:
		return Placed{}, err
	}
	return Placed{ID: id, Created: true, Access: token}, nil
}

// CanRead reports whether token is a capability of order id. A token that is not of the
// form Place issues is refused without asking the database.
func (p *Placer) CanRead(ctx context.Context, id domain.OrderID, token string) (bool, error) {
	if !wellFormedCapability(token) {
		return false, nil
	}
	sum := sha256.Sum256([]byte(token))
	return p.store.HasAccess(ctx, id, sum[:])
}

// newCapability returns a new capability token (crypto/rand.Text: 26 base32 characters, 130
// random bits, safe in a URL as it is) and the SHA-256 of it, which is all that is stored.
func newCapability() (token string, hash []byte) {
	token = rand.Text()
	sum := sha256.Sum256([]byte(token))
	return token, sum[:]
}

// wellFormedCapability reports whether token looks like one newCapability makes.
func wellFormedCapability(token string) bool {
	if len(token) != 26 {
		return false
	}
	for _, c := range token {
		if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
