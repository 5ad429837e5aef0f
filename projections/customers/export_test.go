package customers

// HoldingBeforeSwap returns the projection with f called, with the snapshot's position,
// between each rebuild's catch-up and its swap.
func HoldingBeforeSwap(f func(snapshotAt int64)) Projection { return Projection{beforeSwap: f} }
