package jsaudit

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerConfig is the configuration of a durable audit subscriber named
// durable (see "Subscribing" in the package doc): every record from the
// first one, in stream order, acked explicitly one by one, redelivered if
// not acked within 30 seconds. filters are subject filters (AllSubjects,
// TenantSubjects, FilterSubject); none means every record.
//
// Adjust AckWait to how long handling a batch may take, and
// MaxAckPending to the batch size; keep DeliverPolicy and AckPolicy.
func ConsumerConfig(durable string, filters ...string) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "keyflow audit subscriber",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1024,
		MaxDeliver:    -1,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
	switch len(filters) {
	case 0:
		c.FilterSubject = AllSubjects
	case 1:
		c.FilterSubject = filters[0]
	default:
		c.FilterSubjects = filters
	}
	return c
}
