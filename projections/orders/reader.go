package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"orderd/domain"
	"orderd/eventstore"
)

// Queryer is what the readers need of the database: a *sql.DB, or a *sql.Conn (a test that
// counts the rows a query reads runs it on one connection).
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Reader reads the orders projection.
type Reader struct{ db Queryer }

// NewReader returns a reader over db.
func NewReader(db Queryer) (*Reader, error) {
	if db == nil {
		return nil, errors.New("orders: nil db")
	}
	return &Reader{db: db}, nil
}

// Order returns the projected order, or a KindNotFound error.
func (rd *Reader) Order(ctx context.Context, id domain.OrderID) (_ OrderRow, err error) {
	defer eventstore.Classify(&err)
	row := rd.db.QueryRowContext(ctx, `SELECT `+Columns+` FROM orders WHERE order_id = ?`, id)
	r, err := scanRow(row)
	if errors.Is(err, sql.ErrNoRows) {
		return OrderRow{}, domain.NotFound("order %d does not exist", id)
	}
	if err != nil {
		return OrderRow{}, fmt.Errorf("read order %d: %w", id, err)
	}
	return r, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanRow(s scanner) (OrderRow, error) {
	var r OrderRow
	d := make([]any, len(TableColumns))
	for i, c := range TableColumns {
		switch p := c.Field(&r).(type) {
		case *string:
			if c.Nullable {
				d[i] = new(sql.NullString)
				continue
			}
			d[i] = p
		case *[]domain.Item:
			d[i] = new([]byte)
		default:
			d[i] = p
		}
	}
	if err := s.Scan(d...); err != nil {
		return OrderRow{}, err
	}
	for i, c := range TableColumns {
		switch p := c.Field(&r).(type) {
		case *string:
			if c.Nullable {
				*p = d[i].(*sql.NullString).String
			}
		case *[]domain.Item:
			if err := json.Unmarshal(*d[i].(*[]byte), p); err != nil {
				return OrderRow{}, fmt.Errorf("decode items of order %d: %w", r.OrderID, err)
			}
		}
	}
	return r, nil
}
