package rootceremony

// ChecksumForTest exposes the share checksum to tests that forge shares.
func ChecksumForTest(f ShareFile) string { return shareChecksum(f) }
