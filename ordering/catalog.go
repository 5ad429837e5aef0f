package ordering

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"orderd/domain"
	"orderd/eventstore"
)

// Catalog is the stock table: prices for placement, and reservations for the inventory
// stage. Stock is not a projection: it is state changed in the same transaction as the
// InventoryReserved event that records the change.
type Catalog struct{ db *sql.DB }

// NewCatalog returns the catalogue over db.
func NewCatalog(db *sql.DB) (*Catalog, error) {
	if db == nil {
		return nil, errors.New("ordering: nil db")
	}
	return &Catalog{db: db}, nil
}

// StockItem is one row of the stock table.
type StockItem struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"priceCents"`
	Available  int    `json:"available"`
	Reserved   int    `json:"reserved"`
}

// Price fills in the unit price of every item, or returns a KindInvalid error naming the
// first unknown SKU.
func (c *Catalog) Price(ctx context.Context, items []domain.Item) (_ []domain.Item, err error) {
	defer eventstore.Classify(&err)
	if len(items) == 0 {
		return items, nil
	}
	skus := make([]any, len(items))
	for i, it := range items {
		skus[i] = it.SKU
	}
	rows, err := c.db.QueryContext(ctx, `SELECT sku, price_cents FROM stock WHERE sku IN (`+eventstore.Placeholders(len(skus))+`)`, skus...)
	if err != nil {
		return nil, fmt.Errorf("price items: %w", err)
	}
	defer rows.Close()
	prices := make(map[string]int64, len(items))
	for rows.Next() {
		var sku string
		var p int64
		if err := rows.Scan(&sku, &p); err != nil {
			return nil, fmt.Errorf("price items: %w", err)
		}
		prices[sku] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("price items: %w", err)
	}
	out := make([]domain.Item, len(items))
	for i, it := range items {
		p, ok := prices[it.SKU]
		if !ok {
			return nil, domain.Invalid(fmt.Sprintf("items[%d].sku", i), "unknown SKU %q", it.SKU)
		}
		it.UnitPriceCents = p
		out[i] = it
	}
	return out, nil
}

// Reserve takes items out of available stock inside tx, all or nothing. Rows are locked in
// SKU order so that two orders sharing SKUs cannot deadlock.
func (c *Catalog) Reserve(ctx context.Context, tx eventstore.Tx, items []domain.Item) (domain.ReservationOutcome, error) {
	if len(items) == 0 {
		return domain.ReservationOutcome{Reserved: true}, nil
	}
	sorted := append([]domain.Item(nil), items...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].SKU < sorted[j].SKU })
	skus := make([]any, len(sorted))
	for i, it := range sorted {
		skus[i] = it.SKU
	}
	rows, err := tx.QueryContext(ctx, `SELECT sku, available FROM stock WHERE sku IN (`+eventstore.Placeholders(len(skus))+`) ORDER BY sku FOR UPDATE`, skus...)
	if err != nil {
		return domain.ReservationOutcome{}, fmt.Errorf("reserve stock: %w", err)
	}
	available := map[string]int{}
	for rows.Next() {
		var sku string
		var n int
		if err := rows.Scan(&sku, &n); err != nil {
			rows.Close()
			return domain.ReservationOutcome{}, fmt.Errorf("reserve stock: %w", err)
		}
		available[sku] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return domain.ReservationOutcome{}, fmt.Errorf("reserve stock: %w", err)
	}
	var short []string
	for _, it := range sorted {
		if n, ok := available[it.SKU]; !ok || n < it.Quantity {
			short = append(short, fmt.Sprintf("%s (wanted %d, available %d)", it.SKU, it.Quantity, available[it.SKU]))
		}
	}
	if len(short) > 0 {
		return domain.ReservationOutcome{Reason: "out of stock: " + strings.Join(short, ", ")}, nil
	}
	for _, it := range sorted {
		if _, err := tx.ExecContext(ctx, `UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE sku = ?`,
			it.Quantity, it.Quantity, it.SKU); err != nil {
			return domain.ReservationOutcome{}, fmt.Errorf("reserve %s: %w", it.SKU, err)
		}
	}
	return domain.ReservationOutcome{Reserved: true}, nil
}

// Stock lists the catalogue.
func (c *Catalog) Stock(ctx context.Context) (_ []StockItem, err error) {
	defer eventstore.Classify(&err)
	rows, err := c.db.QueryContext(ctx, `SELECT sku, name, price_cents, available, reserved FROM stock ORDER BY sku`)
	if err != nil {
		return nil, fmt.Errorf("list stock: %w", err)
	}
	defer rows.Close()
	var out []StockItem
	for rows.Next() {
		var s StockItem
		if err := rows.Scan(&s.SKU, &s.Name, &s.PriceCents, &s.Available, &s.Reserved); err != nil {
			return nil, fmt.Errorf("list stock: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
