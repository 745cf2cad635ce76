package kvstore

import (
	"slices"
	"strings"

	"github.com/keyflow/keyflow/kms"
)

// sortKeys orders keys oldest first, then by ID, so listings are stable.
func sortKeys(keys []*kms.Key) {
	slices.SortFunc(keys, func(a, b *kms.Key) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
