package api

// TraceCarrier carries W3C trace context (the traceparent and tracestate
// headers) in a NATS message's headers, case-sensitively as NATS headers
// are: it is an OpenTelemetry propagation.TextMapCarrier over a
// nats.Header (convert one: api.TraceCarrier(msg.Header)). The client
// injects the caller's span with it and the worker extracts it, so one
// trace spans the caller, the worker and the HSM call.
type TraceCarrier map[string][]string

// Get returns the first value of key.
func (c TraceCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values with value.
func (c TraceCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header names.
func (c TraceCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}
