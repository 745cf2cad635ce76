package xks

// ErrorFor exposes the spec error mapping to the tests.
func ErrorFor(err error) (int, string) {
	e := errorFor(err)
	return e.status, e.name
}
