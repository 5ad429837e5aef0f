package eventstore

import "orderd/domain"

// UpdateQueuedBehind reports whether an Update of id waits, in a group or for one, while
// another Update of id decides: the store's own serialisation, which the database's process
// list does not show.
func (s *Store) UpdateQueuedBehind(id domain.OrderID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	deciding, waiting := false, false
	for _, reqs := range [][]*request{s.updates.pending, keys(s.running)} {
		for _, r := range reqs {
			if r.create != nil || r.id != id {
				continue
			}
			if r.deciding.Load() {
				deciding = true
			} else if r.err == nil && r.st == nil {
				waiting = true
			}
		}
	}
	return deciding && waiting
}

func keys(m map[*request]struct{}) []*request {
	out := make([]*request, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	return out
}

// SetWorkers sets how many groups may run at once; call it before the store is used.
func (s *Store) SetWorkers(n int) { s.workers = n }

// Pending reports how many requests wait for a worker.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.creates.pending) + len(s.updates.pending)
}
