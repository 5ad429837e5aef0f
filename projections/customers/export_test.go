package customers

// HoldBeforeSwap makes every rebuild call f, with its snapshot's position, between its
// catch-up and its swap, until restore is called.
func HoldBeforeSwap(f func(snapshotAt int64)) (restore func()) {
	beforeSwap = f
	return func() { beforeSwap = func(int64) {} }
}
